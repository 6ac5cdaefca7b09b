"""Delta IO on the embedded lake: Spark writes Parquet, delta-rs commits."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from deltalake import DeltaTable

from oea_core import DeltaTableError
from oea_core.delta_io import DeltaStore


def rows(spark, data, schema="id string, n int, d date"):
    return spark.createDataFrame(data, schema)


def delta_rows(path, order="id", version=None):
    """Read with delta-rs alone (no Spark), as any Delta reader would."""
    import pyarrow as pa
    from deltalake import QueryBuilder

    table = DeltaTable(path, version=version)
    return pa.table(QueryBuilder().register("t", table).execute(f"SELECT * FROM t ORDER BY {order}").read_all()
                    ).to_pylist()


D1 = dt.date(2022, 1, 9)


def test_write_creates_a_table_any_delta_reader_reads(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    df = rows(spark, [("a", 1, D1), ("b", 2, D1)]).selectExpr("*", "year(d) AS year", "month(d) AS month")
    result = store.write(df, path, partition_by=("year", "month"), app_ids=("batch-1",))
    assert result.version == 0 and result.rows == 2 and result.files >= 1
    got = delta_rows(path)
    assert [(r["id"], r["n"], r["d"], r["year"], r["month"]) for r in got] == [
        ("a", 1, D1, 2022, 1), ("b", 2, D1, 2022, 1)]
    assert DeltaTable(path).metadata().partition_columns == ["year", "month"]
    assert os.path.isdir(os.path.join(path, "year=2022", "month=1"))
    assert store.applied(path, "batch-1") and not store.applied(path, "batch-2")
    assert not os.path.exists(os.path.join(path, "_staging"))


def test_add_actions_carry_stats_for_file_skipping(spark, tmp_path):
    path = str(tmp_path / "t")
    DeltaStore(spark).write(rows(spark, [("a", 1, D1), ("b", None, D1)]).coalesce(1), path)
    log = os.path.join(path, "_delta_log", "00000000000000000000.json")
    with open(log) as fh:
        adds = [json.loads(line)["add"] for line in fh if '"add"' in line]
    stats = json.loads(adds[0]["stats"])
    assert stats["numRecords"] == 2
    assert stats["minValues"]["id"] == "a" and stats["maxValues"]["id"] == "b"
    assert stats["nullCount"]["n"] == 1


def test_append_and_overwrite_change_versions_and_rows(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    store.write(rows(spark, [("a", 1, D1)]), path)
    store.write(rows(spark, [("b", 2, D1)]), path)
    assert store.version(path) == 1
    assert [r["id"] for r in delta_rows(path)] == ["a", "b"]
    store.write(rows(spark, [("c", 3, D1)]), path, mode="overwrite")
    assert store.version(path) == 2
    assert [r["id"] for r in delta_rows(path)] == ["c"]
    assert [r["id"] for r in delta_rows(path, version=1)] == ["a", "b"]


def test_append_with_another_schema_is_refused_and_changes_nothing(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    store.write(rows(spark, [("a", 1, D1)]), path)
    with pytest.raises(DeltaTableError, match=r"does not match the schema.*n: table integer vs data string"):
        store.write(rows(spark, [("b", "x", D1)], "id string, n string, d date"), path)
    assert store.version(path) == 0
    assert [r["id"] for r in delta_rows(path)] == ["a"]


def test_a_failed_write_leaves_the_previous_version_intact(spark, tmp_path):
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType

    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    store.write(rows(spark, [("a", 1, D1)]), path)
    files_before = sorted(DeltaTable(path).file_uris())

    def explode(value):
        raise ValueError("boom in the middle of the write")

    bad = rows(spark, [("b", 2, D1), ("c", 3, D1)]).withColumn("n", F.udf(explode, IntegerType())("n"))
    with pytest.raises(DeltaTableError, match="previous version is unchanged"):
        store.write(bad, path)
    assert store.version(path) == 0
    assert sorted(DeltaTable(path).file_uris()) == files_before
    assert [r["id"] for r in delta_rows(path)] == ["a"]
    data_files = [f for _, _, fs in os.walk(path) for f in fs if f.endswith(".parquet")]
    assert len(data_files) == len(files_before), "no stray data files are left behind"


def test_merge_upserts_by_key_null_safely(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    store.write(rows(spark, [("a", 1, D1), (None, 2, D1)]), path)
    store.merge(rows(spark, [("a", 10, D1), (None, 20, D1), ("b", 3, D1)]), path, ("id",), update=True,
                app_ids=("m1",))
    got = {(r["id"], r["n"]) for r in delta_rows(path)}
    assert got == {("a", 10), (None, 20), ("b", 3)}
    assert store.applied(path, "m1")
    store.merge(rows(spark, [("a", 99, D1), ("c", 4, D1)]), path, ("id",))  # insert-only
    got = {(r["id"], r["n"]) for r in delta_rows(path)}
    assert got == {("a", 10), (None, 20), ("b", 3), ("c", 4)}


def test_delete_by_key(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    store.write(rows(spark, [("a", 1, D1), ("b", 2, D1), ("c", 3, D1)]), path)
    store.delete(rows(spark, [("a", 0, D1), ("c", 0, D1), ("zz", 0, D1)]), path, ("id",))
    assert [r["id"] for r in delta_rows(path)] == ["b"]


def test_spark_reads_back_typed_with_partitions(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    df = rows(spark, [("007", 1, D1)]).selectExpr("*", "id AS code")
    store.write(df, path, partition_by=("code",))
    back = store.read(path)
    assert dict(back.dtypes)["code"] == "string"
    assert back.collect()[0]["code"] == "007", "partition values keep their declared type"


def test_reading_a_missing_table_says_what_to_do(spark, tmp_path):
    with pytest.raises(DeltaTableError, match="no Delta table at .*ingest the source first"):
        DeltaStore(spark).read(str(tmp_path / "nope"))


def test_merge_on_two_keys_with_nulls(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    schema = "a string, b string, n int"
    store.write(spark.createDataFrame([("x", None, 1), ("x", "y", 2)], schema), path)
    store.merge(spark.createDataFrame([("x", None, 9), ("x", "z", 3)], schema), path, ("a", "b"))
    got = sorted((r["a"], r["b"] or "", r["n"]) for r in delta_rows(path, order="n"))
    assert got == [("x", "", 1), ("x", "y", 2), ("x", "z", 3)]


def test_timestamps_stay_readable_by_delta_rs_even_if_the_session_asks_for_int96(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "INT96")
    when = dt.datetime(2022, 1, 9, 8, 30)
    DeltaStore(spark).write(spark.createDataFrame([("a", when)], "id string, at timestamp"), path)
    (row,) = delta_rows(path)
    assert row["at"].replace(tzinfo=None) == when


def test_staged_files_stay_invisible_until_committed_and_discard_leaves_nothing(spark, tmp_path):
    path = str(tmp_path / "t")
    store = DeltaStore(spark)
    store.write(rows(spark, [("a", 1, D1)]), path)
    staged = store.stage(rows(spark, [("b", 2, D1)]), path)
    assert [r["id"] for r in delta_rows(path)] == ["a"] and store.version(path) == 0
    store.discard(staged)
    assert {f for f in os.listdir(path) if not f.endswith(".parquet")} == {"_delta_log"}
    staged = store.stage(rows(spark, [("c", 3, D1)]), path)
    result = store.commit(staged, app_ids=("job/1",), metadata={"batch_id": "1"})
    assert (result.version, result.rows) == (1, 1)
    assert sorted(r["id"] for r in delta_rows(path)) == ["a", "c"]
    assert store.applied(path, "job/1") and not os.path.exists(os.path.join(path, "_staging"))
    fresh = str(tmp_path / "new")
    store.discard(store.stage(rows(spark, [("d", 4, D1)]), fresh))
    assert not os.path.exists(fresh), "a table that was only staged is not left behind"
