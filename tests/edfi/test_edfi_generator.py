"""The Ed-Fi generator's history option, its roster, and the expected state it keeps (no Spark)."""

from __future__ import annotations

import pytest

from oea_core.edfi import generate_edfi
from oea_core.edfi.generator import EdFiDataset, Event

SCHOOL_1, SCHOOL_2 = 255901001, 255901002


@pytest.fixture(scope="module")
def dataset() -> EdFiDataset:
    return generate_edfi(students=24, staff=4, schools=2, batches=4, seed=5, history=True)


def upserts(dataset: EdFiDataset, batch: int, resource: str) -> list[dict]:
    return [e.record for e in dataset.batches[batch] if e.resource == resource and e.kind == "upsert"]


def by_student(records: dict[str, dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records.values():
        found.setdefault(record["studentReference"]["studentUniqueId"], []).append(record)
    return found


def test_batch_1_changes_a_birth_sex_renames_a_school_and_ends_an_enrollment(dataset):
    before, after = dataset.state(0), dataset.state(1)
    changer = next(r for r in after["students"].values() if r["studentUniqueId"] == "6040023")
    assert changer["birthSexDescriptor"] != before["students"][changer["id"]]["birthSexDescriptor"]

    (renamed,) = upserts(dataset, 1, "schools")
    assert renamed["nameOfInstitution"] == "Grand Bend Early College High School 1"
    assert renamed["changeVersion"] == next(e.change_version for e in dataset.batches[1] if e.record is renamed)
    assert dataset.school_names(0)[SCHOOL_1] == "Grand Bend High School 1"
    assert dataset.school_names(1) == {SCHOOL_1: "Grand Bend Early College High School 1",
                                       SCHOOL_2: "Grand Bend High School 2"}

    (ended,) = [r for r in after["studentSchoolAssociations"].values() if r.get("exitWithdrawDate")]
    leaver = ended["studentReference"]["studentUniqueId"]
    assert ended["exitWithdrawDate"] == "2023-09-08" and ended["exitWithdrawTypeDescriptor"].endswith("#Withdrawn")
    sections = by_student(after["studentSectionAssociations"])[leaver]
    assert sections and all(r["endDate"] == "2023-09-08" for r in sections)
    # they stay a student to the end, with no new attendance after leaving
    assert leaver in {r["studentUniqueId"] for r in dataset.state()["students"].values()}
    assert not any(e.record["studentReference"]["studentUniqueId"] == leaver for batch in dataset.batches[2:]
                   for e in batch if e.resource == "studentSchoolAttendanceEvents" and e.kind == "upsert")


def test_batch_2_changes_a_grade_level_transfers_a_student_and_deletes_one(dataset):
    before, after = dataset.state(1), dataset.state(2)
    old = {r["id"]: r for r in by_student(before["studentSchoolAssociations"])["6040023"]}
    (changed,) = by_student(after["studentSchoolAssociations"])["6040023"]
    assert changed["entryGradeLevelDescriptor"] != old[changed["id"]]["entryGradeLevelDescriptor"]

    moves = {s: rs for s, rs in by_student(after["studentSchoolAssociations"]).items() if len(rs) == 2}
    ((mover, associations),) = moves.items()
    first, second = sorted(associations, key=lambda r: r["entryDate"])
    assert mover != "6040023"
    assert first["exitWithdrawDate"] == "2023-09-15" and first["exitWithdrawTypeDescriptor"].endswith("#Transferred")
    assert second["entryDate"] == "2023-09-18" and "exitWithdrawDate" not in second
    assert {first["schoolReference"]["schoolId"], second["schoolReference"]["schoolId"]} == {SCHOOL_1, SCHOOL_2}

    (deleted,) = [e.record["keyValues"]["studentUniqueId"] for e in dataset.batches[2]
                  if e.resource == "students" and e.kind == "delete"]
    assert dataset.deleted_students(1) == set() and dataset.deleted_students(2) == {deleted}
    assert deleted not in by_student(after["studentSchoolAssociations"])


def test_late_deliveries_lose_to_what_was_delivered_before(dataset):
    # batch 2: the school's old name, with its old change version
    (late,) = upserts(dataset, 2, "schools")
    (renamed,) = upserts(dataset, 1, "schools")
    assert late["nameOfInstitution"] == "Grand Bend High School 1" and late["changeVersion"] < renamed["changeVersion"]
    assert dataset.state(2)["schools"][late["id"]] is renamed
    # batch 3: the student deleted in batch 2, as they were, without a change version
    (ghost,) = upserts(dataset, 3, "students")[-1:]
    assert ghost["studentUniqueId"] in dataset.deleted_students(2) and "changeVersion" not in ghost
    assert ghost["id"] not in dataset.state(3)["students"]
    assert ghost["studentUniqueId"] in dataset.deleted_students(3)


def test_history_leaves_the_initial_load_as_it_was_and_needs_three_batches():
    plain, history = generate_edfi(batches=3), generate_edfi(batches=3, history=True)
    assert history.batches[0] == plain.batches[0]
    assert len(history.events()) > len(plain.events())
    with pytest.raises(ValueError, match="history needs at least 3 batches .* got 2"):
        generate_edfi(batches=2, history=True)


@pytest.mark.parametrize(("students", "schools", "batches"), [(4, 1, 3), (5, 2, 5), (60, 3, 4)])
def test_history_works_for_small_and_larger_districts(students, schools, batches):
    dataset = generate_edfi(students=students, schools=schools, batches=batches, history=True, key_changes=True)
    ended = [r for r in dataset.state()["studentSchoolAssociations"].values() if r.get("exitWithdrawDate")]
    assert sorted(r["exitWithdrawDate"] for r in ended) == ["2023-09-08", "2023-09-15"]
    students_now = {r["studentUniqueId"] for r in dataset.state()["students"].values()}
    for record in dataset.state()["studentSchoolAssociations"].values():
        assert record["studentReference"]["studentUniqueId"] in students_now


def test_state_follows_carried_change_versions_and_deletes():
    def up(version, name, **extra):
        return Event(version, "schools", "upsert", {"id": "a", "nameOfInstitution": name, **extra})

    def delete(version):
        return Event(version, "schools", "delete", {"id": "a", "changeVersion": version, "keyValues": {}})

    def name(*batches):
        record = EdFiDataset(batches=[list(b) for b in batches]).state()["schools"].get("a")
        return record and record["nameOfInstitution"]

    assert name([up(1, "old")], [up(2, "new")]) == "new"  # no versions in the bodies: the later batch
    assert name([up(5, "new", changeVersion=5)], [up(3, "stale", changeVersion=3)]) == "new"
    assert name([up(5, "new", changeVersion=5)], [up(3, "no version")]) == "no version"
    assert name([up(1, "x"), delete(2)], [up(1, "late")]) is None
    assert name([up(1, "x"), delete(2)], [up(3, "newer", changeVersion=3)]) == "newer"


def test_roster_lists_every_student_ever_with_their_first_school_and_batch(dataset):
    roster = dataset.roster()
    ids = [student_id for student_id, _, _ in roster]
    assert len(ids) == len(set(ids)) == 24 + 3
    ever = {e.record["studentUniqueId"] for e in dataset.events() if e.resource == "students" and e.kind == "upsert"}
    assert set(ids) == ever
    assert roster[0] == ("6040000", SCHOOL_1, 0)
    assert [(s, b) for s, _, b in roster[24:]] == [("6040024", 1), ("6040025", 2), ("6040026", 3)]
