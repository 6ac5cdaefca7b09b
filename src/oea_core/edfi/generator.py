"""A deterministic generator of Ed-Fi-shaped data, for tests, benchmarks and the committed sample.

Records reference each other consistently (sections point at course offerings that exist,
grades at student-section associations that exist), and changes arrive over several batches:
inserts, updates, deletes, and a record inserted and deleted within the same batch; with
``key_changes``, also a student school association whose ``entryDate`` (part of its natural key)
changes in each later batch; with ``history``, the changes a gold layer's history must follow
(attributes that change, a school renamed, enrollments that end, late deliveries; see
``generate_edfi``). Each change has a change version, as an ODS/API's change queries
would report. The same data can be written as an export in OEA's test-data layout
(``<resource>/incremental/{upserts|deletes|keyChanges}/rundate=YYYY-MM-DD/*.json``) or served by
a test API.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from dataclasses import dataclass, field

from .records import (
    COURSES,
    DESCRIPTORS,
    FIRST,
    GRADES,
    LAST,
    LEA_ID,
    NS,
    RESOURCE_ORDER,
    SCHOOL_YEAR,
    SESSION,
    Builder,
    Event,
    Roster,
    add_attendance,
    add_grades,
    descriptor,
    enroll,
    load_district,
    ref,
)

__all__ = ["COURSES", "DESCRIPTORS", "FIRST", "GRADES", "LAST", "LEA_ID", "NS", "RESOURCE_ORDER", "SCHOOL_YEAR",
           "SESSION", "EdFiDataset", "Event", "descriptor", "generate_edfi", "hash_stable", "write_edfi_export"]


@dataclass
class EdFiDataset:
    """Generated changes, in batches; ``state(n)`` is every resource's records after batch ``n``."""

    batches: list[list[Event]] = field(default_factory=list)
    start: dt.date = dt.date(2024, 8, 26)

    def rundate(self, batch: int) -> str:
        return (self.start + dt.timedelta(days=batch)).isoformat()

    def state(self, batch: int | None = None) -> dict[str, dict[str, dict]]:
        """``{resource: {id: record}}`` after batch ``batch`` (default: the last).

        As ingest decides from the landed files: a later change wins unless both it and the current
        record carry a ``changeVersion`` and the later one is older, and an upsert of a deleted record
        is a late delivery unless it carries a change version newer than its delete's.
        """
        last = len(self.batches) - 1 if batch is None else batch
        state: dict[str, dict[str, dict]] = {r: {} for r in RESOURCE_ORDER}
        deleted: dict[str, dict[str, int | None]] = {r: {} for r in RESOURCE_ORDER}
        for events in self.batches[: last + 1]:
            for event in events:
                record_id = event.record["id"]
                if event.kind == "upsert":
                    version = event.record.get("changeVersion")
                    current = state[event.resource].get(record_id)
                    if record_id in deleted[event.resource] and not _newer(version,
                                                                           deleted[event.resource][record_id]):
                        continue
                    if current is not None and _newer(current.get("changeVersion"), version):
                        continue
                    state[event.resource][record_id] = event.record
                elif event.kind == "delete":
                    state[event.resource].pop(record_id, None)
                    deleted[event.resource][record_id] = event.record.get("changeVersion")
        return state

    def school_names(self, batch: int = 0) -> dict[int, str]:
        """``{schoolId: nameOfInstitution}`` after batch ``batch`` (default: the initial load)."""
        return {r["schoolId"]: r["nameOfInstitution"] for r in self.state(batch)["schools"].values()}

    def roster(self) -> list[tuple[str, int, int]]:
        """``(studentUniqueId, schoolId, batch)`` of every student ever upserted, deleted ones included, in the
        order they first appear: the school of their first enrollment and the batch that first brought them."""
        first: dict[str, tuple[int, int]] = {}
        for number, events in enumerate(self.batches):
            for event in events:
                if event.kind == "upsert" and event.resource == "studentSchoolAssociations":
                    student_id = event.record["studentReference"]["studentUniqueId"]
                    first.setdefault(student_id, (event.record["schoolReference"]["schoolId"], number))
        return [(student_id, school_id, number) for student_id, (school_id, number) in first.items()]

    def deleted_students(self, batch: int | None = None) -> set[str]:
        """The studentUniqueIds of the students upserted, then deleted, by batch ``batch`` (default: the last)."""
        alive = {r["studentUniqueId"] for r in self.state(batch)["students"].values()}
        last = len(self.batches) - 1 if batch is None else batch
        return {e.record["studentUniqueId"] for events in self.batches[: last + 1] for e in events
                if e.kind == "upsert" and e.resource == "students"} - alive

    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]


