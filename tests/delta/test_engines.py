"""Choosing the Delta engine: by name, by setting, and by the kind of session."""

from __future__ import annotations

import pytest

from oea_core import DeltaEngineError
from oea_core.delta import LOCAL_DEFAULT, DeltaRsStore, SparkDeltaStore, delta_store, engine_name, engines


def test_both_engines_are_registered_and_an_unknown_one_is_named(spark):
    assert engines.names() == ["delta-rs", "spark-delta"]
    with pytest.raises(DeltaEngineError, match=r"unknown Delta engine 'polars'.*known engines: delta-rs, "
                                                r"spark-delta"):
        delta_store(spark, "polars")


def test_the_local_session_has_delta_and_uses_the_benchmark_default(spark):
    assert spark.conf.get("spark.oea.embedded") == "true"
    assert engine_name(spark) == LOCAL_DEFAULT
    assert isinstance(delta_store(spark, "spark-delta"), SparkDeltaStore)
    assert isinstance(delta_store(spark, "delta-rs"), DeltaRsStore)


def test_the_setting_and_the_argument_choose_the_engine(spark, monkeypatch):
    monkeypatch.setenv("OEA_ENGINE", "spark-delta")
    assert isinstance(delta_store(spark), SparkDeltaStore)
    assert isinstance(delta_store(spark, "delta-rs"), DeltaRsStore), "an explicit engine beats the setting"


def test_a_platform_session_with_delta_uses_spark_delta_unless_told_otherwise(spark, monkeypatch):
    """A session oea did not start (Synapse, Databricks) is told apart by the missing embedded marker."""
    spark.conf.unset("spark.oea.embedded")
    try:
        assert engine_name(spark) == "spark-delta"
        monkeypatch.setenv("OEA_ENGINE", "delta-rs")
        assert engine_name(spark) == "delta-rs"
    finally:
        spark.conf.set("spark.oea.embedded", "true")


def test_modules_read_through_delta_lake_where_the_session_has_it(spark, tmp_path):
    from oea_core.delta import read_table

    path = str(tmp_path / "t")
    DeltaRsStore(spark).write(spark.createDataFrame([("a", 1)], "id string, n int"), path)
    plan = read_table(spark, path)._jdf.queryExecution().executedPlan().toString()
    assert "DeltaFileIndex" in plan or "TahoeLogFileIndex" in plan, plan  # Delta's own file index, as on Synapse
    listed = DeltaRsStore(spark).read(path)._jdf.queryExecution().executedPlan().toString()
    assert "InMemoryFileIndex" in listed, "without Delta, Spark reads the files delta-rs lists"
