"""Flattening Ed-Fi records into a main row and child-table rows.

- ``xReference`` objects become their key columns (``studentReference.studentUniqueId`` ->
  ``studentUniqueId``). A role-named reference prefixes its keys with the role, as the Ed-Fi
  ODS does (``parentLocalEducationAgencyReference.localEducationAgencyId`` ->
  ``parentLocalEducationAgencyId``, ``classOfSchoolYearTypeReference.schoolYear`` ->
  ``classOfSchoolYear``). The same key in two plain references is one unified key.
- Descriptors (``uri://ed-fi.org/GradeLevelDescriptor#Tenth grade``) become their code value.
- Arrays become child entities ``<entity>_<array>``, keyed by the root record's ``id`` and an
  ordinal per array level (``<array>_ordinal``), so no child row is lost.
- ``_etag`` and links are dropped; an empty ``_ext`` is dropped, a non-empty one kept as JSON.
- Other nested objects become ``<object>_<field>`` columns.
- A record nested deeper than ``MAX_DEPTH`` levels is refused with a ValueError (ingest sets such
  records aside before they reach the current state; this guard keeps flattening free of deep recursion).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Iterable

DROPPED = frozenset({"_etag", "link"})
EXT = "_ext"
ORDINAL = "_ordinal"
REFERENCE = "Reference"
MAX_DEPTH = 64  # levels of objects and arrays in one record; real Ed-Fi records nest fewer than 10

# Ed-Fi entity names that references point to; a reference named <role><Entity>Reference is role-named.
ENTITIES = frozenset({
    "academicWeek", "assessment", "bellSchedule", "calendar", "calendarDate", "classPeriod", "cohort",
    "communityOrganization", "communityProvider", "competencyObjective", "course", "courseOffering",
    "credential", "discipline", "disciplineIncident", "educationOrganization", "educationServiceCenter",
    "feederSchool", "grade", "gradebookEntry", "gradingPeriod", "graduationPlan", "intervention",
    "learningStandard", "localEducationAgency", "location", "objectiveAssessment", "organizationDepartment",
    "parent", "contact", "person", "program", "reportCard", "school", "schoolYearType", "section", "session",
    "staff", "stateEducationAgency", "student", "studentAssessment", "studentSchoolAssociation",
    "studentSectionAssociation", "studentGradebookEntry", "survey", "surveyResponse",
})
_DESCRIPTOR_URI = re.compile(r"^[a-z][a-z0-9+.-]*://[^#]*#", re.IGNORECASE)


def descriptor_code(value: str) -> str:
    """``uri://ed-fi.org/GradeLevelDescriptor#Tenth grade`` -> ``Tenth grade``; other text unchanged."""
    match = _DESCRIPTOR_URI.match(value)
    return value[match.end():] if match else value


def role_prefix(reference_key: str) -> str:
    """The role of a role-named reference (``parentLocalEducationAgencyReference`` -> ``parent``), or ''."""
    name = reference_key[: -len(REFERENCE)]
    if name in ENTITIES:
        return ""
    best = ""
    for entity in ENTITIES:
        suffix = entity[0].upper() + entity[1:]
        if name.endswith(suffix) and len(suffix) > len(best) and len(name) > len(suffix):
            best = suffix
    return name[: -len(best)] if best else ""


def reference_column(reference_key: str, key: str) -> str:
    """The column a reference's key becomes: the key, or role + Key for a role-named reference."""
    role = role_prefix(reference_key)
    return role + key[0].upper() + key[1:] if role else key


def _is_reference(key: str, value: object) -> bool:
    return isinstance(value, dict) and key.endswith(REFERENCE) and len(key) > len(REFERENCE)


def _scalar(value: object) -> object:
    return descriptor_code(value) if isinstance(value, str) else value


def flatten_record(entity: str, record: dict) -> dict[str, list[dict]]:
    """``{entity: [main row], entity_array: [child rows], ...}`` for one record of ``entity``.

    Raises ValueError for a record nested deeper than ``MAX_DEPTH`` levels.
    """
    out: dict[str, list[dict]] = {}
    root_id = record.get("id")
    _flatten_into(entity, record, {"id": root_id} if root_id is not None else {}, out, 1)
    return out


