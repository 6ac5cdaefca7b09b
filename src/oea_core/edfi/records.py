"""The records of a generated Ed-Fi district: its descriptors, education organizations, courses, sections,
staff and students, each built as an ODS/API would serve it, and the builder that gives every change its change
version. ``generator`` (``generate_edfi``) drives them over the batches.
"""

from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

NS = "uri://ed-fi.org/"
SCHOOL_YEAR = 2024
SESSION = "2023-2024 Fall Semester"
LEA_ID = 255901
FIRST = ["Ana", "Ben", "Chloe", "Dmitri", "Esi", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
         "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vik", "Wren", "Xia"]
LAST = ["Abbott", "Baptiste", "Castillo", "Dvorak", "Eze", "Fontaine", "Gallo", "Haddad", "Ibarra",
        "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rahman"]
COURSES = [("ALG-1", "Algebra I", "Mathematics"), ("ENG-1", "English I", "English Language and Literature"),
           ("BIO-1", "Biology", "Life and Physical Sciences"), ("HIST-1", "World History", "Social Sciences and History"),
           ("ART-1", "Studio Art", "Fine and Performing Arts")]
GRADES = ["Ninth grade", "Tenth grade", "Eleventh grade", "Twelfth grade"]
DESCRIPTORS = {
    "gradeLevelDescriptors": GRADES,
    "sexDescriptors": ["Female", "Male", "Not Selected"],
    "attendanceEventCategoryDescriptors": ["Excused Absence", "Unexcused Absence", "Tardy"],
    "academicSubjectDescriptors": [c[2] for c in COURSES],
    "gradeTypeDescriptors": ["Grading Period", "Final"],
    "gradingPeriodDescriptors": ["First Six Weeks", "Second Six Weeks"],
    "classroomPositionDescriptors": ["Teacher of Record", "Assistant Teacher"],
    "schoolCategoryDescriptors": ["High School"],
    "localEducationAgencyCategoryDescriptors": ["Independent"],
    "electronicMailTypeDescriptors": ["Work"],
}
# Ed-Fi's dependency order for the generated resources (referenced resources first)
RESOURCE_ORDER = [*DESCRIPTORS, "localEducationAgencies", "schools", "courses", "courseOfferings", "sections",
                  "staffs", "students", "studentSchoolAssociations", "staffSectionAssociations",
                  "studentSectionAssociations", "studentSchoolAttendanceEvents", "grades"]


def descriptor(name: str, code: str) -> str:
    """``uri://ed-fi.org/<Name>Descriptor#<code>``."""
    return f"{NS}{name}Descriptor#{code}"


@dataclass
class Event:
    """One change: an upsert (the record's new state), a delete (``id``, ``changeVersion``, ``keyValues``)
    or a keyChange (``id``, ``changeVersion``, ``oldKeyValues``, ``newKeyValues``)."""

    change_version: int
    resource: str
    kind: str
    record: dict


class Builder:
    """The batch being generated: each change gets the next change version; ``alive`` holds the records now."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.version = 0
        self.batch: list[Event] = []
        self.alive: dict[str, dict[str, dict]] = {r: {} for r in RESOURCE_ORDER}

    def new_id(self, resource: str, key: str) -> str:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"oea-edfi/{self.seed}/{resource}/{key}").hex

    def upsert(self, resource: str, record: dict, carry_version: bool = False) -> dict:
        """The record, upserted with the next change version (also in its body with ``carry_version``)."""
        self.version += 1
        record = copy.deepcopy(record)
        if carry_version:
            record["changeVersion"] = self.version
        record["_etag"] = str(5250000000000000000 + self.version)
        record["_lastModifiedDate"] = f"2024-08-26T00:00:{self.version % 60:02d}Z"
        self.alive[resource][record["id"]] = record
        self.batch.append(Event(self.version, resource, "upsert", record))
        return record

    def delete(self, resource: str, record_id: str, key_values: dict) -> None:
        self.version += 1
        self.alive[resource].pop(record_id, None)
        self.batch.append(Event(self.version, resource, "delete",
                                {"id": record_id, "changeVersion": self.version, "keyValues": key_values}))

    def replay(self, resource: str, record: dict, version: int) -> None:
        """A late delivery: ``record`` as it was at ``version``, older than the record's newest change."""
        self.batch.append(Event(version, resource, "upsert", copy.deepcopy(record)))

    def change_key(self, resource: str, record: dict, old: dict, new: dict, changed: dict) -> None:
        """The record with ``changed`` fields, upserted, and its key change (the same change version, as the
        ODS reports both for one update)."""
        updated = self.upsert(resource, {**record, **changed})
        self.batch.append(Event(self.version, resource, "keyChange", {
            "id": updated["id"], "changeVersion": self.version, "oldKeyValues": old, "newKeyValues": new}))


