"""The gold layer over generated multi-batch history (``generate_district``), on each Delta engine.

One small district: an Ed-Fi export of four batches (a birth sex changed, the first school renamed, an
enrollment ended; a grade changed, a transfer, a student deleted, the school's old name delivered late;
the deleted student delivered late) and a Clever export that matches it. Each Ed-Fi batch is landed,
ingested and refined, then ``build_vault`` and ``build_star`` run with that batch's change day as the
effective date, and run again (a rerun). Every expectation is derived from the generator's own API
(``state``, ``school_names``, ``roster``, ``deleted_students``, ``unmatched_rows``) and its Clever files.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from oea_core import LakePaths, Salt, build_star, build_vault, generate_district, pseudonym
from oea_core.clever import CleverModule
from oea_core.edfi import EdFiModule, write_edfi_export
from oea_core.edfi.flatten import descriptor_code
from oea_core.edfi.generator import EdFiDataset
from oea_core.gold import END_OF_TIME, GoldResult, hash_key, surrogate_key
from oea_core.gold.model import STAR_TABLES, VAULT_TABLES
from oea_testing import ENGINES, TEST_SALT

if TYPE_CHECKING:
    from pathlib import Path

    from oea_core import DistrictExport

pytestmark = pytest.mark.slow

# The Ed-Fi resources the gold layer reads; the others would only slow the test down.
GOLD_RESOURCES = ("students", "schools", "sections", "studentSchoolAssociations", "studentSectionAssociations",
                  "studentSchoolAttendanceEvents")
REPORTS = {"daily-participation": "participation", "resource-usage": "resource_usage"}
FACTS = {"fact_enrollment": "enrollment_hk", "fact_attendance": "attendance_event_id",
         "fact_digital_activity": "activity_key"}
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Batch:
    """What one Ed-Fi batch left in the gold layer, and what its rerun did."""

    day: dt.date
    vault: GoldResult
    star: GoldResult
    tables: dict[str, Rows]  # the star's tables after the batch
    versions: dict[str, int | None]  # every gold table's Delta version after the batch
    rerun_versions: dict[str, int | None]
    rerun: tuple[GoldResult, GoldResult]


@dataclass(frozen=True)
class History:
    district: DistrictExport
    batches: list[Batch]

    @property
    def edfi(self) -> EdFiDataset:
        return self.district.edfi


def pseudo(raw: str) -> str:
    value = pseudonym(raw, TEST_SALT)
    assert value is not None
    return value


def change_day(dataset: EdFiDataset, number: int) -> dt.date:
    """The business date of a batch: the initial entry date, then the day the batch's changes are dated
    (its attendance events' day, which is also its exits' day)."""
    if number == 0:
        return min(dt.date.fromisoformat(r["entryDate"])
                   for r in dataset.state(0)["studentSchoolAssociations"].values())
    (day,) = {e.record["eventDate"] for e in dataset.batches[number]
              if e.resource == "studentSchoolAttendanceEvents" and e.kind == "upsert"}
    return dt.date.fromisoformat(day)


def gold_versions(store, lake) -> dict[str, int | None]:
    paths = [lake.table("stage3p", "vault", t) for t in VAULT_TABLES] + \
        [lake.table("stage3p", "star", t) for t in STAR_TABLES]
    return {path.rstrip("/").rsplit("/", 1)[-1]: store.version(path) if store.exists(path) else None
            for path in paths}


def star_tables(store, lake) -> dict[str, Rows]:
    tables = {}
    for table in ("dim_student", "dim_school", *FACTS):
        path = lake.table("stage3p", "star", table)
        tables[table] = store.read_arrow(path).to_pylist() if store.exists(path) else []
    return tables


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory) -> tuple[DistrictExport, list[Path]]:
    """The district's Clever export and each Ed-Fi batch landed, ingested and refined once (with delta-rs, the
    faster engine: the ingest itself is tested on each engine in tests/edfi and tests/clever), and a copy of
    stage2p after each batch, which each engine's gold build below starts from."""
    root = tmp_path_factory.mktemp("history-stage2p")
    district = generate_district(root / "export", students=24, batches=4, days=15, seed=7)
    lake = LakePaths.from_setting(root / "lake")
    salt = Salt(TEST_SALT, "test")
    clever = CleverModule(lake, spark=spark, salt=salt, engine="delta-rs")
    clever.land(district.root / "clever")
    clever.ingest()
    edfi = EdFiModule(lake, spark=spark, salt=salt, engine="delta-rs")
    dataset = district.edfi
    snapshots = []
    for number in range(len(dataset.batches)):
        # the export of the batches so far: the earlier batches' files are the same bytes, so only this one lands
        kept = [[e for e in batch if e.resource in GOLD_RESOURCES] for batch in dataset.batches[: number + 1]]
        write_edfi_export(EdFiDataset(batches=kept, start=dataset.start), root / f"edfi-{number}")
        edfi.land(root / f"edfi-{number}")
        edfi.ingest()
        snapshots.append(root / f"stage2p-{number}")
        shutil.copytree(lake.stage_root("stage2p"), snapshots[-1])
    return district, snapshots


