"""A table written by one engine is appended to, merged into and deleted from by the other."""

from __future__ import annotations

import datetime as dt

import pytest
from deltalake import DeltaTable
from test_delta_store import delta_rows

from oea_core.delta import delta_store

D1, D2 = dt.date(2022, 1, 9), dt.date(2022, 2, 1)
SCHEMA = "id string, n int, d date, at timestamp"
PAIRS = [("delta-rs", "spark-delta"), ("spark-delta", "delta-rs")]


def frame(spark, data):
    at = dt.datetime(2022, 1, 9, 8, 30, 15, 123456)
    return spark.createDataFrame([(*row, at) for row in data], SCHEMA).selectExpr(
        "*", "year(d) AS year", "month(d) AS month")


def steps(spark):
    """Each step: (name, call on a store) with its own app transaction."""
    part = ("year", "month")
    return [
        ("create", lambda s, p: s.write(frame(spark, [("a", 1, D1), ("b", 2, D1)]), p, partition_by=part,
                                        app_id="create", metadata={"step": "create"})),
        ("append", lambda s, p: s.write(frame(spark, [("c", 3, D2), (None, 4, D2)]), p, partition_by=part,
                                        app_id="append", metadata={"step": "append"})),
        ("merge", lambda s, p: s.merge(frame(spark, [("a", 10, D1), ("d", 5, D2), (None, 40, D2)]), p, ("id",),
                                       update=True, app_id="merge", metadata={"step": "merge"})),
        ("delete", lambda s, p: s.delete(frame(spark, [("b", 0, D1)]), p, ("id",), app_id="delete",
                                         metadata={"step": "delete"})),
    ]


EXPECTED = [("a", 10, D1, 2022, 1), ("c", 3, D2, 2022, 2), ("d", 5, D2, 2022, 2), (None, 40, D2, 2022, 2)]


def read_rows(df):
    return sorted((tuple(r) for r in df.select("id", "n", "d", "year", "month").collect()),
                  key=lambda r: (r[0] is None, r[0] or ""))


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_the_other_engine_appends_merges_and_deletes_and_both_read_the_same_table(spark, tmp_path, first, second):
    path = str(tmp_path / "t")
    one, other = delta_store(spark, first), delta_store(spark, second)
    results = {}
    for name, step in steps(spark):
        results[name] = step(one if name == "create" else other, path)
    assert [results[n].rows for n in ("create", "append", "merge", "delete")] == [2, 2, 3, 1]
    assert (results["merge"].inserted, results["merge"].updated, results["delete"].deleted) == (1, 2, 1)
    assert one.version(path) == other.version(path) == 3

    assert read_rows(one.read(path)) == read_rows(other.read(path)) == EXPECTED
    by_delta_rs = delta_rows(path)
    assert sorted((r["id"] or "~", r["n"]) for r in by_delta_rs) == [("a", 10), ("c", 3), ("d", 5), ("~", 40)]
    assert one.schema(path) == other.schema(path)  # names, types and nullability
    assert all(field.nullable for field in one.schema(path).fields)
    assert one.partition_columns(path) == other.partition_columns(path) == ["year", "month"]
    ids = ["create", "append", "merge", "delete", "never"]
    assert one.applied_ids(path, ids) == other.applied_ids(path, ids) == set(ids) - {"never"}
    assert [DeltaTable(path).transaction_version(i) for i in ids[:4]] == [1, 1, 1, 1]


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_rerunning_after_switching_engines_writes_nothing(spark, tmp_path, first, second):
    path = str(tmp_path / "t")
    one, other = delta_store(spark, first), delta_store(spark, second)
    for _name, step in steps(spark):
        step(one, path)
    version = one.version(path)
    again = [step(other, path) for _name, step in steps(spark)]
    assert all(r.skipped and r.rows == 0 for r in again)
    assert other.version(path) == version
    assert read_rows(other.read(path)) == EXPECTED


def test_both_engines_create_the_same_table_from_the_same_data(spark, tmp_path):
    paths = {name: str(tmp_path / name) for name in ("delta-rs", "spark-delta")}
    for name, path in paths.items():
        delta_store(spark, name).write(frame(spark, [("a", 1, D1), (None, None, D2)]), path,
                                       partition_by=("year", "month"), app_id="b1", metadata={"batch_id": "b1"})
    tables = {name: DeltaTable(path) for name, path in paths.items()}
    schemas = {name: t.schema().to_arrow() for name, t in tables.items()}
    assert schemas["delta-rs"] == schemas["spark-delta"]
    assert {t.protocol().min_reader_version for t in tables.values()} == {1}
    assert {tuple(t.metadata().partition_columns) for t in tables.values()} == {("year", "month")}
    rows = {name: delta_rows(path, order="n") for name, path in paths.items()}
    assert rows["delta-rs"] == rows["spark-delta"]
    metadata = {name: t.history(1)[0]["userMetadata"] for name, t in tables.items()}
    assert metadata["delta-rs"] == metadata["spark-delta"] == '{"batch_id": "b1"}'