def ref(**keys) -> dict:
    return dict(keys, link={"rel": "Link", "href": "/ed-fi/x/" + "-".join(str(v) for v in keys.values())})


@dataclass
class Roster:
    """The district's schools and sections, and each enrolled student's ``(schoolId, section keys)``."""

    school_ids: list[int]
    sections: list[tuple[int, dict]] = field(default_factory=list)
    enrolled: dict[str, tuple[int, list[dict]]] = field(default_factory=dict)


def load_district(b: Builder, staff: int, schools: int) -> Roster:
    """The initial load's records before any student: descriptors, the LEA, schools, courses, sections, staff."""
    _descriptors(b)
    _local_education_agency(b)
    roster = Roster([LEA_ID * 1000 + i + 1 for i in range(schools)])
    _schools(b, roster.school_ids)
    _courses(b)
    roster.sections = _sections(b, roster.school_ids)
    _staff(b, staff, roster.sections)
    return roster


def _descriptors(b: Builder) -> None:
    for resource, codes in DESCRIPTORS.items():
        name = resource[0].upper() + resource[1:-len("Descriptors")]
        for code in codes:
            b.upsert(resource, {"id": b.new_id(resource, code), "codeValue": code, "shortDescription": code,
                                "description": code, "namespace": f"{NS}{name}Descriptor"})


def _local_education_agency(b: Builder) -> None:
    b.upsert("localEducationAgencies", {
        "id": b.new_id("lea", str(LEA_ID)), "localEducationAgencyId": LEA_ID, "nameOfInstitution": "Grand Bend ISD",
        "localEducationAgencyCategoryDescriptor": descriptor("LocalEducationAgencyCategory", "Independent"),
        "stateEducationAgencyReference": ref(stateEducationAgencyId=255950),
        "categories": [], "addresses": [{"addressTypeDescriptor": descriptor("AddressType", "Physical"),
                                         "city": "Grand Bend", "postalCode": "78834", "streetNumberName": "1 Main St",
                                         "stateAbbreviationDescriptor": descriptor("StateAbbreviation", "TX"),
                                         "periods": []}],
        "educationOrganizationCategories": [
            {"educationOrganizationCategoryDescriptor": descriptor("EducationOrganizationCategory", "District")}],
        "_ext": {}})


def _schools(b: Builder, school_ids: list[int]) -> None:
    for i, school_id in enumerate(school_ids):
        b.upsert("schools", {
            "id": b.new_id("schools", str(school_id)), "schoolId": school_id,
            "nameOfInstitution": f"Grand Bend High School {i + 1}",
            "localEducationAgencyReference": ref(localEducationAgencyId=LEA_ID),
            "charterApprovalSchoolYearTypeReference": ref(schoolYear=2010 + i),
            "gradeLevels": [{"gradeLevelDescriptor": descriptor("GradeLevel", g)} for g in GRADES],
            "schoolCategories": [{"schoolCategoryDescriptor": descriptor("SchoolCategory", "High School")}],
            "educationOrganizationCategories": [
                {"educationOrganizationCategoryDescriptor": descriptor("EducationOrganizationCategory", "School")}],
            "addresses": [{"addressTypeDescriptor": descriptor("AddressType", "Physical"), "city": "Grand Bend",
                           "postalCode": "78834", "streetNumberName": f"{100 + i} School Rd",
                           "stateAbbreviationDescriptor": descriptor("StateAbbreviation", "TX"),
                           "periods": [{"beginDate": "2001-08-01"}]}],
            "institutionTelephones": [{"institutionTelephoneNumberTypeDescriptor":
                                       descriptor("InstitutionTelephoneNumberType", "Main"),
                                       "telephoneNumber": f"(512) 555-01{i:02d}"}],
            "_ext": {"sample": {"isExemplary": i == 0}}})


