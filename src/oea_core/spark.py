"""The Spark session: the active one on Synapse/Databricks, an embedded local one otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOCAL_CONF = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # INT96 is unreadable by delta-rs
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "true",
    "spark.driver.memory": "3g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def get_spark(app_name: str = "oea", master: str | None = None) -> SparkSession:
    """Return the active session, or start a local one set up for the embedded lake."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Workers must use this interpreter, not the system python3 (which lacks pandas).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # an embedded session serves only this machine
    builder = SparkSession.builder.appName(app_name).master(master or os.environ.get("OEA_SPARK_MASTER", "local[2]"))
    for key, value in LOCAL_CONF.items():
        builder = builder.config(key, value)
    log_config = Path(__file__).with_name("log4j2.properties").as_uri()
    builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log_config}")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("OEA_SPARK_LOG_LEVEL", "ERROR"))
    return spark