def _newer(version: int | None, than: int | None) -> bool:
    return version is not None and than is not None and version > than


def generate_edfi(students: int = 24, staff: int = 6, schools: int = 2, batches: int = 3,
                  seed: int = 7, key_changes: bool = False, history: bool = False) -> EdFiDataset:
    """Generate ``batches`` batches of consistent Ed-Fi changes (first batch: the full initial load).

    Every later batch has attendance, grades, a name change and a dropped section; from batch 2 a
    student leaves (deleted with every record about them). With ``key_changes`` each later batch also
    changes one student school association's ``entryDate``. With ``history`` (needs 3 batches or more):

    - batch 1: a student's ``birthSexDescriptor`` changes; the first school is renamed (its upsert
      carries its ``changeVersion``); another student's enrollment ends (``exitWithdrawDate`` = the
      batch's day, their section associations get an ``endDate``), and they stay a student;
    - batch 2: the same first student's ``entryGradeLevelDescriptor`` changes; a third student
      transfers (enrollment ended, a new one at the next school three days later; with one school,
      the enrollment just ends); a late delivery of the school's old name with its old, lower
      ``changeVersion`` (it loses);
    - batch 3, if any: a late delivery of the student deleted in batch 2, without a change version
      (ingest ignores it: the delete's tombstone wins).

    Both are off by default, so the committed sample stays as it is. Raises ValueError on counts too small.
    """
    if batches < 1 or students < 4 or staff < 1 or schools < 1:
        raise ValueError("need at least 1 batch, 4 students, 1 staff member and 1 school")
    if history and batches < 3:
        raise ValueError(f"history needs at least 3 batches (its changes are in batches 1 and 2), got {batches}")
    b = Builder(seed)
    dataset = EdFiDataset()
    roster = load_district(b, staff, schools)
    for index in range(students):
        enroll(b, roster, index)
    dataset.batches.append(b.batch)
    for batch in range(1, batches):
        b.batch = []
        _later_batch(b, dataset, roster, batch, students, key_changes=key_changes, history=history)
        dataset.batches.append(b.batch)
    return dataset


def _later_batch(b: Builder, dataset: EdFiDataset, roster: Roster, batch: int, students: int, *,
                 key_changes: bool, history: bool) -> None:
    """Batch ``batch`` (1 or later): attendance, grades, a name change, a section drop, a new student, and (from
    batch 2) a student who leaves the district; then the history's and the key changes, if asked for."""
    enrolled = roster.enrolled
    day = dt.date(2023, 9, 1) + dt.timedelta(days=7 * batch)
    ids = sorted(enrolled)
    add_attendance(b, enrolled, ids, day)
    add_grades(b, enrolled, ids, batch)
    renamed, dropper = _rename_and_drop(b, enrolled, ids, batch)
    enroll(b, roster, students + batch - 1)
    if batch >= 2:
        leaver = ids[0] if ids[0] not in (renamed, dropper) else ids[1]
        enrolled.pop(leaver)
        _remove_student(b, leaver)
    if history:
        _history(b, dataset, batch, f"604{students - 1:04d}", ids, enrolled, roster.school_ids, day)
    if key_changes:
        _change_entry_date(b, sorted(enrolled)[(batch * 3 + 1) % len(enrolled)], enrolled, day)