def _courses(b: Builder) -> None:
    for code, title, subject in COURSES:
        b.upsert("courses", {
            "id": b.new_id("courses", code), "courseCode": code, "courseTitle": title, "numberOfParts": 1,
            "educationOrganizationReference": ref(educationOrganizationId=LEA_ID),
            "academicSubjectDescriptor": descriptor("AcademicSubject", subject),
            "identificationCodes": [{"courseIdentificationSystemDescriptor": descriptor("CourseIdentificationSystem",
                                                                                        "LEA course code"),
                                     "identificationCode": code}],
            "offeredGradeLevels": [{"gradeLevelDescriptor": descriptor("GradeLevel", g)} for g in GRADES[:2]],
            "maximumAvailableCredits": 1.0})


def _sections(b: Builder, school_ids: list[int]) -> list[tuple[int, dict]]:
    sections = []
    for school_id in school_ids:
        session = {"schoolId": school_id, "schoolYear": SCHOOL_YEAR, "sessionName": SESSION}
        for code, title, _subject in COURSES:
            b.upsert("courseOfferings", {
                "id": b.new_id("courseOfferings", f"{school_id}/{code}"), "localCourseCode": code,
                "localCourseTitle": title, "courseReference": ref(courseCode=code, educationOrganizationId=LEA_ID),
                "schoolReference": ref(schoolId=school_id), "sessionReference": ref(**session),
                "offeredGradeLevels": []})
            for k in range(2):
                ident = f"{school_id}-{code}-{k + 1:02d}"
                section_keys = {"localCourseCode": code, **session, "sectionIdentifier": ident}
                b.upsert("sections", {
                    "id": b.new_id("sections", ident), "sectionIdentifier": ident, "sectionName": f"{title} {k + 1}",
                    "courseOfferingReference": ref(localCourseCode=code, **session),
                    "locationReference": ref(classroomIdentificationCode=f"R{100 + k}", schoolId=school_id),
                    "locationSchoolReference": ref(schoolId=school_id),
                    "classPeriods": [{"classPeriodReference": ref(classPeriodName=f"P{k + 1}", schoolId=school_id)},
                                     {"classPeriodReference": ref(classPeriodName=f"P{k + 3}", schoolId=school_id)}],
                    "availableCredits": 0.5, "sequenceOfCourse": 1})
                sections.append((school_id, section_keys))
    return sections


def _staff(b: Builder, staff: int, sections: list[tuple[int, dict]]) -> None:
    """The staff, and a teacher of record for each section."""
    staff_ids = [f"2070{i:03d}" for i in range(staff)]
    for i, staff_id in enumerate(staff_ids):
        first, last = FIRST[(i * 7 + 3) % len(FIRST)], LAST[(i * 5 + 1) % len(LAST)]
        b.upsert("staffs", {
            "id": b.new_id("staffs", staff_id), "staffUniqueId": staff_id, "firstName": first,
            "lastSurname": last, "birthDate": f"19{70 + i % 20}-0{1 + i % 9}-1{i % 9}",
            "sexDescriptor": descriptor("Sex", "Female" if i % 2 else "Male"),
            "electronicMails": [{"electronicMailTypeDescriptor": descriptor("ElectronicMailType", "Work"),
                                 "electronicMailAddress": f"{first}.{last}@grandbend.example".lower()}],
            "races": [], "_ext": {}})
    for n, (school_id, keys) in enumerate(sections):
        staff_id = staff_ids[n % len(staff_ids)]
        b.upsert("staffSectionAssociations", {
            "id": b.new_id("staffSectionAssociations", f"{staff_id}/{keys['sectionIdentifier']}"),
            "staffReference": ref(staffUniqueId=staff_id), "sectionReference": ref(**keys),
            "beginDate": "2023-08-21",
            "classroomPositionDescriptor": descriptor("ClassroomPosition", "Teacher of Record")})