@pytest.fixture(scope="module", params=ENGINES)
def history(spark, ingested, tmp_path_factory, request) -> History:
    from oea_core.delta import delta_store

    engine = request.param
    district, snapshots = ingested
    dataset = district.edfi
    lake = LakePaths.from_setting(tmp_path_factory.mktemp(f"history-{engine}") / "lake")
    store = delta_store(spark, engine)
    batches = []
    for number, snapshot in enumerate(snapshots):
        # the stage2p tables as the batch's refine left them (the same tables, a few Delta versions on)
        shutil.rmtree(lake.stage_root("stage2p"), ignore_errors=True)
        shutil.copytree(snapshot, lake.stage_root("stage2p"))
        day, batch_id = change_day(dataset, number), f"batch{number}"
        load_ts = dt.datetime.combine(day, dt.time(6), dt.timezone.utc)
        last = number == len(dataset.batches) - 1
        vault = build_vault(lake, batch_id, load_ts=load_ts, store=store, checks=last)
        star = build_star(lake, batch_id, effective_date=day, store=store, checks=last)
        versions = gold_versions(store, lake)
        tables = star_tables(store, lake)
        rerun = (build_vault(lake, batch_id, load_ts=load_ts, store=store, checks=False),
                 build_star(lake, batch_id, effective_date=day, store=store, checks=False))
        batches.append(Batch(day, vault, star, tables, versions, gold_versions(store, lake), rerun))
    return History(district, batches)


# what the generator says ---------------------------------------------------------------------------
def student_snapshot(dataset: EdFiDataset, number: int) -> dict[str, tuple]:
    """``{student pseudonym: (birth sex,)}`` of the students alive after batch ``number``."""
    return {pseudo(r["studentUniqueId"]): (descriptor_code(r["birthSexDescriptor"]),)
            for r in dataset.state(number)["students"].values()}


def school_snapshot(dataset: EdFiDataset, number: int) -> dict[int, tuple]:
    return {school_id: (name,) for school_id, name in dataset.school_names(number).items()}


def expected_scd2(snapshots: list[tuple[dt.date, dict]]) -> dict[Any, list[tuple]]:
    """``{key: [(attributes, valid_from, valid_to), ...]}``: type 2 history of in-order snapshots, by hand."""
    history: dict[Any, list[tuple]] = {}
    for day, snapshot in snapshots:
        for key, versions in history.items():
            attributes, valid_from, valid_to = versions[-1]
            if valid_to == END_OF_TIME and snapshot.get(key) != attributes:
                versions[-1] = (attributes, valid_from, day)  # changed or deleted: closed at the day
        for key, attributes in snapshot.items():
            versions = history.setdefault(key, [])
            if not versions or versions[-1][2] != END_OF_TIME:
                versions.append((attributes, day, END_OF_TIME))
    return history


def expected_history(history: History, number: int, snapshot) -> dict[Any, list[tuple]]:
    return expected_scd2([(history.batches[n].day, snapshot(history.edfi, n)) for n in range(number + 1)])


def as_of(versions: list[tuple] | None, key: Any, day: dt.date) -> int:
    """The surrogate key of the version in force on ``day`` (see docs/gold.md); -1 for an unknown key."""
    if not versions:
        return -1
    covering = [v for v in versions if v[1] <= day]
    valid_from = covering[-1][1] if covering else versions[0][1]
    return surrogate_key(hash_key(key), valid_from)


def enrollments(dataset: EdFiDataset, number: int) -> list[dict]:
    return list(dataset.state(number)["studentSchoolAssociations"].values())


