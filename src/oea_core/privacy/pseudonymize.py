"""Pseudonymization: split a table into its ``p`` form and its ``np`` lookup form.

Pseudonym = lowercase hex SHA-256 of the value's text followed directly by the salt, which
is what OEA's ``sha2(concat(col, salt), 256)`` gives, so existing OEA lakes keep their
pseudonyms. A null or blank value stays null; it never becomes SHA-256 of the salt alone.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..errors import SchemaError
from ..schema import PseudoOp, TableSchema
from .salt import Salt

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PSEUDONYM_SUFFIX = "_pseudonym"
MASK = "*"


def pseudonym(value: object, salt: Salt | str) -> str | None:
    """The pseudonym of one value (reference implementation; Spark does the same in bulk)."""
    if value is None or str(value).strip() == "":
        return None
    text = salt.reveal() if isinstance(salt, Salt) else salt
    return hashlib.sha256((str(value) + text).encode("utf-8")).hexdigest()


def hash_column(column: Column, salt: Salt) -> Column:
    """Spark expression for the pseudonym of ``column``; null and blank give null."""
    from pyspark.sql import functions as F

    text = column.cast("string")
    return F.when(_blank(text), F.lit(None).cast("string")).otherwise(
        F.sha2(F.concat(text, F.lit(salt.reveal())), 256)
    )


_WHITESPACE = " \t\n\x0b\x0c\r"  # Java's \\s


def _blank(text: Column) -> Column:
    # Spark's trim strips spaces only; a tab- or newline-only id must stay null like in pseudonym().
    # btrim with a character set is much cheaper per row than a regular expression.
    from pyspark.sql import functions as F

    return F.btrim(text, F.lit(_WHITESPACE)) == ""


def _check_columns(df: DataFrame, schema: TableSchema, passthrough: tuple[str, ...]) -> None:
    unknown = [c for c in df.columns if c not in schema.names and c not in passthrough]
    if unknown:
        raise SchemaError(
            f"table {schema.table!r} has columns {unknown} that its schema does not declare; "
            f"declare them with an op (declared: {list(schema.names)})",
            table=schema.table,
        )


def to_pseudonymized(df: DataFrame, schema: TableSchema, salt: Salt,
                     passthrough: tuple[str, ...] = ()) -> DataFrame:
    """The ``p`` form: hashed columns become ``<col>_pseudonym``, masked ones ``*``.

    ``passthrough`` names derived, non-identifying columns (such as ``role``) kept as they are.
    """
    from pyspark.sql import functions as F

    _check_columns(df, schema, passthrough)
    out = []
    for spec in schema.columns:
        if spec.name not in df.columns:
            continue
        if spec.op in (PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP):
            out.append(hash_column(F.col(spec.name), salt).alias(spec.name + PSEUDONYM_SUFFIX))
        elif spec.op is PseudoOp.MASK:
            out.append(F.lit(MASK).alias(spec.name))
        else:
            out.append(F.col(spec.name))
    out.extend(F.col(name) for name in passthrough if name in df.columns)
    return df.select(*out)


def lookup_columns(schema: TableSchema) -> list[str]:
    """Columns of the lookup table, in order."""
    names: list[str] = []
    for spec in schema.columns:
        if spec.op is PseudoOp.HASH:
            names += [spec.name, spec.name + PSEUDONYM_SUFFIX]
        elif spec.op in (PseudoOp.MASK, PseudoOp.PARTITION_BY):
            names.append(spec.name)
    return names


def identity_columns(schema: TableSchema) -> list[str]:
    """The raw columns a lookup is built from (hashed with lookup, masked, partition keys); in order."""
    return [c.name for c in schema.columns if c.op in (PseudoOp.HASH, PseudoOp.MASK, PseudoOp.PARTITION_BY)] \
        if schema.with_ops(PseudoOp.HASH) else []


def to_lookup(df: DataFrame, schema: TableSchema, salt: Salt) -> DataFrame | None:
    """The ``np`` lookup form: one row per distinct identity; None when nothing is hashed with lookup."""
    from pyspark.sql import functions as F

    hashed = schema.with_ops(PseudoOp.HASH)
    if not hashed:
        return None
    kept = []
    for spec in schema.columns:
        if spec.op is PseudoOp.HASH:
            kept.append(F.when(_blank(F.col(spec.name).cast("string")), None).otherwise(F.col(spec.name))
                        .alias(spec.name))
        elif spec.op in (PseudoOp.MASK, PseudoOp.PARTITION_BY):
            kept.append(F.col(spec.name))
    first, *others = [F.col(spec.name).isNotNull() for spec in hashed]
    any_identity = first
    for present in others:
        any_identity = any_identity | present
    # distinct identities first, then hash: one SHA-256 per identity, not per row
    distinct = df.select(*kept).where(any_identity).dropDuplicates()
    out = []
    for spec in schema.columns:
        if spec.op is PseudoOp.HASH:
            out += [F.col(spec.name), hash_column(F.col(spec.name), salt).alias(spec.name + PSEUDONYM_SUFFIX)]
        elif spec.op in (PseudoOp.MASK, PseudoOp.PARTITION_BY):
            out.append(F.col(spec.name))
    return distinct.select(*out)
