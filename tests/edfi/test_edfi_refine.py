"""Ed-Fi refine's schema choice and privacy rules (pure functions; the Spark side is in test_edfi_ingest)."""

from __future__ import annotations

import pytest

from oea_core.edfi.metadata import EdFiMetadata
from oea_core.edfi.privacy import describes_person, rule_op
from oea_core.edfi.refine import entity_specs, infer_type, value_kind
from oea_core.schema import PseudoOp

H, HNL, M, X = PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP, PseudoOp.MASK, PseudoOp.NO_OP


@pytest.mark.parametrize(("resource", "entity", "column", "sql_type", "expected"), [
    ("students", "students", "studentUniqueId", "string", H),  # the person's own id: hashed with a lookup
    ("studentAssessments", "studentAssessments", "studentUniqueId", "string", HNL),
    ("staffEducationOrganizationEmploymentAssociations", "staffEducationOrganizationEmploymentAssociations",
     "staffUniqueId", "string", HNL),
    ("students", "students", "id", "string", H),
    ("studentAssessments", "studentAssessments", "id", "string", HNL),
    ("calendars", "calendars", "id", "string", X),
    ("contacts", "contacts_addresses", "streetNumberName", "string", M),
    ("schools", "schools_x", "postalCode", "string", M),
    ("studentEducationOrganizationAssociations", "studentEducationOrganizationAssociations_electronicMails",
     "electronicMailAddress", "string", M),
    ("staffs", "staffs_telephones", "telephoneNumber", "string", M),
    ("students", "students_identificationCodes", "identificationCode", "string", M),
    ("students", "students", "birthDate", "date", M),
    ("students", "students", "firstName", "string", M),
    ("students", "students_otherNames", "lastSurname", "string", M),
    ("schools", "schools", "ssn", "string", M),
    ("students", "students", "loginId", "string", M),
    ("students", "students", "favoriteColor", "string", M),  # unknown meaning, about a person
    ("studentAssessments", "studentAssessments", "_ext", "string", M),
    ("studentAssessments", "studentAssessments", "sexDescriptor", "string", X),
    ("studentAssessments", "studentAssessments", "administrationDate", "date", X),
    ("studentAssessments", "studentAssessments_scoreResults", "result", "string", X),
    ("studentAssessments", "studentAssessments", "proctorRemark", "string", M),
    ("studentAssessments", "studentAssessments", "schoolYear", "bigint", X),
    ("calendars", "calendars", "calendarCode", "string", X),
    ("calendars", "calendars", "comment", "string", X),  # not about a person: kept
    ("schools", "schools", "nameOfInstitution", "string", X),
    ("sessions", "sessions", "sessionName", "string", X),
])
def test_privacy_rules(resource, entity, column, sql_type, expected):
    person = describes_person(resource, frozenset({"studentUniqueId"} if resource.startswith("student") else ()))
    assert rule_op(resource, entity, column, sql_type, person) is expected


def test_a_resource_describes_a_person_when_it_names_one():
    assert describes_person("students", frozenset())
    assert describes_person("studentAssessments", frozenset({"id", "studentUniqueId"}))
    assert not describes_person("calendars", frozenset({"id", "schoolId"}))


@pytest.mark.parametrize(("column", "kinds", "expected"), [
    ("schoolId", {"int"}, "bigint"), ("score", {"int", "float"}, "double"), ("flag", {"bool"}, "boolean"),
    ("beginDate", {"date"}, "date"), ("when", {"date", "str"}, "string"), ("x", {"int", "str"}, "string"),
    ("periods_ordinal", {"int"}, "int"), ("id", {"str"}, "string"), ("_ext", {"str"}, "string"),
])
def test_infer_type(column, kinds, expected):
    assert infer_type(column, kinds) == expected


def test_value_kind_tells_dates_from_text_and_bools_from_ints():
    assert [value_kind(v) for v in (True, 3, 2.5, "2024-08-01", "2024-08-01T00:00:00", "x")] == \
        ["bool", "int", "float", "date", "str", "str"]


def test_entity_specs_order_of_authority():
    metadata = EdFiMetadata.load()
    observed = {"calendars": {"id": {"str"}, "schoolId": {"int"}, "weight": {"int"}},
                "schools": {"id": {"str"}, "schoolId": {"str", "int"}, "mascot": {"str"}}}
    previous = {"calendars": [["id", "string", "no-op"], ["weight", "double", "no-op"]]}
    api = {"calendars": {"schoolId": "int"}}
    calendars = entity_specs(metadata, "calendars", observed, previous, api)["calendars"]
    # earlier type kept (double, though only ints now), the API's type over inference (int, not bigint)
    assert calendars == [["id", "string", "no-op"], ["weight", "double", "no-op"], ["schoolId", "int", "no-op"]]
    assert entity_specs(metadata, "calendars", observed, {}, {})["calendars"][1] == ["schoolId", "bigint", "no-op"]
    schools = entity_specs(metadata, "schools", observed, {}, {})["schools"]
    declared = [[c.name, c.type, c.op.value] for c in metadata.schemas["schools"].columns]
    assert schools[: len(declared)] == declared  # the CSV wins: schoolId stays its declared int
    assert schools[len(declared):] == [["mascot", "string", "no-op"]]