def school_on(dataset: EdFiDataset, number: int, student_id: str, day: dt.date) -> int | None:
    """The school of the student's enrollment on ``day`` after batch ``number`` (the latest entry), else None."""
    during = [(r["entryDate"], r["schoolReference"]["schoolId"]) for r in enrollments(dataset, number)
              if r["studentReference"]["studentUniqueId"] == student_id and r["entryDate"] <= day.isoformat()
              and (not r.get("exitWithdrawDate") or day.isoformat() <= r["exitWithdrawDate"])]
    return max(during)[1] if during else None


def clever_rows(district: DistrictExport) -> list[tuple[str, dt.date, str]]:
    """``(activity_type, date, sis_id)`` of every student row of the Clever export."""
    rows = []
    for path in district.clever.files:
        if path.name.endswith("-students.csv"):
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows += [(REPORTS[path.parent.name], dt.date(*map(int, r["date"].split("-"))), r["sis_id"])
                         for r in csv.DictReader(handle)]  # some files' dates are unpadded (a Clever quirk)
    return rows


def expected_activity(history: History, number: int) -> Counter:
    """``(activity_type, date, sis_id_pseudonym, student_key, school_key)`` of every Clever student row."""
    students = expected_history(history, number, student_snapshot)
    schools = expected_history(history, number, school_snapshot)
    expected: Counter = Counter()
    for activity, day, sis_id in clever_rows(history.district):
        student = pseudo(sis_id) if sis_id else None
        school_id = school_on(history.edfi, number, sis_id, day) if sis_id else None
        expected[(activity, day, student, as_of(students.get(student), student, day),
                  as_of(schools.get(school_id), school_id, day))] += 1
    return expected


def activity(rows: Rows) -> Counter:
    return Counter((r["activity_type"], r["date"], r["sis_id_pseudonym"], r["student_key"], r["school_key"])
                   for r in rows)


def changed_rows(before: Rows, after: Rows, key: str) -> Rows:
    """The rows of ``after`` that are new or changed, and those of ``before`` that are gone."""
    old, new = {r[key]: r for r in before}, {r[key]: r for r in after}
    return [r for k, r in new.items() if old.get(k) != r] + [r for k, r in old.items() if k not in new]


def touched(result: GoldResult, table: str) -> int:
    write = result.tables[table]
    return write.inserted + write.updated + write.deleted


# the tests ---------------------------------------------------------------------------------------
def test_the_generated_history_holds_the_changes_the_tests_rely_on(history):
    dataset = history.edfi
    assert len(history.batches) == 4
    assert [b.day for b in history.batches] == sorted({b.day for b in history.batches})  # distinct, in order
    first, second = student_snapshot(dataset, 0), student_snapshot(dataset, 1)
    assert any(first[k] != second[k] for k in first.keys() & second.keys())  # an attribute changed
    assert school_snapshot(dataset, 1) != school_snapshot(dataset, 0)  # renamed
    assert school_snapshot(dataset, 3) == school_snapshot(dataset, 2) == school_snapshot(dataset, 1)  # late name lost
    assert not dataset.deleted_students(1) and dataset.deleted_students(2)


@pytest.mark.parametrize(("table", "snapshot"), [("dim_student", student_snapshot), ("dim_school", school_snapshot)])
def test_scd2_dimensions_hold_the_full_history_batch_after_batch(history, table, snapshot):
    key_column = {"dim_student": "studentUniqueId_pseudonym", "dim_school": "schoolId"}[table]
    attribute = {"dim_student": "birthSexDescriptor", "dim_school": "nameOfInstitution"}[table]
    surrogate = {"dim_student": "student_key", "dim_school": "school_key"}[table]
    hk = {"dim_student": "student_hk", "dim_school": "school_hk"}[table]
    for number, batch in enumerate(history.batches):
        rows = batch.tables[table]
        (unknown,) = [r for r in rows if r[surrogate] == -1]
        assert unknown["is_current"] and unknown["valid_to"] == END_OF_TIME
        rows = [r for r in rows if r[surrogate] != -1]
        for r in rows:
            assert r[surrogate] == surrogate_key(r[hk], r["valid_from"]) and r[hk] == hash_key(r[key_column])
            assert r["is_current"] == (r["valid_to"] == END_OF_TIME)
        got = sorted((r[key_column], (r[attribute],), r["valid_from"], r["valid_to"]) for r in rows)
        expected = sorted((key, *version) for key, versions in expected_history(history, number, snapshot).items()
                          for version in versions)
        assert got == expected, (table, number)


