"""Ed-Fi metadata in OEA's CSV form: ``Entity Name,Attribute Name,Attribute Data Type,Pseudonymization``.

An entity is a resource (``students``) or one of its arrays (``students_otherNames``,
``schools_addresses_periods``). The module ships ``metadata.csv`` for the resources it
supports; descriptor resources (``gradeLevelDescriptors``) share one built-in schema. Only
declared attributes reach the refined tables, so a field the metadata does not know never
lands unpseudonymized in stage 2p.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SchemaError
from ..schema import TableSchema

HEADER = ("Entity Name", "Attribute Name", "Attribute Data Type", "Pseudonymization")
DEFAULT_METADATA = Path(__file__).with_name("metadata.csv")
DESCRIPTOR_SPEC = [
    ["id", "string", "no-op"],
    ["codeValue", "string", "no-op"],
    ["namespace", "string", "no-op"],
    ["shortDescription", "string", "no-op"],
    ["description", "string", "no-op"],
    ["effectiveBeginDate", "date", "no-op"],
    ["effectiveEndDate", "date", "no-op"],
    ["priorDescriptorId", "int", "no-op"],
    ["_ext", "string", "no-op"],
    ["_lastModifiedDate", "string", "no-op"],
]


def table_name(entity: str) -> str:
    """The lake/SQL table name of an entity: ``studentSchoolAssociations`` -> ``student_school_associations``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", entity).lower()


def is_descriptor(resource: str) -> bool:
    return resource.endswith("Descriptors")


@dataclass(frozen=True)
class EdFiMetadata:
    """Schemas of every entity, by entity name."""

    schemas: dict[str, TableSchema]
    source: str

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> EdFiMetadata:
        """Read a metadata CSV (default: the shipped one); raises SchemaError naming the file and line."""
        path = os.fspath(path or DEFAULT_METADATA)
        if not os.path.exists(path):
            raise SchemaError(f"Ed-Fi metadata file {path} does not exist: give a CSV with columns {HEADER}")
        specs: dict[str, list] = {}
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = tuple(cell.strip() for cell in next(reader, ()))
            if header != HEADER:
                raise SchemaError(f"Ed-Fi metadata file {path}: header {list(header)} should be {list(HEADER)}")
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 4:
                    raise SchemaError(f"Ed-Fi metadata file {path} line {line}: {row} has {len(row)} fields, not 4")
                entity, attribute, type_name, op = (cell.strip() for cell in row)
                if not re.match(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z][A-Za-z0-9]*)*$", entity):
                    raise SchemaError(f"Ed-Fi metadata file {path} line {line}: entity {entity!r} is not "
                                      "<resource> or <resource>_<array>", table=entity)
                specs.setdefault(entity, []).append([attribute, type_name, op])
        schemas = {}
        for entity, spec in specs.items():
            try:
                schemas[entity] = TableSchema.parse(table_name(entity), spec)
            except SchemaError as exc:
                raise SchemaError(f"Ed-Fi metadata file {path}: {exc}", table=entity) from None
        return cls(schemas, path)

    def resources(self) -> list[str]:
        """Declared resources (entities that are not arrays of another), in file order."""
        return [entity for entity in self.schemas if "_" not in entity]

    def entities_of(self, resource: str) -> list[str]:
        """The resource's entity and its declared child entities."""
        if is_descriptor(resource) and resource not in self.schemas:
            return [resource]
        return [e for e in self.schemas if e == resource or e.startswith(resource + "_")]

    def schema(self, entity: str) -> TableSchema:
        """The entity's schema; descriptor resources fall back to the shared descriptor schema.

        Raises SchemaError for an entity the metadata does not declare.
        """
        if entity in self.schemas:
            return self.schemas[entity]
        if is_descriptor(entity):
            return TableSchema.parse(table_name(entity), DESCRIPTOR_SPEC)
        raise SchemaError(f"Ed-Fi metadata file {self.source} declares no entity {entity!r}, and it is not a "
                          f"descriptor resource: add its attributes to the metadata CSV (declared resources: "
                          f"{', '.join(self.resources())})", table=entity)

    def supports(self, resource: str) -> bool:
        return resource in self.schemas or is_descriptor(resource)
