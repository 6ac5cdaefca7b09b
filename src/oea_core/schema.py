"""Table schemas in OEA's ``[column, type, op]`` form, checked when a module definition loads."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import SchemaError

_UNSAFE_COLUMN_CHARS = re.compile(r"[ ,;{}()\n\t=]+")
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
TYPES = {
    "string": "string",
    "int": "int",
    "integer": "int",
    "long": "bigint",
    "bigint": "bigint",
    "short": "smallint",
    "double": "double",
    "float": "float",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp",
}


class PseudoOp(enum.Enum):
    """What pseudonymization does with a column (OEA's ops and their short forms)."""

    HASH = "hash"
    HASH_NO_LOOKUP = "hash-no-lookup"
    MASK = "mask"
    PARTITION_BY = "partition-by"
    NO_OP = "no-op"

    @classmethod
    def parse(cls, text: str) -> PseudoOp:
        """``hash``/``h``, ``hash-no-lookup``/``hnl``, ``mask``/``m``, ``partition-by``, ``no-op``/``x``."""
        op = _OP_ALIASES.get(str(text).strip().lower())
        if op is None:
            raise ValueError(text)
        return op


_OP_ALIASES = {
    "hash": PseudoOp.HASH, "h": PseudoOp.HASH,
    "hash-no-lookup": PseudoOp.HASH_NO_LOOKUP, "hnl": PseudoOp.HASH_NO_LOOKUP,
    "mask": PseudoOp.MASK, "m": PseudoOp.MASK,
    "partition-by": PseudoOp.PARTITION_BY, "p": PseudoOp.PARTITION_BY,
    "no-op": PseudoOp.NO_OP, "x": PseudoOp.NO_OP,
}


def safe_column_name(name: str) -> str:
    """OEA's rule: every run of `` ,;{}()\\n\\t=`` becomes ``_`` (Parquet/Delta-safe)."""
    return _UNSAFE_COLUMN_CHARS.sub("_", name.strip())


def safe_table_name(name: str) -> str:
    """Hyphens become underscores: ``daily-participation`` -> ``daily_participation``."""
    return name.replace("-", "_")


def spark_type(type_name: str) -> str:
    """The Spark SQL type for a schema type name; raises ValueError when unknown."""
    text = type_name.strip().lower()
    if text in TYPES:
        return TYPES[text]
    match = _DECIMAL.match(text)
    if match and 0 < int(match.group(1)) <= 38 and int(match.group(2)) <= int(match.group(1)):
        return f"decimal({match.group(1)},{match.group(2)})"
    raise ValueError(type_name)


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its safe name, Spark SQL type and pseudonymization op."""

    name: str
    type: str
    op: PseudoOp


@dataclass(frozen=True)
class TableSchema:
    """A table's columns in source order, as declared by its module."""

    table: str
    columns: tuple[ColumnSpec, ...]

    @classmethod
    def parse(cls, table: str, spec: list) -> TableSchema:
        """Check an OEA ``[[column, type, op], ...]`` spec; raises SchemaError naming table and column."""
        if not spec:
            raise SchemaError(f"table {table!r} has no columns: give [column, type, op] rows", table=table)
        columns: list[ColumnSpec] = []
        seen: set[str] = set()
        for index, row in enumerate(spec):
            if not isinstance(row, (list, tuple)) or len(row) != 3:
                raise SchemaError(
                    f"table {table!r} row {index}: {row!r} is not [column, type, op]", table=table
                )
            column, type_name, op_text = (str(part) for part in row)
            name = safe_column_name(column)
            if not name or name in seen:
                raise SchemaError(
                    f"table {table!r} column {column!r} is empty or repeated", table=table, column=column
                )
            seen.add(name)
            try:
                sql_type = spark_type(type_name)
            except ValueError:
                raise SchemaError(
                    f"table {table!r} column {column!r}: unknown type {type_name!r}; "
                    f"use one of {', '.join(sorted(TYPES))} or decimal(p,s)",
                    table=table, column=column,
                ) from None
            try:
                op = PseudoOp.parse(op_text)
            except ValueError:
                raise SchemaError(
                    f"table {table!r} column {column!r}: unknown op {op_text!r}; "
                    f"use one of {', '.join(sorted(_OP_ALIASES))}",
                    table=table, column=column,
                ) from None
            columns.append(ColumnSpec(name, sql_type, op))
        return cls(table, tuple(columns))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def with_ops(self, *ops: PseudoOp) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if c.op in ops)