def test_a_changed_attribute_closes_the_current_row_and_opens_one_and_an_unchanged_key_writes_nothing(history):
    dataset = history.edfi
    for number in range(1, len(history.batches)):
        before, after = history.batches[number - 1], history.batches[number]
        old, new = student_snapshot(dataset, number - 1), student_snapshot(dataset, number)
        changed = {k for k in old.keys() & new.keys() if old[k] != new[k]}
        added, deleted = new.keys() - old.keys(), old.keys() - new.keys()
        write = after.star.tables["dim_student"]
        assert (write.inserted, write.updated, write.deleted) == (len(changed) + len(added),
                                                                  len(changed) + len(deleted), 0), number
        rows = {r["student_key"]: r for r in after.tables["dim_student"]}
        untouched = [r for r in before.tables["dim_student"]
                     if r["studentUniqueId_pseudonym"] not in changed | deleted]
        assert untouched and all(rows[r["student_key"]] == r for r in untouched)
        for student in changed:  # closed on the change day, a new current row opened on it
            versions = sorted((r["valid_from"], r["valid_to"], r["is_current"]) for r in rows.values()
                              if r["studentUniqueId_pseudonym"] == student)
            assert versions[-2:] == [(versions[-2][0], after.day, False), (after.day, END_OF_TIME, True)]
    assert any(history.batches[n].star.tables["dim_student"].updated for n in (1, 2, 3))


def test_a_student_deleted_at_the_source_is_closed_not_removed_and_a_late_delivery_does_not_revive_them(history):
    dataset = history.edfi
    for number in range(1, len(history.batches)):
        gone = dataset.deleted_students(number) - dataset.deleted_students(number - 1)
        for student_id in gone:
            for batch in history.batches[number:]:  # batch 3's late delivery of batch 2's deletion changes nothing
                (row,) = [r for r in batch.tables["dim_student"] if r["studentUniqueId_pseudonym"] == pseudo(student_id)]
                assert (row["valid_to"], row["is_current"]) == (history.batches[number].day, False)
    assert dataset.deleted_students(2) and dataset.deleted_students(3) > dataset.deleted_students(2)


def test_the_renamed_school_gets_a_new_version_and_its_late_old_name_changes_nothing(history):
    first, renamed = history.edfi.school_names(0), history.edfi.school_names(1)
    (school_id,) = [s for s in first if first[s] != renamed[s]]
    versions = sorted((r["valid_from"], r["nameOfInstitution"], r["is_current"])
                      for r in history.batches[1].tables["dim_school"] if r["schoolId"] == school_id)
    day0, day1 = history.batches[0].day, history.batches[1].day
    assert versions == [(day0, first[school_id], False), (day1, renamed[school_id], True)]
    for number in (2, 3):  # the old name delivered late loses in ingest; the school and vault write nothing
        batch, previous = history.batches[number], history.batches[number - 1]
        assert {t: batch.versions[t] for t in ("sat_school", "dim_school")} == \
            {t: previous.versions[t] for t in ("sat_school", "dim_school")}
        assert batch.tables["dim_school"] == previous.tables["dim_school"]


def test_every_fact_key_resolves_to_a_dimension_row(history):
    final = history.batches[-1]
    assert final.vault.checks and not any(final.vault.checks.values()), final.vault.checks
    assert final.star.checks and not any(final.star.checks.values()), final.star.checks
    for batch in history.batches:
        students = {r["student_key"] for r in batch.tables["dim_student"]}
        schools = {r["school_key"] for r in batch.tables["dim_school"]}
        for table in FACTS:
            for row in batch.tables[table]:
                assert row["student_key"] in students and row["school_key"] in schools, (table, row)


