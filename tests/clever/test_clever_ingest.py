"""The Clever module end to end on an embedded lake: land -> ingest, privacy and idempotence."""

from __future__ import annotations

import csv
import hashlib
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from oea_core import RejectedRowsError
from oea_core.clever import CleverModule
from oea_core.clever.generator import generate_clever_export
from oea_testing import ENGINES, TEST_SALT


def table_rows(path: str) -> list[dict]:
    return pa.table(QueryBuilder().register("t", DeltaTable(path)).execute("SELECT * FROM t").read_all()).to_pylist()


def versions(lake) -> dict[str, int]:
    found = {}
    for stage in ("stage2p", "stage2np"):
        root = lake.path(stage, "clever")
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            found[f"{stage}/{name}"] = DeltaTable(os.path.join(root, name)).version()
    return found


def raw_rows(export_root) -> dict[str, list[dict]]:
    """Every data row of a generated export, read independently with the csv module."""
    rows: dict[str, list[dict]] = {}
    for report in ("daily-participation", "resource-usage"):
        for name in sorted(os.listdir(export_root / report)):
            with open(export_root / report / name, encoding="utf-8-sig", newline="") as handle:
                rows.setdefault(report, []).extend(csv.DictReader(handle))
    return rows


def sha(value: str) -> str:
    return hashlib.sha256((value + TEST_SALT).encode()).hexdigest()


@pytest.fixture(scope="module", params=ENGINES)
def ingested(spark, tmp_path_factory, request):
    """A generated export (with every quirk) landed and ingested once, by each engine."""
    from oea_core import LakePaths, Salt

    tmp = tmp_path_factory.mktemp("clever")
    export = generate_clever_export(tmp / "export", students=30, teachers=3, staff=2, days=4)
    lake = LakePaths.from_setting(tmp / "lake")
    module = CleverModule(lake, spark=spark, salt=Salt(TEST_SALT, "test"), engine=request.param)
    module.land(export.root)
    results = {r.table: r for r in module.ingest()}
    return lake, module, export, results


def test_every_row_arrives_with_role_and_partitions(ingested):
    lake, _module, export, results = ingested
    raw = raw_rows(export.root)
    for report, table in (("daily-participation", "daily_participation"), ("resource-usage", "resource_usage")):
        rows = table_rows(lake.table("stage2p", "clever", f"{table}_pseudo"))
        assert len(rows) == len(raw[report]) == export.rows[report] == results[table].rows
        assert results[table].rejected == 0
        assert {r["role"] for r in rows} == {"students", "teachers", "staff"}
        assert all(r["year"] == r["date"].year and r["month"] == r["date"].month for r in rows)
    assert DeltaTable(lake.table("stage2p", "clever", "daily_participation_pseudo")).metadata(
    ).partition_columns == ["year", "month"]


def test_pseudonyms_match_an_independent_sha256(ingested):
    lake, _module, export, _ = ingested
    raw = raw_rows(export.root)["daily-participation"]
    expected = sorted((sha(r["clever_user_id"]), sha(r["sis_id"]) if r["sis_id"].strip() else None,
                       int(r["num_logins"])) for r in raw)
    rows = table_rows(lake.table("stage2p", "clever", "daily_participation_pseudo"))
    got = sorted((r["clever_user_id_pseudonym"], r["sis_id_pseudonym"], r["num_logins"]) for r in rows)
    assert got == expected
    assert hashlib.sha256(TEST_SALT.encode()).hexdigest() not in {r["sis_id_pseudonym"] for r in rows}, \
        "a blank sis_id must stay null, never sha256(salt)"
    assert any(r["sis_id_pseudonym"] is None for r in rows), "the sample has deactivated users"


def test_no_raw_identifier_anywhere_under_stage2p(ingested):
    lake, _module, export, _ = ingested
    identifiers = {r[c] for rows in raw_rows(export.root).values() for r in rows
                   for c in ("sis_id", "clever_user_id") if r[c].strip()}
    root = lake.stage_root("stage2p")
    blobs = b""
    for parent, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(parent, name), "rb") as handle:
                blobs += handle.read()
    for table in ("daily_participation_pseudo", "resource_usage_pseudo"):
        for row in table_rows(lake.table("stage2p", "clever", table)):
            assert not identifiers & {str(v) for v in row.values()}
    leaked = [i for i in identifiers if i.encode() in blobs]
    assert not leaked, f"raw identifiers found in stage2p files: {leaked[:3]}"


def test_lookup_has_one_row_per_identity(ingested):
    lake, _module, export, _ = ingested
    raw = raw_rows(export.root)["daily-participation"]
    identities = {(r["sis_id"] or None, r["clever_user_id"]) for r in raw}
    rows = table_rows(lake.table("stage2np", "clever", "daily_participation_lookup"))
    assert sorted(rows[0]) == sorted(["sis_id", "sis_id_pseudonym", "clever_user_id", "clever_user_id_pseudonym"])
    assert len(rows) == len(identities)
    assert {(r["sis_id"], r["clever_user_id"]) for r in rows} == identities
    assert all(r["clever_user_id_pseudonym"] == sha(r["clever_user_id"]) for r in rows)


def test_running_again_changes_nothing(ingested, tmp_path):
    lake, module, export, _ = ingested
    before = versions(lake)
    assert module.land(export.root).batch_id is None
    results = module.ingest()
    assert all(r.nothing_new for r in results)
    assert versions(lake) == before