def enroll(b: Builder, roster: Roster, index: int) -> None:
    """Student ``index``, enrolled at a school and in up to three of its sections."""
    school_ids, sections, enrolled, rng = roster.school_ids, roster.sections, roster.enrolled, b.rng
    student_id = f"604{index:04d}"
    first, last = FIRST[index % len(FIRST)], LAST[(index * 3) % len(LAST)]
    grade = index % len(GRADES)
    b.upsert("students", {
        "id": b.new_id("students", student_id), "studentUniqueId": student_id, "firstName": first,
        "lastSurname": last, "middleName": FIRST[(index + 5) % len(FIRST)],
        "birthDate": f"{2009 - grade}-{1 + index % 12:02d}-{1 + index % 28:02d}", "birthCity": "Grand Bend",
        "birthSexDescriptor": descriptor("Sex", "Female" if index % 2 else "Male"),
        "otherNames": ([{"otherNameTypeDescriptor": descriptor("OtherNameType", "Nickname"),
                         "firstName": first[:2] + "y", "lastSurname": last}] if index % 3 == 0 else []),
        "personalIdentificationDocuments": [], "_ext": {}})
    school_id = school_ids[index % len(school_ids)]
    b.upsert("studentSchoolAssociations", {
        "id": b.new_id("studentSchoolAssociations", f"{student_id}/{school_id}"),
        "studentReference": ref(studentUniqueId=student_id), "schoolReference": ref(schoolId=school_id),
        "calendarReference": ref(calendarCode="IEP", schoolId=school_id, schoolYear=SCHOOL_YEAR),
        "classOfSchoolYearTypeReference": ref(schoolYear=SCHOOL_YEAR + 3 - grade),
        "entryDate": "2023-08-21", "entryGradeLevelDescriptor": descriptor("GradeLevel", GRADES[grade]),
        "alternativeGraduationPlans": [], "educationPlans": []})
    mine = [keys for sid, keys in sections if sid == school_id]
    chosen = rng.sample(mine, k=min(3, len(mine)))
    for keys in chosen:
        b.upsert("studentSectionAssociations", {
            "id": b.new_id("studentSectionAssociations", f"{student_id}/{keys['sectionIdentifier']}"),
            "studentReference": ref(studentUniqueId=student_id), "sectionReference": ref(**keys),
            "beginDate": "2023-08-21", "homeroomIndicator": False})
    enrolled[student_id] = (school_id, chosen)


def add_attendance(b: Builder, enrolled: dict[str, tuple[int, list[dict]]], ids: list[str], day: dt.date) -> None:
    """A few absences on ``day``; one event inserted and deleted within the batch."""
    rng = b.rng
    for student_id in rng.sample(ids, k=max(2, len(ids) // 6)):
        school_id = enrolled[student_id][0]
        event = b.upsert("studentSchoolAttendanceEvents", {
            "id": b.new_id("attendance", f"{student_id}/{day}"),
            "studentReference": ref(studentUniqueId=student_id), "schoolReference": ref(schoolId=school_id),
            "sessionReference": ref(schoolId=school_id, schoolYear=SCHOOL_YEAR, sessionName=SESSION),
            "eventDate": day.isoformat(), "attendanceEventReason": f"Reported by {student_id[-2:]}",
            "attendanceEventCategoryDescriptor": descriptor("AttendanceEventCategory",
                                                            rng.choice(DESCRIPTORS[
                                                                "attendanceEventCategoryDescriptors"]))})
    b.delete("studentSchoolAttendanceEvents", event["id"],
             {"studentUniqueId": event["studentReference"]["studentUniqueId"], "eventDate": day.isoformat()})


def add_grades(b: Builder, enrolled: dict[str, tuple[int, list[dict]]], ids: list[str], batch: int) -> None:
    """A grade for every enrolment (in later batches, a corrected one)."""
    rng = b.rng
    for student_id in ids:
        for keys in enrolled[student_id][1]:
            b.upsert("grades", {
                "id": b.new_id("grades", f"{student_id}/{keys['sectionIdentifier']}"),
                "studentSectionAssociationReference": ref(beginDate="2023-08-21", studentUniqueId=student_id,
                                                          **keys),
                "gradingPeriodReference": ref(gradingPeriodDescriptor=descriptor("GradingPeriod",
                                                                                 "First Six Weeks"),
                                              periodSequence=1, schoolId=keys["schoolId"],
                                              schoolYear=SCHOOL_YEAR),
                "gradeTypeDescriptor": descriptor("GradeType", "Grading Period"),
                "numericGradeEarned": 60 + rng.randrange(40) + batch, "letterGradeEarned": "B",
                "learningStandardGrades": []})
