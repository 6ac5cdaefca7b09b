"""SCD type 2 and type 1 over a DeltaStore: history, deletions, unchanged and rerun batches, late changes."""

from __future__ import annotations

import datetime as dt

import pytest

from oea_core.delta import DeltaRsStore
from oea_core.errors import GoldError
from oea_core.gold import END_OF_TIME, apply_scd1, apply_scd2, scd2_changes, surrogate_key
from oea_core.gold.dq import current_row_problems, range_problems

D1, LATE, D2, D3, D4 = dt.date(2024, 1, 1), dt.date(2024, 1, 15), dt.date(2024, 2, 1), dt.date(2024, 3, 1), \
    dt.date(2024, 4, 1)
ATTRS = ("name", "kind")
END = END_OF_TIME


def snapshot(spark, *rows):
    return spark.createDataFrame(list(rows), "school_hk string, name string, kind string")


def scd2(store, path, df, day, app_id):
    return apply_scd2(store, path, df, key="school_hk", surrogate="school_key", attributes=ATTRS, effective_date=day,
                      app_id=app_id)


def history(store, path):
    rows = store.read(path).collect()
    assert all(r.school_key == surrogate_key(r.school_hk, r.valid_from) for r in rows)
    return sorted(((r.school_hk, r.name, r.kind, r.valid_from, r.valid_to, r.is_current) for r in rows),
                  key=lambda row: (row[0], row[3]))


EXPECTED = [
    ("a", "Lincoln", "public", D1, LATE, False),
    ("a", "Lincoln Elementary", "public", LATE, D2, False),  # the late change, inside [D1, D2)
    ("a", "Lincoln High", "public", D2, END, True),
    ("b", "Adams", "public", D1, D2, False),
    ("b", "Adams", "charter", D2, D3, False),  # deleted at D3: closed, not removed
]


def test_scd2_keeps_history_closes_deletions_and_writes_nothing_for_unchanged_or_rerun_batches(spark, store,
                                                                                                 tmp_path):
    path = str(tmp_path / "dim_school")
    first = scd2(store, path, snapshot(spark, ("a", "Lincoln", "public"), ("b", "Adams", "public")), D1, "b1")
    assert first.rows == 2
    renamed = snapshot(spark, ("a", "Lincoln High", "public"), ("b", "Adams", "charter"))
    second = scd2(store, path, renamed, D2, "b2")
    assert (second.inserted, second.updated) == (2, 2)  # two rows closed, two opened
    scd2(store, path, snapshot(spark, ("a", "Lincoln High", "public")), D3, "b3")  # b deleted
    version = store.version(path)
    unchanged = scd2(store, path, snapshot(spark, ("a", "Lincoln High", "public")), D4, "b4")
    assert (unchanged.rows, store.version(path)) == (0, version)
    rerun = scd2(store, path, renamed, D2, "b2")
    assert rerun.skipped and store.version(path) == version
    late = snapshot(spark, ("a", "Lincoln Elementary", "public"), ("b", "Adams", "public"))
    scd2(store, path, late, LATE, "b0-late")
    assert history(store, path) == EXPECTED
    table = store.read(path)
    assert current_row_problems(table, "school_hk") == 0 and range_problems(table, "school_hk") == 0


def test_a_late_change_lands_the_same_whatever_order_the_batches_arrive_in(spark, tmp_path):
    store = DeltaRsStore(spark)
    batches = {
        D1: snapshot(spark, ("a", "Lincoln", "public"), ("b", "Adams", "public")),
        LATE: snapshot(spark, ("a", "Lincoln Elementary", "public"), ("b", "Adams", "public")),
        D2: snapshot(spark, ("a", "Lincoln High", "public"), ("b", "Adams", "charter")),
        D3: snapshot(spark, ("a", "Lincoln High", "public")),
    }
    results = []
    for name, order in (("in_order", (D1, LATE, D2, D3)), ("late", (D1, D2, D3, LATE))):
        path = str(tmp_path / name)
        for day in order:
            scd2(store, path, batches[day], day, f"batch-{day}")
        results.append(history(store, path))
    assert results[0] == results[1] == EXPECTED


def test_a_snapshot_with_a_key_twice_is_refused_naming_the_table_and_key(spark):
    twice = snapshot(spark, ("a", "Lincoln", "public"), ("a", "Lincoln High", "public"))
    with pytest.raises(GoldError, match=r"the snapshot for dim_school holds key school_hk null or more than once"):
        scd2_changes(None, twice, key="school_hk", surrogate="school_key", attributes=ATTRS, effective_date=D1,
                     table="dim_school")


def test_scd1_overwrites_in_place_flags_deletions_and_writes_nothing_when_unchanged(spark, tmp_path):
    store = DeltaRsStore(spark)
    path = str(tmp_path / "dim_section")

    def scd1(app_id, *rows):
        return apply_scd1(store, path, snapshot(spark, *rows), key="school_hk", surrogate="section_key",
                          attributes=ATTRS, app_id=app_id)

    scd1("b1", ("a", "Algebra", "math"), ("b", "Poetry", "english"))
    scd1("b2", ("a", "Algebra I", "math"))
    version = store.version(path)
    assert scd1("b3", ("a", "Algebra I", "math")).rows == 0 and store.version(path) == version
    rows = sorted((r.school_hk, r.section_key, r.name, r.is_deleted) for r in store.read(path).collect())
    assert rows == [("a", surrogate_key("a"), "Algebra I", False), ("b", surrogate_key("b"), "Poetry", True)]
