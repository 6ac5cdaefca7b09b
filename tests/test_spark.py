"""The local Spark session loads Delta's jars from disk; set-up says so in one line when it cannot get them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_local_session_loads_delta_and_the_jdbc_drivers_from_disk(spark):
    from oea_core.spark import DELTA_LOG_CACHE_SIZE, jars_dir

    jars = spark.conf.get("spark.jars").split(",")
    names = {os.path.basename(j).rsplit("-", 1)[0] for j in jars}
    assert {"delta-spark_2.12", "delta-storage", "postgresql", "mssql-jdbc"} <= names
    assert all(j.startswith(jars_dir()) and os.path.isfile(j) for j in jars)
    assert not spark.conf.get("spark.jars.packages", ""), "nothing is resolved when a session starts"
    assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions")
    # Delta's cache of table logs is bounded (unbounded, a long session over many tables fills the heap)
    assert spark._jvm.java.lang.System.getProperty("delta.log.cacheSize") == str(DELTA_LOG_CACHE_SIZE)
    utils = spark.sparkContext._jvm.org.apache.spark.util.Utils  # how Spark's JDBC source loads a driver
    for driver in ("org.postgresql.Driver", "com.microsoft.sqlserver.jdbc.SQLServerDriver"):
        assert utils.classForName(driver, True, False).getName() == driver


def test_setup_stops_with_one_line_when_maven_central_cannot_be_reached(tmp_path):
    env = {**os.environ, "OEA_MAVEN_REPO": "http://127.0.0.1:9/maven2",
           "MAVEN_OPTS": f"-Dmaven.repo.local={tmp_path / 'm2'}"}  # an empty local repository: nothing cached
    done = subprocess.run([str(REPO / "scripts" / "fetch_jars.sh"), str(tmp_path / "jars")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [(
        "setup: cannot reach Maven Central (http://127.0.0.1:9/maven2), where Delta Lake's and the JDBC drivers' "
        "jars come from: check the network or proxy, or set OEA_MAVEN_REPO to a mirror")]
    assert not (tmp_path / "jars").exists()
