"""The Spark session: the active one on Synapse/Databricks, an embedded local one otherwise.

The local session loads Delta Lake's jars (and the JDBC drivers) from :func:`jars_dir`, where
``scripts/setup.sh`` put them: nothing is resolved or downloaded when a session starts. Without
them the session still runs, and only the ``delta-rs`` engine is available.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JARS_SETTING = "OEA_JARS"
MEMORY_SETTING = "OEA_SPARK_DRIVER_MEMORY"  # the embedded session's heap, e.g. "6g" (default: 3g)
# Delta Lake keeps every table's log (and its snapshot's cached state) it has opened, for an hour, with no
# bound unless this JVM property gives one: a long session over many tables (a notebook kernel, a test
# suite) then fills its heap. 256 logs is more tables than a district's lake holds.
DELTA_LOG_CACHE_SIZE = 256
LOCAL_CONF = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # INT96 is unreadable by delta-rs
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "true",
    "spark.driver.memory": "3g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.oea.embedded": "true",  # tells oea_core.delta this is the local session, not Synapse/Databricks
}
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Delta's log replay defaults to 50 partitions: far too many for a laptop's small tables.
    "spark.databricks.delta.snapshotPartitions": "2",
}


def jars_dir() -> str:
    """Where the local session's jars are: ``$OEA_JARS``, else ``<venv>/share/oea/jars``."""
    return os.environ.get(JARS_SETTING) or os.path.join(sys.prefix, "share", "oea", "jars")


def local_jars() -> list[str]:
    """The jars the local session loads (empty when scripts/setup.sh has not installed them)."""
    return sorted(glob.glob(os.path.join(jars_dir(), "*.jar")))


def _utf8_file_names() -> None:
    """Under a non-UTF-8 locale (``LC_ALL=C``) the JVM cannot open non-ASCII file names; Linux has C.UTF-8."""
    locale = os.environ.get("LC_ALL") or os.environ.get("LC_CTYPE") or os.environ.get("LANG") or ""
    if sys.platform.startswith("linux") and "utf" not in locale.lower().replace("-", ""):
        os.environ["LC_ALL"] = "C.UTF-8"


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
    _utf8_file_names()
    builder = SparkSession.builder.appName(app_name).master(master or os.environ.get("OEA_SPARK_MASTER", "local[2]"))
    conf = dict(LOCAL_CONF)
    conf["spark.driver.memory"] = os.environ.get(MEMORY_SETTING) or conf["spark.driver.memory"]
    jars = local_jars()
    if any(os.path.basename(j).startswith("delta-spark_") for j in jars):
        conf |= DELTA_CONF | {"spark.jars": ",".join(jars)}
    for key, value in conf.items():
        builder = builder.config(key, value)
    log_config = Path(__file__).with_name("log4j2.properties").as_uri()
    builder = builder.config("spark.driver.extraJavaOptions",
                             f"-Dlog4j2.configurationFile={log_config} -Ddelta.log.cacheSize={DELTA_LOG_CACHE_SIZE}")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("OEA_SPARK_LOG_LEVEL", "ERROR"))
    return spark