def test_a_new_day_appends_and_merges_lookup_without_duplicates(spark, engine, tmp_path, salt):
    from oea_core import LakePaths

    lake = LakePaths.from_setting(tmp_path / "lake")
    module = CleverModule(lake, spark=spark, salt=salt)
    day1 = generate_clever_export(tmp_path / "d1", students=10, teachers=1, staff=0, days=1, quirks=False)
    import datetime as dt

    day2 = generate_clever_export(tmp_path / "d2", students=10, teachers=1, staff=0, days=1,
                                  start=dt.date(2022, 1, 4), quirks=False)
    module.land(day1.root, batch_id="b1")
    module.ingest()
    lookup_path = lake.table("stage2np", "clever", "daily_participation_lookup")
    first = len(table_rows(lookup_path))
    module.land(day2.root, batch_id="b2")
    (daily, _usage) = module.ingest()
    assert daily.batches == ("b2",) and daily.skipped == ("b1",)
    assert len(table_rows(lookup_path)) == first, "the same users on a new day add no lookup rows"
    pseudo = table_rows(lake.table("stage2p", "clever", "daily_participation_pseudo"))
    assert len(pseudo) == day1.rows["daily-participation"] + day2.rows["daily-participation"]


def write_daily(folder, name, lines):
    folder.mkdir(parents=True, exist_ok=True)
    header = "date,sis_id,clever_user_id,clever_school_id,school_name,active,num_logins,num_resources_accessed"
    (folder / name).write_text("\n".join([header, *lines]) + "\n")


def test_rejected_rows_are_set_aside_with_file_and_reason(spark, engine, tmp_path, salt):
    from oea_core import LakePaths

    lake = LakePaths.from_setting(tmp_path / "lake")
    src = tmp_path / "src" / "daily-participation"
    good = [f"2022-01-{d:02d},s{d},u{d},sc,School,true,1,1" for d in range(1, 20)]
    write_daily(src, "students.csv", [*good, "2022-01-32,s99,u99,sc,School,true,1,1"])
    module = CleverModule(lake, spark=spark, salt=salt)
    module.land(tmp_path / "src")
    (daily, _usage) = module.ingest(max_reject_share=0.1)
    assert (daily.rows, daily.rejected) == (19, 1)
    (rejected,) = table_rows(lake.table("stage2np", "clever", "daily_participation_rejected"))
    assert rejected["_reject_reason"] == "date: '2022-01-32' is not a valid date"
    assert rejected["_source_file"].endswith("students/students.csv")
    assert (rejected["date"], rejected["sis_id"], rejected["role"]) == ("2022-01-32", "s99", "students")


def test_too_many_rejected_rows_fail_and_leave_the_lake_as_it_was(spark, engine, tmp_path, salt):
    from oea_core import LakePaths

    lake = LakePaths.from_setting(tmp_path / "lake")
    module = CleverModule(lake, spark=spark, salt=salt)
    write_daily(tmp_path / "a" / "daily-participation", "students.csv", ["2022-01-01,s1,u1,sc,S,true,1,1"])
    module.land(tmp_path / "a")
    module.ingest()
    before = versions(lake)
    write_daily(tmp_path / "b" / "daily-participation", "students.csv",
                ["2022-01-02,s1,u1,sc,S,true,x,1", "2022-01-02,s2,u2,sc,S,true,1,1"])
    module.land(tmp_path / "b")
    with pytest.raises(RejectedRowsError, match=r"daily_participation batch \S+: 1 of 2 rows \(50.0%\) could not be read.*nothing of batch"):
        module.ingest(max_reject_share=0.05)
    assert versions(lake) == before
    (daily, _) = module.ingest(max_reject_share=0.5)
    assert (daily.rows, daily.rejected) == (1, 1)


def test_switching_engines_between_batches_gives_the_same_lake(spark, tmp_path, salt):
    """Day 1 by one engine, day 2 by the other, in both orders: the same rows, pseudonyms and lookups."""
    import datetime as dt

    from oea_core import LakePaths

    days = [generate_clever_export(tmp_path / f"d{i}", students=8, teachers=1, staff=1, days=1, quirks=False,
                                   start=dt.date(2022, 1, 3) + dt.timedelta(days=i)) for i in range(2)]
    lakes = {}
    for order in (ENGINES, ENGINES[::-1]):
        lake = LakePaths.from_setting(tmp_path / "-then-".join(order))
        for day, engine in zip(days, order):
            module = CleverModule(lake, spark=spark, salt=salt, engine=engine)
            module.land(day.root)
            assert all(r.batches for r in module.ingest())
        lakes[order] = lake

    def contents(lake):
        return {table: sorted(map(repr, table_rows(lake.table(stage, "clever", table)))) for stage, table in (
            ("stage2p", "daily_participation_pseudo"), ("stage2np", "daily_participation_lookup"),
            ("stage2np", "resource_usage_lookup"))}

    first, second = (contents(lake) for lake in lakes.values())
    assert first == second
    assert len(first["daily_participation_pseudo"]) == (
        days[0].rows["daily-participation"] + days[1].rows["daily-participation"])
    lookup = table_rows(lakes[ENGINES].table("stage2np", "clever", "daily_participation_lookup"))
    assert all(r["sis_id_pseudonym"] == sha(r["sis_id"]) for r in lookup if r["sis_id"])
    for order, lake in lakes.items():  # a rerun on either engine finds nothing new
        before = versions(lake)
        for engine in ENGINES:
            assert all(r.nothing_new for r in CleverModule(lake, spark=spark, salt=salt, engine=engine).ingest())
        assert versions(lake) == before, order