def _rename_and_drop(b: Builder, enrolled: dict, ids: list[str], batch: int) -> tuple[str, str]:
    """A student's last name changes; another student drops a section (and its grade): their studentUniqueIds."""
    renamed = ids[batch % len(ids)]
    record = copy.deepcopy(b.alive["students"][b.new_id("students", renamed)])
    record["lastSurname"] = LAST[(batch * 7) % len(LAST)] + "-" + record["lastSurname"]
    b.upsert("students", record)
    dropper = ids[(batch * 5) % len(ids)]
    _school_id, chosen = enrolled[dropper]
    if chosen:
        keys = chosen.pop()
        b.delete("studentSectionAssociations",
                 b.new_id("studentSectionAssociations", f"{dropper}/{keys['sectionIdentifier']}"),
                 {"studentUniqueId": dropper, "sectionIdentifier": keys["sectionIdentifier"]})
        grade_id = b.new_id("grades", f"{dropper}/{keys['sectionIdentifier']}")
        if grade_id in b.alive["grades"]:
            b.delete("grades", grade_id, {"studentUniqueId": dropper})
    return renamed, dropper


def _history(b: Builder, dataset: EdFiDataset, batch: int, changer: str, ids: list[str], enrolled: dict,
             school_ids: list[int], day: dt.date) -> None:
    """Batch ``batch``'s changes for ``generate_edfi(history=True)`` (its docstring says which)."""
    school_key = b.new_id("schools", str(school_ids[0]))
    if batch == 1:
        student = b.alive["students"][b.new_id("students", changer)]
        sex = "Male" if student["birthSexDescriptor"].endswith("#Female") else "Female"
        b.upsert("students", {**student, "birthSexDescriptor": descriptor("Sex", sex)})
        school = b.alive["schools"][school_key]
        b.upsert("schools", {**school, "nameOfInstitution": school["nameOfInstitution"].replace(
            "High School", "Early College High School")}, carry_version=True)
        leaver = ids[len(ids) // 2]
        _end_enrollment(b, leaver, enrolled.pop(leaver), day, "Withdrawn")
    elif batch == 2:
        changer_school = enrolled[changer][0]
        association = b.alive["studentSchoolAssociations"][
            b.new_id("studentSchoolAssociations", f"{changer}/{changer_school}")]
        grade = GRADES.index(association["entryGradeLevelDescriptor"].split("#")[1])
        b.upsert("studentSchoolAssociations", {**association, "entryGradeLevelDescriptor": descriptor(
            "GradeLevel", GRADES[grade + 1 if grade + 1 < len(GRADES) else grade - 1])})
        remaining = sorted(set(enrolled) - {changer})
        mover = remaining[len(remaining) // 2]
        old_school, _sections = enrolled.pop(mover)
        association = _end_enrollment(b, mover, (old_school, _sections), day, "Transferred")
        if len(school_ids) > 1:
            new_school = school_ids[(school_ids.index(old_school) + 1) % len(school_ids)]
            b.upsert("studentSchoolAssociations", {
                **association, "id": b.new_id("studentSchoolAssociations", f"{mover}/{new_school}"),
                "schoolReference": ref(schoolId=new_school),
                "calendarReference": ref(calendarCode="IEP", schoolId=new_school, schoolYear=SCHOOL_YEAR),
                "entryDate": (day + dt.timedelta(days=3)).isoformat()})
            enrolled[mover] = (new_school, [])
        (old,) = [e for e in dataset.batches[0] if e.resource == "schools" and e.record["id"] == school_key]
        b.replay("schools", {**old.record, "changeVersion": old.change_version}, old.change_version)
    elif batch == 3:
        (student_id,) = {e.record["keyValues"]["studentUniqueId"] for e in dataset.batches[2]
                         if e.resource == "students" and e.kind == "delete"}
        record_id = b.new_id("students", student_id)
        last = [e for e in dataset.events() if e.resource == "students" and e.kind == "upsert"
                and e.record["id"] == record_id][-1]
        b.replay("students", last.record, last.change_version)


def _end_enrollment(b: Builder, student_id: str, enrollment: tuple[int, list[dict]], day: dt.date,
                    reason: str) -> dict:
    """The student's school association ended on ``day``, and their section associations with it."""
    school_id, sections = enrollment
    record = b.alive["studentSchoolAssociations"][b.new_id("studentSchoolAssociations", f"{student_id}/{school_id}")]
    ended = b.upsert("studentSchoolAssociations", {
        **record, "exitWithdrawDate": day.isoformat(),
        "exitWithdrawTypeDescriptor": descriptor("ExitWithdrawType", reason)})
    for keys in sections:
        section_id = b.new_id("studentSectionAssociations", f"{student_id}/{keys['sectionIdentifier']}")
        if section_id in b.alive["studentSectionAssociations"]:
            b.upsert("studentSectionAssociations", {**b.alive["studentSectionAssociations"][section_id],
                                                    "endDate": day.isoformat()})
    return {k: v for k, v in ended.items() if not k.startswith("_") and not k.startswith("exitWithdraw")}


def _change_entry_date(b: Builder, student_id: str, enrolled: dict, day: dt.date) -> None:
    """A student school association's entryDate corrected: its natural key changes, its id stays."""
    school_id = enrolled[student_id][0]
    record = b.alive["studentSchoolAssociations"][b.new_id("studentSchoolAssociations", f"{student_id}/{school_id}")]
    keys = {"schoolId": school_id, "studentUniqueId": student_id}
    b.change_key("studentSchoolAssociations", record, {"entryDate": record["entryDate"], **keys},
                 {"entryDate": day.isoformat(), **keys}, {"entryDate": day.isoformat()})


def _remove_student(b: Builder, student_id: str) -> None:
    """Delete a student and everything that references them, dependents first (as the ODS requires)."""
    for resource in ("grades", "studentSchoolAttendanceEvents", "studentSectionAssociations",
                     "studentSchoolAssociations"):
        for record_id, record in list(b.alive[resource].items()):
            ref = record.get("studentReference") or record.get("studentSectionAssociationReference") or {}
            if ref.get("studentUniqueId") == student_id:
                b.delete(resource, record_id, {"studentUniqueId": student_id})
    b.delete("students", b.new_id("students", student_id), {"studentUniqueId": student_id})


def write_edfi_export(dataset: EdFiDataset, out: str | os.PathLike, quirks: bool = True) -> list[str]:
    """Write ``dataset`` in OEA's test-data layout; returns the files written.

    With ``quirks``: some files are JSON arrays with a UTF-8 byte-order mark, the rest JSON
    Lines; the first batch's deletes of one resource use the older ``Id``/``ChangeVersion``
    spelling; and one empty file is included.
    """
    out = os.fspath(out)
    written = []
    for number, events in enumerate(dataset.batches):
        rundate = dataset.rundate(number)
        by_file: dict[tuple[str, str], list[dict]] = {}
        for event in events:
            kind = {"upsert": "upserts", "delete": "deletes", "keyChange": "keyChanges"}[event.kind]
            by_file.setdefault((event.resource, kind), []).append(event.record)
        for (resource, kind), records in sorted(by_file.items()):
            folder = os.path.join(out, resource, "incremental", kind, f"rundate={rundate}")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, "part-00000.json")
            old_spelling = quirks and kind == "deletes" and number % 2 == 1 and resource == "grades"
            if old_spelling:
                records = [{"Id": r["id"], "ChangeVersion": r["changeVersion"], "KeyValues": r["keyValues"]}
                           for r in records]
            as_array = quirks and hash_stable(resource) % 3 == 0
            with open(path, "w", encoding="utf-8-sig" if as_array else "utf-8", newline="\n") as handle:
                if as_array:
                    json.dump(records, handle, indent=1)
                else:
                    handle.writelines(json.dumps(r) + "\n" for r in records)
            written.append(path)
        if quirks and number == 0:
            folder = os.path.join(out, "sexDescriptors", "incremental", "deletes", f"rundate={rundate}")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, "part-00000.json")
            open(path, "w").close()
            written.append(path)
    return written


def hash_stable(text: str) -> int:
    """A small hash that, unlike ``hash()``, is the same in every process."""
    return sum((i + 1) * ord(c) for i, c in enumerate(text))