def _too_deep(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"record is nested more than {MAX_DEPTH} levels deep")


def _check_depth(value: object, depth: int) -> object:
    """``value`` (at level ``depth``, kept whole as JSON) after checking, without recursion, that nothing
    in it nests past ``MAX_DEPTH``. It is usually an object or array; ``_ext`` may be any JSON value."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        _too_deep(level)
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return value


def _flatten_into(entity: str, obj: dict, keys: dict, out: dict[str, list[dict]], depth: int) -> None:
    _too_deep(depth)
    row = dict(keys)
    children: list[tuple[str, list]] = []
    # scalars first, so a top-level field wins over a reference key of the same name
    for key, value in obj.items():
        if key in DROPPED or _is_reference(key, value) or isinstance(value, (dict, list)):
            continue
        row.setdefault(key, _scalar(value))
    for key, value in obj.items():
        if key in DROPPED:
            continue
        if key == EXT:
            if value:
                row[EXT] = json.dumps(_check_depth(value, depth + 1), sort_keys=True, ensure_ascii=False)
        elif _is_reference(key, value):
            for ref_key, ref_value in value.items():
                if ref_key in DROPPED or isinstance(ref_value, (dict, list)):
                    continue
                column = reference_column(key, ref_key)
                if row.get(column) is None:
                    row[column] = _scalar(ref_value)
        elif isinstance(value, dict):
            _flatten_object(key, value, row, depth + 1)
        elif isinstance(value, list):
            children.append((key, value))
    out.setdefault(entity, []).append(row)
    for key, items in children:
        child_entity = f"{entity}_{key}"
        out.setdefault(child_entity, [])
        for index, item in enumerate(items):
            child_keys = {**keys, f"{key}{ORDINAL}": index}
            if isinstance(item, dict):
                _flatten_into(child_entity, item, child_keys, out, depth + 2)
            else:
                if isinstance(item, list):
                    _check_depth(item, depth + 2)
                out[child_entity].append({**child_keys, "value": _scalar(item)})


def _flatten_object(prefix: str, obj: dict, row: dict, depth: int) -> None:
    _too_deep(depth)
    for key, value in obj.items():
        if key in DROPPED:
            continue
        column = f"{prefix}_{key}"
        if isinstance(value, dict):
            _flatten_object(column, value, row, depth + 1)
        elif isinstance(value, list):
            row[column] = json.dumps(_check_depth(value, depth + 1), sort_keys=True, ensure_ascii=False)
        else:
            row[column] = _scalar(value)


def coerce(value: object, sql_type: str) -> object:
    """``value`` as the Python value of Spark type ``sql_type``; raises ValueError when it cannot be."""
    import datetime as dt
    from decimal import Decimal, InvalidOperation

    if value is None:
        return None
    if sql_type == "string":
        if isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if sql_type in ("int", "bigint", "smallint"):
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        number = int(value) if isinstance(value, (int, str)) else None
        if number is None:
            raise ValueError(value)
        limit = {"int": 2**31, "bigint": 2**63, "smallint": 2**15}[sql_type]
        if not -limit <= number < limit:
            raise ValueError(value)
        return number
    if sql_type in ("double", "float"):
        # an array item that is itself an array reaches here as a list: float() would raise TypeError
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(value)
        return float(value)
    if sql_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(value)
    if sql_type == "date":
        if not isinstance(value, str):
            raise ValueError(value)
        return dt.date.fromisoformat(value[:10]) if len(value) == 10 or value[10:11] == "T" else _fail(value)
    if sql_type == "timestamp":
        if not isinstance(value, str):
            raise ValueError(value)
        return dt.datetime.fromisoformat(value)
    if sql_type.startswith("decimal("):
        precision, scale = (int(p) for p in sql_type[8:-1].split(","))
        try:
            decimal = Decimal(str(value)) if not isinstance(value, bool) else _fail(value)
        except InvalidOperation:
            raise ValueError(value) from None
        quantized = decimal.quantize(Decimal(1).scaleb(-scale))
        if quantized != decimal or len(quantized.as_tuple().digits) > precision:
            raise ValueError(value)
        return quantized
    raise ValueError(f"unknown type {sql_type}")


def _fail(value: object) -> NoReturn:
    raise ValueError(value)
