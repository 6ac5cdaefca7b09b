"""Flattening Ed-Fi records, typing values, and the shipped metadata."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from oea_core import SchemaError
from oea_core.edfi.flatten import (
    MAX_DEPTH,
    coerce,
    descriptor_code,
    flatten_record,
    reference_column,
    role_prefix,
)
from oea_core.edfi.metadata import EdFiMetadata, table_name
from oea_core.schema import PseudoOp

SECTION = {
    "id": "s1", "sectionIdentifier": "ALG-01", "_etag": "5250", "link": {"rel": "self", "href": "/x"},
    "courseOfferingReference": {"localCourseCode": "ALG-1", "schoolId": 7, "schoolYear": 2024,
                                "sessionName": "Fall", "link": {"rel": "CourseOffering", "href": "/y"}},
    "locationReference": {"classroomIdentificationCode": "R1", "schoolId": 7},
    "locationSchoolReference": {"schoolId": 8},
    "educationalEnvironmentDescriptor": "uri://ed-fi.org/EducationalEnvironmentDescriptor#Classroom",
    "classPeriods": [{"classPeriodReference": {"classPeriodName": "P1", "schoolId": 7}},
                     {"classPeriodReference": {"classPeriodName": "P3", "schoolId": 7}}],
    "programs": [],
    "addresses": [{"city": "A", "periods": [{"beginDate": "2020-01-01"}, {"beginDate": "2021-01-01"}]}],
    "_ext": {},
}


def test_references_become_key_columns_and_links_etags_empty_ext_go():
    rows = flatten_record("sections", SECTION)
    main = rows["sections"]
    assert main == [{"id": "s1", "sectionIdentifier": "ALG-01", "localCourseCode": "ALG-1", "schoolId": 7,
                     "schoolYear": 2024, "sessionName": "Fall", "classroomIdentificationCode": "R1",
                     "locationSchoolId": 8, "educationalEnvironmentDescriptor": "Classroom"}]


def test_arrays_become_child_rows_keyed_by_parent_id_and_ordinals():
    rows = flatten_record("sections", SECTION)
    assert rows["sections_classPeriods"] == [
        {"id": "s1", "classPeriods_ordinal": 0, "classPeriodName": "P1", "schoolId": 7},
        {"id": "s1", "classPeriods_ordinal": 1, "classPeriodName": "P3", "schoolId": 7}]
    assert rows["sections_programs"] == []
    assert rows["sections_addresses_periods"] == [
        {"id": "s1", "addresses_ordinal": 0, "periods_ordinal": 0, "beginDate": "2020-01-01"},
        {"id": "s1", "addresses_ordinal": 0, "periods_ordinal": 1, "beginDate": "2021-01-01"}]


def test_non_empty_extensions_and_nested_objects_are_kept():
    rows = flatten_record("schools", {"id": "x", "_ext": {"tx": {"flag": True}},
                                      "geo": {"lat": 1.5, "tags": ["a"]}, "aliases": ["One", "Two"]})
    assert rows["schools"] == [{"id": "x", "_ext": '{"tx": {"flag": true}}', "geo_lat": 1.5, "geo_tags": '["a"]'}]
    assert rows["schools_aliases"] == [{"id": "x", "aliases_ordinal": 0, "value": "One"},
                                       {"id": "x", "aliases_ordinal": 1, "value": "Two"}]


@pytest.mark.parametrize("reference, key, column", [
    ("studentReference", "studentUniqueId", "studentUniqueId"),
    ("parentLocalEducationAgencyReference", "localEducationAgencyId", "parentLocalEducationAgencyId"),
    ("classOfSchoolYearTypeReference", "schoolYear", "classOfSchoolYear"),
    ("studentSectionAssociationReference", "sectionIdentifier", "sectionIdentifier"),
    ("somethingNewReference", "code", "code"),
])
def test_role_named_references_get_the_role_prefix(reference, key, column):
    assert reference_column(reference, key) == column


def test_a_top_level_field_wins_over_a_reference_key():
    record = {"id": "l", "localEducationAgencyId": 1, "educationServiceCenterReference": {"educationServiceCenterId": 9},
              "parentLocalEducationAgencyReference": {"localEducationAgencyId": 2}}
    row = flatten_record("localEducationAgencies", record)["localEducationAgencies"][0]
    assert row["localEducationAgencyId"] == 1 and row["parentLocalEducationAgencyId"] == 2
    assert role_prefix("schoolReference") == ""


def nested(levels: int) -> dict:
    """A record whose objects and arrays nest ``levels`` deep, built without recursion."""
    value: object = {"leaf": 1}
    for level in range(levels - 2):
        value = [value] if level % 3 == 2 else {"a": value}
    return {"id": "deep", "x": value}


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 5000])
def test_a_record_nested_past_the_limit_is_refused_not_recursed(levels):
    with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} levels"):
        flatten_record("schools", nested(levels))
    rows = flatten_record("schools", nested(MAX_DEPTH))
    assert rows["schools"][0]["id"] == "deep"


@pytest.mark.parametrize("ext, kept", [(5, "5"), (True, "true"), ("x", '"x"'), ({"a": [1]}, '{"a": [1]}')])
def test_an_ext_that_is_not_an_object_is_kept_as_json(ext, kept):
    assert flatten_record("schools", {"id": "s", "_ext": ext})["schools"] == [{"id": "s", "_ext": kept}]


def test_descriptor_codes():
    assert descriptor_code("uri://ed-fi.org/GradeLevelDescriptor#Tenth grade") == "Tenth grade"
    assert descriptor_code("uri://tx.gov/X#A#B") == "A#B"
    assert descriptor_code("Tenth grade #1") == "Tenth grade #1"


@pytest.mark.parametrize("value, sql_type, expected", [
    (5, "int", 5), ("5", "int", 5), (5.0, "int", 5), ("2024-01-02", "date", dt.date(2024, 1, 2)),
    ("2024-01-02T10:00:00Z", "date", dt.date(2024, 1, 2)), (True, "boolean", True), ("false", "boolean", False),
    (0.5, "decimal(9,3)", Decimal("0.500")), ({"a": 1}, "string", '{"a": 1}'), (None, "date", None),
    ("2024-01-02T10:00:00+00:00", "timestamp", dt.datetime(2024, 1, 2, 10, tzinfo=dt.timezone.utc)),
])
def test_coerce(value, sql_type, expected):
    assert coerce(value, sql_type) == expected


@pytest.mark.parametrize("value, sql_type", [
    ("x", "int", ), (True, "int"), (2**31, "int"), ("2024-13-01", "date"), ("01/02/2024", "date"),
    ("yes", "boolean"), (0.1234, "decimal(9,3)"), (12345.0, "decimal(5,2)"), ("abc", "decimal(9,2)"),
    ([1.5, 2.5], "double"), ({"a": 1}, "float"),  # an array item that is an array: ValueError, never TypeError
])
def test_coerce_refuses(value, sql_type):
    with pytest.raises(ValueError):
        coerce(value, sql_type)


REQUIRED = ["students", "schools", "localEducationAgencies", "studentSchoolAssociations", "courses",
            "courseOfferings", "sections", "studentSectionAssociations", "staffs", "staffSectionAssociations",
            "studentSchoolAttendanceEvents", "grades"]


def test_shipped_metadata_covers_the_resources_and_protects_people():
    metadata = EdFiMetadata.load()
    assert set(REQUIRED) <= set(metadata.resources())
    assert metadata.supports("gradeLevelDescriptors") and not metadata.supports("bellSchedules")
    for entity, schema in metadata.schemas.items():
        ops = {c.name: c.op for c in schema.columns}
        for column in ("studentUniqueId", "staffUniqueId"):
            if column in ops:
                assert ops[column] in (PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP), entity
        person = entity.startswith(("students", "staffs"))  # a school's phone number is not personal
        for column in ("firstName", "lastSurname", "middleName", "birthDate", "electronicMailAddress",
                       "telephoneNumber", "streetNumberName"):
            if column in ops and person:
                assert ops[column] in (PseudoOp.MASK, PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP), (entity, column)
        if entity.startswith(("students", "staffs", "student", "staff", "grades")):
            assert ops["id"] is not PseudoOp.NO_OP, entity
    assert metadata.schema("students").table == "students"
    assert metadata.schema("gradeLevelDescriptors").table == "grade_level_descriptors"
    assert table_name("studentSchoolAssociations_alternativeGraduationPlans") == \
        "student_school_associations_alternative_graduation_plans"


def test_an_entity_the_metadata_does_not_declare_is_an_error_naming_the_file_and_the_resources():
    metadata = EdFiMetadata.load()
    with pytest.raises(SchemaError, match=r"declares no entity 'bellSchedules'.* add its attributes to the "
                       r"metadata CSV \(declared resources: students, schools, ") as info:
        metadata.schema("bellSchedules")
    assert info.value.table == "bellSchedules" and str(metadata.source) in str(info.value)


@pytest.mark.parametrize("content, message", [
    ("Entity,Attribute\n", "header"),
    ("Entity Name,Attribute Name,Attribute Data Type,Pseudonymization\nstudents,id,string\n", "line 2"),
    ("Entity Name,Attribute Name,Attribute Data Type,Pseudonymization\nstudents,id,string,scramble\n",
     "unknown op 'scramble'"),
    ("Entity Name,Attribute Name,Attribute Data Type,Pseudonymization\nstudents,id,uuid,hash\n", "unknown type"),
    ("Entity Name,Attribute Name,Attribute Data Type,Pseudonymization\nstu dents,id,string,hash\n", "stu dents"),
])
def test_bad_metadata_is_reported_with_the_file(tmp_path, content, message):
    path = tmp_path / "metadata.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SchemaError, match=message) as info:
        EdFiMetadata.load(path)
    assert str(path) in str(info.value)
