"""District-scale Ed-Fi change feeds for ``edfi_scale.py``: a backfill and daily batches, streamed to JSON Lines.

The records have the shapes ``oea_core.edfi.generator`` produces (references with links, descriptor URIs,
``_etag``, ``_lastModifiedDate``, child arrays), at a district's proportions per student: one student and one
school association, 7 section associations, 3 grades per section association (grading periods) and one
attendance event per school day (positive attendance: "In Attendance" most days). ``students=50_000`` with the
default 80 school days in the backfill gives about 5.5M records. Each daily batch changes about 1% of them:
the day's attendance (inserts), attendance corrections (updates) and a few deletes, grade updates, name
changes, schedule changes (a section association and its grades deleted, a new one inserted), new students
and withdrawals (an update of the school association).

Written in OEA's export layout, one folder per batch (``backfill``, ``day1``, ...), each
``<resource>/incremental/{upserts|deletes}/rundate=YYYY-MM-DD/part-NNNNN.json`` with at most
``RECORDS_PER_FILE`` records per file. Upserts carry no ``changeVersion`` (as the generator's); deletes do.
Records are formatted from string templates made once per shape, so 5M records take well under a minute.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re

from oea_core.edfi.generator import COURSES, FIRST, GRADES, LAST, LEA_ID, NS, SCHOOL_YEAR, SESSION, descriptor

RECORDS_PER_FILE = 50_000  # as oea_core.edfi.landing writes API pages: a landed file stays far below 2 GB
SECTIONS_PER_STUDENT = 7
GRADING_PERIODS = ("First Six Weeks", "Second Six Weeks", "Third Six Weeks")
CATEGORIES = ("In Attendance", "Excused Absence", "Unexcused Absence", "Tardy")
COURSE_LEVELS = 4
CLASS_SIZE = 25
FIRST_SCHOOL_DAY = dt.date(2023, 8, 21)
DESCRIPTOR_CODES = {
    "gradeLevelDescriptors": GRADES, "sexDescriptors": ["Female", "Male", "Not Selected"],
    "attendanceEventCategoryDescriptors": list(CATEGORIES), "academicSubjectDescriptors": [c[2] for c in COURSES],
    "gradeTypeDescriptors": ["Grading Period", "Final"], "gradingPeriodDescriptors": list(GRADING_PERIODS),
    "classroomPositionDescriptors": ["Teacher of Record"], "schoolCategoryDescriptors": ["High School"],
    "exitWithdrawTypeDescriptors": ["Transferred"], "electronicMailTypeDescriptors": ["Work"],
}
_KIND_CODES = {name: n for n, name in enumerate((
    "descriptor", "lea", "school", "course", "offering", "section", "staff", "staffSection", "student", "ssa",
    "secA", "grade", "attendance"), start=1)}
_ID_BITS = 120


def record_id(kind: str, number: int) -> str:
    """A 32-hex id (a GUID without dashes, as ingest normalizes them), distinct per kind and number."""
    return f"{_KIND_CODES[kind]:02x}{((number + 1) * 0x9E3779B97F4A7C15F39CC0605CEDC835) % 2**_ID_BITS:030x}"


def school_day(n: int) -> dt.date:
    """The ``n``-th school day (weekdays) from the first day of school."""
    weeks, day = divmod(n, 5)
    return FIRST_SCHOOL_DAY + dt.timedelta(days=7 * weeks + day)


# templates ---------------------------------------------------------------------------------------
_STR = re.compile(r"<<(\w+)>>|\[\[(\w+)\]\]")
_NUM = re.compile(r'"\[\[(\w+)\]\]"')


def template(record: dict) -> str:
    """A %-format string of ``record``'s JSON: a value ``"[[name]]"`` becomes a bare ``%(name)s`` (a number or
    literal); ``<<name>>`` or ``[[name]]`` inside a string becomes ``%(name)s`` there."""
    text = json.dumps(record, separators=(",", ":")).replace("%", "%%")
    return _STR.sub(lambda m: f"%({m.group(1) or m.group(2)})s", _NUM.sub(r"%(\1)s", text))


def _ref(**keys) -> dict:
    return dict(keys, link={"rel": "Link", "href": "/ed-fi/x/" + "-".join(str(v) for v in keys.values())})


_META = {"_etag": "<<etag>>", "_lastModifiedDate": "<<modified>>"}
_SECTION_KEYS = {"localCourseCode": "<<course>>", "schoolId": "[[school]]", "schoolYear": SCHOOL_YEAR,
                 "sessionName": SESSION, "sectionIdentifier": "<<section>>"}


def _student(nickname: bool) -> str:
    return template({
        "id": "<<id>>", "studentUniqueId": "<<student>>", "firstName": "<<first>>", "lastSurname": "<<last>>",
        "middleName": "<<middle>>", "birthDate": "<<birth>>", "birthCity": "Grand Bend",
        "birthSexDescriptor": descriptor("Sex", "<<sex>>"),
        "otherNames": ([{"otherNameTypeDescriptor": descriptor("OtherNameType", "Nickname"), "firstName": "<<nick>>",
                         "lastSurname": "<<last>>"}] if nickname else []),
        "personalIdentificationDocuments": [], "_ext": {}, **_META})


def _ssa(withdrawn: bool) -> str:
    record = {
        "id": "<<id>>", "studentReference": _ref(studentUniqueId="<<student>>"),
        "schoolReference": _ref(schoolId="[[school]]"),
        "calendarReference": _ref(calendarCode="IEP", schoolId="[[school]]", schoolYear=SCHOOL_YEAR),
        "classOfSchoolYearTypeReference": _ref(schoolYear="[[class_of]]"),
        "entryDate": "<<entry>>", "entryGradeLevelDescriptor": descriptor("GradeLevel", "<<grade>>"),
        "alternativeGraduationPlans": [], "educationPlans": [], **_META}
    if withdrawn:
        record.update(exitWithdrawDate="<<exit>>",
                      exitWithdrawTypeDescriptor=descriptor("ExitWithdrawType", "Transferred"))
    return template(record)


TEMPLATES = {
    "student": _student(False), "student_nick": _student(True), "ssa": _ssa(False), "ssa_exit": _ssa(True),
    "secA": template({"id": "<<id>>", "studentReference": _ref(studentUniqueId="<<student>>"),
                      "sectionReference": _ref(**_SECTION_KEYS), "beginDate": "<<begin>>",
                      "homeroomIndicator": "[[homeroom]]", **_META}),
    "grade": template({
        "id": "<<id>>",
        "studentSectionAssociationReference": _ref(beginDate="<<begin>>", studentUniqueId="<<student>>",
                                                   **_SECTION_KEYS),
        "gradingPeriodReference": _ref(gradingPeriodDescriptor=descriptor("GradingPeriod", "<<period>>"),
                                       periodSequence="[[sequence]]", schoolId="[[school]]", schoolYear=SCHOOL_YEAR),
        "gradeTypeDescriptor": descriptor("GradeType", "Grading Period"), "numericGradeEarned": "[[grade]]",
        "letterGradeEarned": "<<letter>>", "learningStandardGrades": [], **_META}),
    "attendance": template({
        "id": "<<id>>", "studentReference": _ref(studentUniqueId="<<student>>"),
        "schoolReference": _ref(schoolId="[[school]]"),
        "sessionReference": _ref(schoolId="[[school]]", schoolYear=SCHOOL_YEAR, sessionName=SESSION),
        "eventDate": "<<date>>", "attendanceEventReason": "<<reason>>",
        "attendanceEventCategoryDescriptor": descriptor("AttendanceEventCategory", "<<category>>"), **_META}),
    "delete": template({"id": "<<id>>", "changeVersion": "[[version]]", "keyValues": {"key": "<<key>>"}}),
}


# the writer --------------------------------------------------------------------------------------
class _BatchFiles:
    """One batch's files: ``<resource>/incremental/<kind>/rundate=<date>/part-NNNNN.json``, rotated by size."""

    def __init__(self, root: str, rundate: str, etag: str, modified: str, first_version: int,
                 only: frozenset[str] | None = None) -> None:
        self.root, self.rundate, self.only = root, rundate, only
        self.meta = {"etag": etag, "modified": modified}
        self.version = first_version
        self.buffers: dict[tuple[str, str], list[str]] = {}
        self.parts: dict[tuple[str, str], int] = {}
        self.counts: dict[str, dict[str, int]] = {}

    def upsert(self, resource: str, shape: str, values: dict) -> None:
        values.update(self.meta)
        self._add(resource, "upserts", TEMPLATES[shape] % values)

    def delete(self, resource: str, rid: str, key: str) -> None:
        self.version += 1
        self._add(resource, "deletes", TEMPLATES["delete"] % {"id": rid, "version": self.version, "key": key})

    def _add(self, resource: str, kind: str, line: str) -> None:
        if self.only is not None and resource not in self.only:
            return
        buffer = self.buffers.setdefault((resource, kind), [])
        buffer.append(line)
        counts = self.counts.setdefault(resource, {"upserts": 0, "deletes": 0})
        counts[kind] += 1
        if len(buffer) >= RECORDS_PER_FILE:
            self._flush(resource, kind)

    def _flush(self, resource: str, kind: str) -> None:
        lines = self.buffers.get((resource, kind))
        if not lines:
            return
        part = self.parts.get((resource, kind), 0)
        folder = os.path.join(self.root, resource, "incremental", kind, f"rundate={self.rundate}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"part-{part:05d}.json"), "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\n".join(lines) + "\n")
        self.parts[(resource, kind)] = part + 1
        lines.clear()

    def close(self) -> dict[str, dict[str, int]]:
        for resource, kind in list(self.buffers):
            self._flush(resource, kind)
        return self.counts


class ScaleDistrict:
    """The district's layout (schools, sections, staff) and the state needed to change it day by day."""

    def __init__(self, students: int, backfill_days: int, seed: int) -> None:
        if students < 10 or backfill_days < 1:
            raise ValueError("need at least 10 students and 1 backfill day")
        self.students, self.backfill_days = students, backfill_days
        self.rng = random.Random(seed)
        self.schools = max(1, students // 1000)
        per_school = -(-students // self.schools)
        self.block = max(1, -(-per_school * SECTIONS_PER_STUDENT // CLASS_SIZE // SECTIONS_PER_STUDENT))
        self.sections_per_school = self.block * SECTIONS_PER_STUDENT
        self.courses = [(f"{code}{level}", f"{title} {level}", subject) for code, title, subject in COURSES
                        for level in range(1, COURSE_LEVELS + 1)]
        self.staff = max(1, self.schools * self.sections_per_school // 5)
        self.enrolled = students  # student numbers 0 .. enrolled-1 (new students are added at the end)
        self.withdrawn: set[int] = set()
        self.swapped: dict[tuple[int, int], int] = {}  # (student, slot) -> generation of its section association
        self.deleted_attendance: set[tuple[int, int]] = set()

    # identities ----------------------------------------------------------------------------------
    def school_id(self, school: int) -> int:
        return LEA_ID * 1000 + school + 1

    def section(self, school: int, number: int) -> tuple[str, str]:
        """``(localCourseCode, sectionIdentifier)`` of a school's section."""
        code = self.courses[number % len(self.courses)][0]
        return code, f"{self.school_id(school)}-{code}-{number:03d}"

    def slot_section(self, student: int, slot: int) -> int:
        """The school's section number in the student's ``slot`` (each slot has its own block of sections)."""
        k = student // self.schools + self.swapped.get((student, slot), 0)
        return slot * self.block + k % self.block

    @staticmethod
    def unique_id(student: int) -> str:
        return f"6{student:08d}"

    # records -------------------------------------------------------------------------------------
    def write_student(self, out: _BatchFiles, i: int, last_name: str | None = None) -> None:
        grade = i % len(GRADES)
        first, last = FIRST[i % len(FIRST)], last_name or LAST[(i * 3) % len(LAST)]
        out.upsert("students", "student_nick" if i % 3 == 0 else "student", {
            "id": record_id("student", i), "student": self.unique_id(i), "first": first, "last": last,
            "middle": FIRST[(i + 5) % len(FIRST)], "birth": f"{2009 - grade}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "sex": "Female" if i % 2 else "Male", "nick": first[:2] + "y"})

    def write_ssa(self, out: _BatchFiles, i: int, entry: str, exit_date: str | None = None) -> None:
        grade = i % len(GRADES)
        out.upsert("studentSchoolAssociations", "ssa_exit" if exit_date else "ssa", {
            "id": record_id("ssa", i), "student": self.unique_id(i), "school": self.school_id(i % self.schools),
            "class_of": SCHOOL_YEAR + 3 - grade, "entry": entry, "grade": GRADES[grade], "exit": exit_date})

    def _section_values(self, i: int, slot: int) -> dict:
        school = i % self.schools
        code, ident = self.section(school, self.slot_section(i, slot))
        return {"student": self.unique_id(i), "school": self.school_id(school), "course": code, "section": ident}

    def secA_id(self, i: int, slot: int) -> str:
        return record_id("secA", (i * 8 + slot) * 64 + self.swapped.get((i, slot), 0))

    def write_secA(self, out: _BatchFiles, i: int, slot: int, begin: str) -> None:
        out.upsert("studentSectionAssociations", "secA", {
            "id": self.secA_id(i, slot), "begin": begin, "homeroom": "true" if slot == 0 else "false",
            **self._section_values(i, slot)})

    def write_grade(self, out: _BatchFiles, i: int, slot: int, period: int, value: int) -> None:
        out.upsert("grades", "grade", {
            "id": record_id("grade", (i * 8 + slot) * 4 + period), "begin": FIRST_SCHOOL_DAY.isoformat(),
            "period": GRADING_PERIODS[period], "sequence": period + 1, "grade": value,
            "letter": "ABCDF"[min(4, max(0, (99 - value) // 10))], **self._section_values(i, slot)})

    def write_attendance(self, out: _BatchFiles, i: int, day: int, category: str | None = None) -> None:
        if category is None:
            h = (i * 31 + day * 17) % 100
            category = CATEGORIES[0 if h < 90 else 1 if h < 94 else 2 if h < 97 else 3]
        school = self.school_id(i % self.schools)
        out.upsert("studentSchoolAttendanceEvents", "attendance", {
            "id": record_id("attendance", i * 512 + day), "student": self.unique_id(i), "school": school,
            "date": school_day(day).isoformat(), "reason": f"Reported by {i % 100:02d}", "category": category})

    def grade_value(self, i: int, slot: int, period: int) -> int:
        return 60 + (i * 7 + slot * 13 + period * 29) % 40

    def enroll(self, out: _BatchFiles, i: int, entry: str) -> None:
        self.write_student(out, i)
        self.write_ssa(out, i, entry)
        for slot in range(SECTIONS_PER_STUDENT):
            self.write_secA(out, i, slot, entry)


def _write_district(out: _BatchFiles, d: ScaleDistrict) -> None:
    for r, (resource, codes) in enumerate(DESCRIPTOR_CODES.items()):
        name = resource[0].upper() + resource[1:-len("Descriptors")]
        for n, code in enumerate(codes):
            out._add(resource, "upserts", json.dumps({
                "id": record_id("descriptor", r * 100 + n), "codeValue": code, "shortDescription": code,
                "description": code, "namespace": f"{NS}{name}Descriptor"}))
    out._add("localEducationAgencies", "upserts", json.dumps({
        "id": record_id("lea", LEA_ID), "localEducationAgencyId": LEA_ID, "nameOfInstitution": "Grand Bend ISD",
        "localEducationAgencyCategoryDescriptor": descriptor("LocalEducationAgencyCategory", "Independent"),
        "stateEducationAgencyReference": _ref(stateEducationAgencyId=255950), "categories": [],
        "educationOrganizationCategories": [
            {"educationOrganizationCategoryDescriptor": descriptor("EducationOrganizationCategory", "District")}],
        "_ext": {}}))
    for s in range(d.schools):
        school_id = d.school_id(s)
        out._add("schools", "upserts", json.dumps({
            "id": record_id("school", s), "schoolId": school_id, "nameOfInstitution": f"Grand Bend High School {s + 1}",
            "localEducationAgencyReference": _ref(localEducationAgencyId=LEA_ID),
            "gradeLevels": [{"gradeLevelDescriptor": descriptor("GradeLevel", g)} for g in GRADES],
            "schoolCategories": [{"schoolCategoryDescriptor": descriptor("SchoolCategory", "High School")}],
            "educationOrganizationCategories": [
                {"educationOrganizationCategoryDescriptor": descriptor("EducationOrganizationCategory", "School")}],
            "addresses": [{"addressTypeDescriptor": descriptor("AddressType", "Physical"), "city": "Grand Bend",
                           "postalCode": "78834", "streetNumberName": f"{100 + s} School Rd",
                           "stateAbbreviationDescriptor": descriptor("StateAbbreviation", "TX"),
                           "periods": [{"beginDate": "2001-08-01"}]}],
            "_ext": {"sample": {"isExemplary": s == 0}}}))
    for n, (code, title, subject) in enumerate(d.courses):
        out._add("courses", "upserts", json.dumps({
            "id": record_id("course", n), "courseCode": code, "courseTitle": title, "numberOfParts": 1,
            "educationOrganizationReference": _ref(educationOrganizationId=LEA_ID),
            "academicSubjectDescriptor": descriptor("AcademicSubject", subject),
            "identificationCodes": [{"courseIdentificationSystemDescriptor": descriptor(
                "CourseIdentificationSystem", "LEA course code"), "identificationCode": code}],
            "offeredGradeLevels": [{"gradeLevelDescriptor": descriptor("GradeLevel", g)} for g in GRADES],
            "maximumAvailableCredits": 1.0}))
    teachers = 0
    for s in range(d.schools):
        school_id = d.school_id(s)
        session = {"schoolId": school_id, "schoolYear": SCHOOL_YEAR, "sessionName": SESSION}
        for n, (code, title, _subject) in enumerate(d.courses):
            out._add("courseOfferings", "upserts", json.dumps({
                "id": record_id("offering", s * 1000 + n), "localCourseCode": code, "localCourseTitle": title,
                "courseReference": _ref(courseCode=code, educationOrganizationId=LEA_ID),
                "schoolReference": _ref(schoolId=school_id), "sessionReference": _ref(**session),
                "offeredGradeLevels": []}))
        for q in range(d.sections_per_school):
            code, ident = d.section(s, q)
            out._add("sections", "upserts", json.dumps({
                "id": record_id("section", s * 100_000 + q), "sectionIdentifier": ident, "sectionName": ident,
                "courseOfferingReference": _ref(localCourseCode=code, **session),
                "locationReference": _ref(classroomIdentificationCode=f"R{100 + q % 40}", schoolId=school_id),
                "locationSchoolReference": _ref(schoolId=school_id),
                "classPeriods": [{"classPeriodReference": _ref(classPeriodName=f"P{1 + q % 7}", schoolId=school_id)}],
                "availableCredits": 0.5, "sequenceOfCourse": 1}))
            staff_id = f"207{teachers % d.staff:06d}"
            teachers += 1
            out._add("staffSectionAssociations", "upserts", json.dumps({
                "id": record_id("staffSection", s * 100_000 + q), "staffReference": _ref(staffUniqueId=staff_id),
                "sectionReference": _ref(localCourseCode=code, **session, sectionIdentifier=ident),
                "beginDate": "2023-08-21",
                "classroomPositionDescriptor": descriptor("ClassroomPosition", "Teacher of Record")}))
    for m in range(d.staff):
        first, last = FIRST[(m * 7 + 3) % len(FIRST)], LAST[(m * 5 + 1) % len(LAST)]
        out._add("staffs", "upserts", json.dumps({
            "id": record_id("staff", m), "staffUniqueId": f"207{m:06d}", "firstName": first, "lastSurname": last,
            "birthDate": f"19{70 + m % 20}-0{1 + m % 9}-1{m % 9}",
            "sexDescriptor": descriptor("Sex", "Female" if m % 2 else "Male"),
            "electronicMails": [{"electronicMailTypeDescriptor": descriptor("ElectronicMailType", "Work"),
                                 "electronicMailAddress": f"{first}.{last}{m}@grandbend.example".lower()}],
            "races": [], "_ext": {}}))


def _backfill(out: _BatchFiles, d: ScaleDistrict) -> None:
    _write_district(out, d)
    start = FIRST_SCHOOL_DAY.isoformat()
    for i in range(d.students):
        d.enroll(out, i, start)
        for slot in range(SECTIONS_PER_STUDENT):
            for period in range(len(GRADING_PERIODS)):
                d.write_grade(out, i, slot, period, d.grade_value(i, slot, period))
    for day in range(d.backfill_days):  # day by day, as an ODS accumulates them
        for i in range(d.students):
            d.write_attendance(out, i, day)


def _day(out: _BatchFiles, d: ScaleDistrict, number: int) -> None:
    """Day ``number`` (1, 2, ...): about 1% of the records change."""
    rng, n = d.rng, d.students
    today = d.backfill_days + number - 1
    date = school_day(today).isoformat()
    for i in range(d.enrolled):  # the day's attendance
        if i not in d.withdrawn:
            d.write_attendance(out, i, today)
    past = dict.fromkeys((i, day) for i, day in ((rng.randrange(n), rng.randrange(d.backfill_days))
                                                 for _ in range(n // 20 + 2)) if (i, day) not in d.deleted_attendance)
    for i, day in past:  # corrections: an absence reported late, or excused
        d.write_attendance(out, i, day, category=rng.choice(CATEGORIES[1:]))
    for i, day in dict.fromkeys((rng.randrange(n), rng.randrange(d.backfill_days)) for _ in range(n // 1000 + 1)):
        if (i, day) not in d.deleted_attendance and (i, day) not in past:  # an event entered in error
            d.deleted_attendance.add((i, day))
            out.delete("studentSchoolAttendanceEvents", record_id("attendance", i * 512 + day),
                       f"{d.unique_id(i)}/{school_day(day)}")
    changed = set()
    for _ in range(n // 10 + 1):  # grades posted or corrected
        i, slot, period = rng.randrange(n), rng.randrange(SECTIONS_PER_STUDENT), rng.randrange(len(GRADING_PERIODS))
        if (i, slot) not in d.swapped and (i, slot, period) not in changed:
            changed.add((i, slot, period))
            d.write_grade(out, i, slot, period, 60 + rng.randrange(40))
    for i in rng.sample(range(n), k=n // 500 + 1):  # name changes
        d.write_student(out, i, last_name=LAST[(i + number) % len(LAST)] + "-" + LAST[(i * 3) % len(LAST)])
    for i in rng.sample(range(n), k=n // 200 + 1):  # schedule changes: drop a section, join another
        slot = rng.randrange(SECTIONS_PER_STUDENT)
        if (i, slot) in d.swapped or i in d.withdrawn or d.block < 2:
            continue
        out.delete("studentSectionAssociations", d.secA_id(i, slot), f"{d.unique_id(i)}/{slot}")
        for period in range(len(GRADING_PERIODS)):
            out.delete("grades", record_id("grade", (i * 8 + slot) * 4 + period), f"{d.unique_id(i)}/{slot}")
        d.swapped[(i, slot)] = number
        d.write_secA(out, i, slot, date)
    for _ in range(n // 1000 + 1):  # new students
        d.enroll(out, d.enrolled, date)
        d.enrolled += 1
    for i in rng.sample(range(n), k=n // 2000 + 1):  # withdrawals
        if i not in d.withdrawn:
            d.withdrawn.add(i)
            d.write_ssa(out, i, FIRST_SCHOOL_DAY.isoformat(), exit_date=date)


def write_scale_export(out: str | os.PathLike, students: int, days: int = 3, backfill_days: int = 80,
                       seed: int = 7, resources: list[str] | None = None) -> list[dict]:
    """Write the backfill and ``days`` daily batches under ``out/backfill``, ``out/day1``, ...

    ``resources`` keeps only those resources' files (the rest of the district is generated all the same).
    Returns one entry per batch: ``{"folder", "rundate", "records": {resource: {"upserts": n, "deletes": n}}}``.
    """
    d = ScaleDistrict(students, backfill_days, seed)
    batches = []
    for number in range(days + 1):
        last_day = school_day(backfill_days + number - 1)
        rundate = (last_day + dt.timedelta(days=1)).isoformat()
        folder = os.path.join(os.fspath(out), "backfill" if number == 0 else f"day{number}")
        files = _BatchFiles(folder, rundate, etag=str(5250000000000000000 + number),
                            modified=f"{rundate}T01:00:00Z", first_version=1_000_000 * (number + 1),
                            only=frozenset(resources) if resources else None)
        if number == 0:
            _backfill(files, d)
        else:
            _day(files, d, number)
        batches.append({"folder": folder, "rundate": rundate, "records": files.close()})
    return batches
