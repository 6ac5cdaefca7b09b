"""The DeltaStore contract, on both engines: what each writes, any Delta reader reads."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from deltalake import DeltaTable

from oea_core import DeltaTableError, LakePaths
from oea_core.lake.lock import source_run
from oea_testing.full_disk import files, fill, free, tiny_disk

D1 = dt.date(2022, 1, 9)
D2 = dt.date(2022, 2, 1)


def rows(spark, data, schema="id string, n int, d date"):
    return spark.createDataFrame(data, schema)


def delta_rows(path, order="id", version=None):
    """Read with delta-rs alone (no Spark), as any Delta reader would."""
    import pyarrow as pa
    from deltalake import QueryBuilder

    table = DeltaTable(path, version=version)
    return pa.table(QueryBuilder().register("t", table).execute(f"SELECT * FROM t ORDER BY {order}").read_all()
                    ).to_pylist()


def by_month(df):
    return df.selectExpr("*", "year(d) AS year", "month(d) AS month")


def test_write_creates_a_table_any_delta_reader_reads(spark, store, tmp_path):
    path = str(tmp_path / "t")
    result = store.write(by_month(rows(spark, [("a", 1, D1), ("b", 2, D1)])), path, partition_by=("year", "month"),
                         app_id="batch-1")
    assert (result.version, result.rows, result.skipped) == (0, 2, False) and result.files >= 1
    got = delta_rows(path)
    assert [(r["id"], r["n"], r["d"], r["year"], r["month"]) for r in got] == [
        ("a", 1, D1, 2022, 1), ("b", 2, D1, 2022, 1)]
    assert sorted(tuple(r) for r in spark.read.format("delta").load(path).select("id", "n").collect()) == [
        ("a", 1), ("b", 2)]
    assert DeltaTable(path).metadata().partition_columns == ["year", "month"]
    assert store.partition_columns(path) == ["year", "month"]
    assert os.path.isdir(os.path.join(path, "year=2022", "month=1"))
    assert store.applied(path, "batch-1") and not store.applied(path, "batch-2")
    assert store.applied_ids(path, ["batch-1", "batch-2"]) == {"batch-1"}
    assert not os.path.exists(os.path.join(path, "_staging"))


def test_add_actions_carry_stats_for_file_skipping(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1), ("b", None, D1)]).coalesce(1), path)
    with open(os.path.join(path, "_delta_log", "00000000000000000000.json")) as fh:
        adds = [json.loads(line)["add"] for line in fh if '"add"' in line]
    stats = json.loads(adds[0]["stats"])
    assert stats["numRecords"] == 2
    assert stats["minValues"]["id"] == "a" and stats["maxValues"]["id"] == "b"
    assert stats["nullCount"]["n"] == 1


def test_append_and_overwrite_change_versions_and_rows(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1)]), path)
    appended = store.write(rows(spark, [("b", 2, D1), ("c", 3, D1)]), path)
    assert (appended.version, appended.rows) == (1, 2)
    assert [r["id"] for r in delta_rows(path)] == ["a", "b", "c"]
    overwritten = store.write(rows(spark, [("c", 3, D1)]), path, mode="overwrite")
    assert (overwritten.version, overwritten.rows) == (2, 1)
    assert [r["id"] for r in delta_rows(path)] == ["c"]
    assert [r["id"] for r in delta_rows(path, version=1)] == ["a", "b", "c"]


def test_replace_overwrites_only_the_named_partition(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(by_month(rows(spark, [("a", 1, D1), ("b", 2, D2)])), path, partition_by=("year", "month"))
    result = store.write(by_month(rows(spark, [("a2", 10, D1), ("a3", 11, D1)])), path, mode="overwrite",
                         partition_by=("year", "month"), replace={"year": 2022, "month": 1}, app_id="jan-again")
    assert (result.version, result.rows) == (1, 2)
    assert [(r["id"], r["month"]) for r in delta_rows(path)] == [("a2", 1), ("a3", 1), ("b", 2)]
    with pytest.raises(DeltaTableError, match=r"replace=\{'d': 1\} .* needs mode='overwrite' and names only "
                                              r"partition columns"):
        store.write(by_month(rows(spark, [("x", 1, D1)])), path, partition_by=("year", "month"), replace={"d": 1})


def test_append_with_another_schema_is_refused_and_changes_nothing(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1)]), path)
    with pytest.raises(DeltaTableError, match=r"does not match the schema.*n: table int vs data string"):
        store.write(rows(spark, [("b", "x", D1)], "id string, n string, d date"), path)
    with pytest.raises(DeltaTableError, match=r"partitioned by \[\], not \['n'\]"):
        store.write(rows(spark, [("b", 2, D1)]), path, partition_by=("n",))
    assert store.version(path) == 0
    assert [r["id"] for r in delta_rows(path)] == ["a"]


def test_a_failed_write_leaves_the_previous_version_intact(spark, store, tmp_path):
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType

    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1)]), path)
    files_before = sorted(DeltaTable(path).file_uris())

    def explode(value):
        raise ValueError("boom in the middle of the write")

    bad = rows(spark, [("b", 2, D1), ("c", 3, D1)]).withColumn("n", F.udf(explode, IntegerType())("n"))
    with pytest.raises(DeltaTableError, match=f"writing Delta table .* with the {store.name} engine failed; "
                                              "the previous version is unchanged"):
        store.write(bad, path)
    assert store.version(path) == 0
    assert sorted(DeltaTable(path).file_uris()) == files_before
    assert [r["id"] for r in delta_rows(path)] == ["a"]
    data_files = [f for _, _, fs in os.walk(path) for f in fs if f.endswith(".parquet")]
    assert len(data_files) == len(files_before), "no stray data files are left behind"


def test_merge_upserts_by_key_null_safely_and_counts_what_it_changed(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1), (None, 2, D1)]), path)
    result = store.merge(rows(spark, [("a", 10, D1), (None, 20, D1), ("b", 3, D1)]), path, ("id",), update=True,
                         app_id="m1")
    assert (result.rows, result.inserted, result.updated, result.deleted) == (3, 1, 2, 0)
    assert {(r["id"], r["n"]) for r in delta_rows(path)} == {("a", 10), (None, 20), ("b", 3)}
    assert store.applied(path, "m1")
    result = store.merge(rows(spark, [("a", 99, D1), ("c", 4, D1)]), path, ("id",))  # insert-only
    assert (result.rows, result.inserted, result.updated) == (2, 1, 0)
    assert {(r["id"], r["n"]) for r in delta_rows(path)} == {("a", 10), (None, 20), ("b", 3), ("c", 4)}


def test_merge_into_a_missing_table_creates_it(spark, store, tmp_path):
    path = str(tmp_path / "t")
    result = store.merge(rows(spark, [("a", 1, D1)]), path, ("id",), app_id="first")
    assert (result.version, result.rows) == (0, 1) and store.applied(path, "first")


def test_delete_by_key(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1), ("b", 2, D1), ("c", 3, D1)]), path)
    result = store.delete(rows(spark, [("a", 0, D1), ("c", 0, D1), ("c", 5, D1), ("zz", 0, D1)]), path, ("id",))
    assert (result.rows, result.deleted) == (3, 2)
    assert [r["id"] for r in delta_rows(path)] == ["b"]
    with pytest.raises(DeltaTableError, match="no Delta table at .*nope to delete from"):
        store.delete(rows(spark, [("a", 0, D1)]), str(tmp_path / "nope"), ("id",))


def test_apply_changes_upserts_and_deletes_unless_the_table_is_newer(spark, store, tmp_path):
    path = str(tmp_path / "t")
    schema = "id string, v long, body string, gone boolean"
    first = store.apply_changes(spark.createDataFrame([("a", 1, "a1", False), ("b", 1, "b1", False),
                                                       ("x", 1, "x1", True)], schema),
                                path, "id", order="v", deleted="gone", app_id="c1")
    assert first.rows == 2 and [r["id"] for r in delta_rows(path)] == ["a", "b"]
    assert "gone" not in store.schema(path).names
    result = store.apply_changes(spark.createDataFrame([("a", 2, "a2", False), ("b", 0, "stale", True),
                                                        ("c", 1, "c1", False)], schema),
                                 path, "id", order="v", deleted="gone", app_id="c2")
    assert (result.rows, result.inserted, result.updated, result.deleted) == (3, 1, 1, 0)
    assert [(r["id"], r["body"]) for r in delta_rows(path)] == [("a", "a2"), ("b", "b1"), ("c", "c1")]
    result = store.apply_changes(spark.createDataFrame([("b", 5, None, True)], schema), path, "id", order="v",
                                 deleted="gone", app_id="c3")
    assert result.deleted == 1 and [r["id"] for r in delta_rows(path)] == ["a", "c"]


def test_spark_reads_back_typed_with_partitions(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("007", 1, D1)]).selectExpr("*", "id AS code"), path, partition_by=("code",))
    back = store.read(path)
    assert dict(back.dtypes)["code"] == "string"
    assert back.collect()[0]["code"] == "007", "partition values keep their declared type"


def test_reading_a_missing_table_says_what_to_do(store, tmp_path):
    with pytest.raises(DeltaTableError, match="no Delta table at .*nope: ingest the source first"):
        store.read(str(tmp_path / "nope"))
    assert store.version(str(tmp_path / "nope")) is None and not store.applied(str(tmp_path / "nope"), "x")


def test_merge_on_two_keys_with_nulls(spark, store, tmp_path):
    path = str(tmp_path / "t")
    schema = "a string, b string, n int"
    store.write(spark.createDataFrame([("x", None, 1), ("x", "y", 2)], schema), path)
    store.merge(spark.createDataFrame([("x", None, 9), ("x", "z", 3)], schema), path, ("a", "b"))
    got = sorted((r["a"], r["b"] or "", r["n"]) for r in delta_rows(path, order="n"))
    assert got == [("x", "", 1), ("x", "y", 2), ("x", "z", 3)]


def test_timestamps_stay_readable_by_delta_rs_even_if_the_session_asks_for_int96(spark, engine, tmp_path):
    from oea_core.delta import delta_store

    path = str(tmp_path / "t")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "INT96")
    when = dt.datetime(2022, 1, 9, 8, 30)
    delta_store(spark, engine).write(spark.createDataFrame([("a", when)], "id string, at timestamp"), path)
    (row,) = delta_rows(path)
    assert row["at"].replace(tzinfo=None) == when


def test_staged_files_stay_invisible_until_committed_and_discard_leaves_nothing(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1)]), path)
    staged = store.stage(rows(spark, [("b", 2, D1)]), path)
    assert [r["id"] for r in delta_rows(path)] == ["a"] and store.version(path) == 0
    store.discard(staged)
    assert {f for f in os.listdir(path) if not f.endswith(".parquet") and not f.startswith(".")} == {"_delta_log"}
    staged = store.stage(rows(spark, [("c", 3, D1)]), path)
    result = store.commit(staged, app_id="job/1", metadata={"batch_id": "1"})
    assert (result.version, result.rows) == (1, 1)
    assert sorted(r["id"] for r in delta_rows(path)) == ["a", "c"]
    assert store.applied(path, "job/1") and not os.path.exists(os.path.join(path, "_staging"))
    fresh = str(tmp_path / "new")
    store.discard(store.stage(rows(spark, [("d", 4, D1)]), fresh))
    assert not os.path.exists(fresh), "a table that was only staged is not left behind"


def test_a_commit_whose_app_transaction_already_reached_the_table_writes_nothing(spark, store, tmp_path):
    path = str(tmp_path / "t")
    store.write(rows(spark, [("a", 1, D1)]), path, app_id="batch-1")
    again = [store.write(rows(spark, [("a", 1, D1)]), path, app_id="batch-1"),
             store.commit(store.stage(rows(spark, [("a", 1, D1)]), path), app_id="batch-1"),
             store.merge(rows(spark, [("z", 1, D1)]), path, ("id",), app_id="batch-1"),
             store.delete(rows(spark, [("a", 1, D1)]), path, ("id",), app_id="batch-1")]
    assert all(r.skipped and (r.version, r.rows, r.files) == (0, 0, 0) for r in again)
    assert store.version(path) == 0 and [r["id"] for r in delta_rows(path)] == ["a"]
    assert not os.path.exists(os.path.join(path, "_staging"))


def test_commit_metadata_is_the_same_json_on_every_commit_kind(spark, store, tmp_path):
    path = str(tmp_path / "t")
    meta = {"batch_id": "b7", "rows": 1}
    store.write(rows(spark, [("a", 1, D1)]), path, metadata=meta)
    assert json.loads(store.last_commit(path)["userMetadata"]) == meta
    store.merge(rows(spark, [("b", 1, D1)]), path, ("id",), metadata={"step": "merge"})
    assert json.loads(DeltaTable(path).history(1)[0]["userMetadata"]) == {"step": "merge"}
    store.delete(rows(spark, [("b", 1, D1)]), path, ("id",), metadata={"step": "delete"})
    assert json.loads(store.last_commit(path)["userMetadata"]) == {"step": "delete"}


@pytest.fixture
def disk(tmp_path):
    """A real disk of 1 MB (a tmpfs) for a lake that fills up."""
    with tiny_disk(tmp_path / "disk", "1m") as mount:
        yield mount


def _says_disk_full(message: str, path: str) -> None:
    assert "\n" not in message, message
    assert "disk is full" in message and path in message and "free space" in message, message
    assert "previous version is unchanged" in message, message


def test_a_write_that_fills_the_disk_is_one_line_saying_so_and_leaves_the_table_as_it_was(spark, store, disk):
    path = str(disk / "t")
    store.write(spark.createDataFrame([("a",)], "s string"), path)
    before = files(disk)
    # about 2 MB of Parquet that does not compress: more than the disk holds
    big = spark.range(0, 16_000, 1, 1).selectExpr("concat(sha2(CAST(id AS STRING), 512), "
                                                  "sha2(CAST(-id AS STRING), 512)) AS s")
    with pytest.raises(DeltaTableError) as caught:
        store.write(big, path, mode="append")
    _says_disk_full(str(caught.value), path)
    assert files(disk) == before, "nothing half-written is left"
    assert [r["s"] for r in delta_rows(path, "s")] == ["a"]


def test_a_run_whose_commit_finds_the_disk_full_says_so_in_one_line_and_leaves_the_table_as_it_was(
        spark, store, disk):
    lake = LakePaths.from_setting(disk / "lake")
    path = lake.table("stage2np", "demo", "t")
    store.write(spark.createDataFrame([("a",)], "s string"), path)
    before = files(disk)
    with pytest.raises(DeltaTableError) as caught, source_run(lake, "demo", "demo ingest"):
        staged = store.stage(spark.createDataFrame([("b",)], "s string"), path)
        fill(disk)  # spark-delta's commit copies the staged rows into the table; delta-rs writes the log
        store.commit(staged)
    _says_disk_full(str(caught.value), path)
    free(disk)
    # what the commit wrote before the disk filled (spark-delta's data files) is removed with the run's leftovers
    assert {k: v for k, v in files(disk).items() if "/locks/" not in k} == before, "nothing half-written is left"
    assert [r["s"] for r in delta_rows(path, "s")] == ["a"]