def test_fact_enrollment_follows_exits_transfers_and_deletions_with_keys_as_of_the_entry_date(history):
    dataset = history.edfi
    for number, batch in enumerate(history.batches):
        students = expected_history(history, number, student_snapshot)
        schools = expected_history(history, number, school_snapshot)
        expected = []
        for r in enrollments(dataset, number):
            student, school_id = pseudo(r["studentReference"]["studentUniqueId"]), r["schoolReference"]["schoolId"]
            entry, exit_ = dt.date.fromisoformat(r["entryDate"]), r.get("exitWithdrawDate")
            expected.append((as_of(students[student], student, entry), as_of(schools[school_id], school_id, entry),
                             int(entry.strftime("%Y%m%d")), int(exit_.replace("-", "")) if exit_ else -1,
                             descriptor_code(r["entryGradeLevelDescriptor"])))
        got = [(r["student_key"], r["school_key"], r["entry_date_key"], r["exit_date_key"],
                r["entryGradeLevelDescriptor"]) for r in batch.tables["fact_enrollment"]]
        assert sorted(got) == sorted(expected), number
    exits = [r for r in history.batches[-1].tables["fact_enrollment"] if r["exit_date_key"] != -1]
    days = {b.day for b in history.batches}
    assert len(exits) == 2 and {r["exitWithdrawDate"] for r in exits} <= days  # the ended one and the transfer


def test_clever_activity_meets_students_and_their_school_of_the_day_and_unmatched_rows_stay_unknown(history):
    district = history.district
    for number, batch in enumerate(history.batches):
        assert activity(batch.tables["fact_digital_activity"]) == expected_activity(history, number), number
    final = history.batches[-1]
    unknown = [r for r in final.tables["fact_digital_activity"] if r["student_key"] == -1]
    assert final.star.unknown_students == len(unknown) == sum(district.unmatched_rows.values()) > 0
    assert Counter(r["activity_type"] for r in unknown) == {REPORTS[report]: count for report, count
                                                             in district.unmatched_rows.items()}
    matched = {pseudo(s) for s in district.matched_sis_ids}
    known = [r for r in final.tables["fact_digital_activity"] if r["sis_id_pseudonym"] in matched]
    assert known and all(r["student_key"] != -1 for r in known)
    assert {r["school_key"] for r in known} > {-1}  # real schools (and none after an exit)


def test_a_rerun_of_any_batch_leaves_every_table_version_unchanged(history):
    for number, batch in enumerate(history.batches):
        assert batch.rerun_versions == batch.versions, number
        previous = history.batches[number - 1].versions if number else {}
        written = {t for t, version in batch.versions.items() if version != previous.get(t)}
        if number == len(history.batches) - 1:
            # the last batch was built with its checks, so its input versions were recorded: nothing to redo
            assert [r.up_to_date for r in batch.rerun] == [True, True] and not batch.rerun[1].tables
            continue
        assert not any(r.up_to_date for r in batch.rerun), number  # built without checks: nothing recorded
        reruns = {t: w for result in batch.rerun for t, w in result.tables.items()}
        assert written and written <= set(reruns), number
        # a table the batch wrote holds its app id and is skipped; one it left alone is found unchanged again
        assert {t for t, w in reruns.items() if w.skipped} == written, number
        assert sum(result.rows for result in batch.rerun) == 0


def test_a_daily_run_rewrites_only_the_rows_of_what_changed(history):
    dataset = history.edfi
    for number in range(1, len(history.batches)):
        before, after = history.batches[number - 1], history.batches[number]
        old = {r["id"]: r for r in enrollments(dataset, number - 1)}
        new = {r["id"]: r for r in enrollments(dataset, number)}
        moved = {pseudo(r["studentReference"]["studentUniqueId"]) for k, r in (new | old).items()
                 if old.get(k) != new.get(k)}
        for table, key in FACTS.items():
            if not before.tables[table]:
                continue  # created by this batch
            changes = changed_rows(before.tables[table], after.tables[table], key)
            assert touched(after.star, table) == len(changes), (number, table)  # the MERGE touched only these
            assert len(changes) < len(after.tables[table]), (number, table)
        changes = changed_rows(before.tables["fact_enrollment"], after.tables["fact_enrollment"], "enrollment_hk")
        by_student = {r["enrollment_hk"]: r["student_key"] for r in before.tables["fact_enrollment"]
                      + after.tables["fact_enrollment"]}
        student_of = {r["student_key"]: r["studentUniqueId_pseudonym"] for r in after.tables["dim_student"]}
        assert {student_of[by_student[r["enrollment_hk"]]] for r in changes} == moved, number
        if number >= 2:  # no dimension changed: the activity rows rewritten are those of the students who moved
            rewritten = changed_rows(before.tables["fact_digital_activity"], after.tables["fact_digital_activity"],
                                     "activity_key")
            assert rewritten and {r["sis_id_pseudonym"] for r in rewritten} <= moved, number
