"""Arrow columns as PostgreSQL columns: the type each Arrow type is stored as, and its values for a binary COPY.

A table lands with the same column names and rows as the Delta table, every column typed: integers stay
integers (unsigned ones widen: ``uint32`` to ``bigint``, ``uint64`` to ``numeric(20,0)``), decimals keep their
precision and scale, a timestamp with a time zone (Spark's ``TIMESTAMP``) is ``timestamptz``, one without
(``TIMESTAMP_NTZ``) is ``timestamp``, binary is ``bytea``, and nested values (lists, structs, maps) are ``jsonb``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.types.json import Jsonb

from ..errors import PublishError

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class PgColumn:
    """One column: its name, its PostgreSQL type (DDL), the type name a binary COPY sends, and how the Arrow
    column is made ready for it (a cast, a decode), and each value (``jsonb``)."""

    name: str
    ddl: str
    copy_type: str
    arrow: pa.DataType
    prepare: Callable[[pa.Array], pa.Array] | None = None
    per_value: Callable[[Any], Any] | None = None

    def definition(self) -> sql.Composable:
        return sql.SQL("{} {}").format(sql.Identifier(self.name), sql.SQL(self.ddl))

    def values(self, column: pa.Array | pa.ChunkedArray) -> list[Any]:
        if self.prepare is not None:
            column = self.prepare(column)
        values: list[Any] = column.to_pylist()
        if self.per_value is not None:
            values = [None if v is None else self.per_value(v) for v in values]
        return values


def _cast(to: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    return lambda column: pc.cast(column, to, safe=False)


def _json(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: json.dumps(v, default=str))


_SIMPLE: tuple[tuple[Callable[[pa.DataType], bool], str, str], ...] = (
    (pa.types.is_boolean, "boolean", "bool"),
    (pa.types.is_int16, "smallint", "int2"),
    (pa.types.is_int32, "integer", "int4"),
    (pa.types.is_int64, "bigint", "int8"),
    (pa.types.is_float32, "real", "float4"),
    (pa.types.is_float64, "double precision", "float8"),
    (pa.types.is_date32, "date", "date"),
    (pa.types.is_time, "time", "time"),
    (pa.types.is_duration, "interval", "interval"),
)
_WIDENED: tuple[tuple[Callable[[pa.DataType], bool], str, str, pa.DataType], ...] = (
    (pa.types.is_int8, "smallint", "int2", pa.int16()),
    (pa.types.is_uint8, "smallint", "int2", pa.int16()),
    (pa.types.is_uint16, "integer", "int4", pa.int32()),
    (pa.types.is_uint32, "bigint", "int8", pa.int64()),
    (pa.types.is_uint64, "numeric(20,0)", "numeric", pa.decimal128(20, 0)),
    (pa.types.is_float16, "real", "float4", pa.float32()),
    (pa.types.is_date64, "date", "date", pa.date32()),
    (pa.types.is_null, "text", "text", pa.string()),
)


def pg_column(name: str, arrow: pa.DataType, table: str) -> PgColumn:
    """How column ``name`` of type ``arrow`` (of ``table``, for the error) is stored; PublishError for a type
    that has no PostgreSQL counterpart here."""
    if pa.types.is_dictionary(arrow):
        inner = pg_column(name, arrow.value_type, table)
        decode: Callable[[pa.Array], pa.Array] = lambda column: pc.cast(column, arrow.value_type)
        if inner.prepare is None:
            return PgColumn(name, inner.ddl, inner.copy_type, arrow, decode, inner.per_value)
        prepare = inner.prepare
        return PgColumn(name, inner.ddl, inner.copy_type, arrow, lambda c: prepare(decode(c)), inner.per_value)
    for test, ddl, copy_type in _SIMPLE:
        if test(arrow):
            return PgColumn(name, ddl, copy_type, arrow)
    for test, ddl, copy_type, wider in _WIDENED:
        if test(arrow):
            return PgColumn(name, ddl, copy_type, arrow, _cast(wider))
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return PgColumn(name, "text", "text", arrow, None if pa.types.is_string(arrow) else _cast(pa.string()))
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow) or pa.types.is_fixed_size_binary(arrow) \
            or pa.types.is_binary_view(arrow):
        return PgColumn(name, "bytea", "bytea", arrow, None if pa.types.is_binary(arrow) else _cast(pa.binary()))
    if pa.types.is_decimal(arrow):
        return PgColumn(name, f"numeric({arrow.precision},{arrow.scale})", "numeric", arrow)
    if pa.types.is_timestamp(arrow):
        zoned = arrow.tz is not None
        # nanoseconds: Python's datetime has microseconds, as PostgreSQL
        to_micros = _cast(pa.timestamp("us", arrow.tz)) if arrow.unit == "ns" else None
        return PgColumn(name, "timestamptz" if zoned else "timestamp", "timestamptz" if zoned else "timestamp",
                        arrow, to_micros)
    if pa.types.is_nested(arrow):
        return PgColumn(name, "jsonb", "jsonb", arrow, None, _json)
    raise PublishError(f"column {name!r} of {table} has Arrow type {arrow}, which has no PostgreSQL type here; "
                       "cast it in the lake (a supported type: integers, floats, decimals, strings, dates, "
                       "timestamps, binary, lists, structs, maps)", table=table)


NAME_BYTES = 63  # PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1)


def pg_name(name: str) -> str:
    """``name`` as PostgreSQL keeps it: its first 63 bytes (UTF-8), cut at a character boundary."""
    return name.encode()[:NAME_BYTES].decode(errors="ignore")


def pg_columns(schema: pa.Schema, table: str) -> list[PgColumn]:
    """Every column of ``schema``, in order (see :func:`pg_column`); PublishError naming two columns that
    PostgreSQL would cut to the same name (so a load never fails half-way on "specified more than once")."""
    seen: dict[str, str] = {}
    for field in schema:
        kept = pg_name(field.name)
        if kept in seen:
            raise PublishError(f"{table}: columns {seen[kept]!r} and {field.name!r} would both be {kept!r} in "
                               f"PostgreSQL, which keeps the first {NAME_BYTES} bytes of a name: rename them in the "
                               f"lake so that their first {NAME_BYTES} bytes differ; nothing was loaded", table=table)
        seen[kept] = field.name
    return [pg_column(field.name, field.type, table) for field in schema]
