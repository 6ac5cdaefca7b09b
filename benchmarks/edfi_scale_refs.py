"""Reference engines for ``edfi_scale.py``: bare Spark and DuckDB doing the Ed-Fi work without ``oea_core``.

Per resource: read the change files (JSON Lines) of the batches given, keep the latest change per id
(the batch's rundate, then ``changeVersion``: upserts carry none, so a delete wins within its day), drop
the deleted, flatten into the same tables the module refines (main table, one table per array, nested
arrays below them, with ``<array>_ordinal`` keys), decode descriptors, cast to the metadata's types,
pseudonymize as the metadata says (SHA-256 of value + salt, masks, lookups), and write Parquet.

The read schema comes from a sample of each batch's first file (what a tuned job would give, instead of
inferring over every record); sampling is timed with the rest. Flattening rules are the module's
(references become their key columns, role-named ones prefixed, objects become ``<object>_<field>``) and
are derived from the sample's shape here, not by calling ``oea_core``'s flattening.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from dataclasses import dataclass

from oea_core.edfi.flatten import reference_column
from oea_core.schema import PseudoOp

RUNDATE = r"rundate=(\d{4}-\d{2}-\d{2})"
DESCRIPTOR_URI = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^#]*#"
SAMPLE_LINES = 2000


# the shape of the records, and the read schema ------------------------------------------------------
def merge_shape(a, b):
    """Shapes: a dict of shapes, ``[item shape]`` for a list (``[]`` when never seen non-empty), a type name."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge_shape(out.get(key), value)
        return out
    if isinstance(a, list) and isinstance(b, list):
        item = merge_shape(a[0] if a else None, b[0] if b else None)
        return [item] if item is not None else []
    if a == b:
        return a
    return "double" if {a, b} == {"bigint", "double"} else "string"


def shape_of(value):
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        item = None
        for element in value:
            item = merge_shape(item, shape_of(element))
        return [item] if item is not None else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    return None if value is None else "string"


def sample_shape(files: list[str]) -> dict:
    """The merged shape of the first ``SAMPLE_LINES`` records of each file."""
    import json

    shape: dict = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in itertools.islice(handle, SAMPLE_LINES):
                if line.strip():
                    shape = merge_shape(shape, shape_of(json.loads(line)))
    return shape


def spark_type(shape):
    from pyspark.sql import types as T

    if isinstance(shape, dict):
        if not shape:
            return T.StringType()  # an object that is always empty: its JSON text
        return T.StructType([T.StructField(k, spark_type(v)) for k, v in shape.items()])
    if isinstance(shape, list):
        return T.ArrayType(spark_type(shape[0]) if shape else T.StringType())
    return {"string": T.StringType(), "bigint": T.LongType(), "double": T.DoubleType(),
            "boolean": T.BooleanType(), None: T.StringType()}[shape]


def duckdb_type(shape) -> str:
    if isinstance(shape, dict):
        if not shape:
            return "JSON"
        return "STRUCT(" + ", ".join(f'"{k}" {duckdb_type(v)}' for k, v in shape.items()) + ")"
    if isinstance(shape, list):
        return (duckdb_type(shape[0]) if shape else "JSON") + "[]"
    return {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN", None: "VARCHAR"}[shape]


# the flattening plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    op: PseudoOp
    sources: tuple  # ("id",) | ("ordinal", level) | ("ext", path) | ("value",) | ("path", path, path, ...)


@dataclass(frozen=True)
class Entity:
    name: str
    table: str
    arrays: tuple[str, ...]  # array keys from the root record down to this entity's items
    columns: tuple[Column, ...]
    present: bool  # False: the records never hold this array (an empty table is written)


def _item_sources(shape: dict) -> dict[str, list]:
    """Column -> candidate paths in an item of ``shape``, by the module's flattening rules (first non-null wins)."""
    sources: dict[str, list] = {}
    for key, value in shape.items():
        if key in ("_etag", "link") or isinstance(value, (dict, list)):
            continue
        sources.setdefault(key, []).append((key,))
    for key, value in shape.items():
        if key == "_ext":
            sources["_ext"] = [("ext", (key,)) if value else None]
        elif isinstance(value, dict) and key.endswith("Reference") and len(key) > len("Reference"):
            for ref_key, ref_value in value.items():
                if ref_key != "link" and not isinstance(ref_value, (dict, list)):
                    sources.setdefault(reference_column(key, ref_key), []).append((key, ref_key))
        elif isinstance(value, dict) and key != "link":
            _object_sources(key, (key,), value, sources)
    return sources


def _object_sources(prefix: str, path: tuple, shape: dict, sources: dict) -> None:
    for key, value in shape.items():
        if key == "link":
            continue
        if isinstance(value, dict):
            _object_sources(f"{prefix}_{key}", (*path, key), value, sources)
        elif not isinstance(value, list):  # an array inside an object is kept as JSON by the module: not here
            sources[f"{prefix}_{key}"] = [(*path, key)]


def plan(metadata, resource: str, shape: dict) -> list[Entity]:
    """The entities of ``resource`` the module refines, with where each column comes from."""
    entities = []
    for entity in metadata.entities_of(resource):
        schema = metadata.schema(entity)
        arrays = tuple(entity.split("_")[1:])
        item, present = shape, True
        for key in arrays:
            present = present and isinstance(item, dict) and key in item
            item = (item.get(key) or [None])[0] if isinstance(item, dict) else None
        sources = _item_sources(item) if isinstance(item, dict) else {}
        columns = []
        for spec in schema.columns:
            if spec.name == "id":
                found: tuple = ("id",)
            elif spec.name.endswith("_ordinal") and spec.name[: -len("_ordinal")] in arrays:
                found = ("ordinal", arrays.index(spec.name[: -len("_ordinal")]))
            elif spec.name == "value" and item is not None and not isinstance(item, dict):
                found = ("value",)
            else:
                paths = [p for p in sources.get(spec.name, []) if p is not None]
                found = paths[0] if paths and paths[0][0] == "ext" else ("path", *paths) if paths else ()
            columns.append(Column(spec.name, spec.type, spec.op, found))
        entities.append(Entity(entity, schema.table, arrays, tuple(columns), present))
    return entities


def change_files(roots: list[str], resource: str, kind: str) -> list[str]:
    return sorted(f for root in roots
                  for f in glob.glob(os.path.join(root, resource, "incremental", kind, "rundate=*", "*.json")))


def resources(roots: list[str]) -> list[str]:
    return sorted({name for root in roots for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))})


def first_files(files: list[str]) -> list[str]:
    """The first file of each rundate (the sample)."""
    seen, out = set(), []
    for path in files:
        folder = os.path.dirname(path)
        if folder not in seen:
            seen.add(folder)
            out.append(path)
    return out


def lookup_columns(entity: Entity) -> list[Column]:
    if not any(c.op is PseudoOp.HASH for c in entity.columns):
        return []
    return [c for c in entity.columns if c.op in (PseudoOp.HASH, PseudoOp.MASK, PseudoOp.PARTITION_BY)]


# bare Spark ---------------------------------------------------------------------------------------
def spark_resource(spark, roots: list[str], resource: str, metadata, salt: str, out: str) -> dict[str, str]:
    """Apply the change files of ``resource`` and write its flat tables under ``out``; their folders by table."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    upserts, deletes = change_files(roots, resource, "upserts"), change_files(roots, resource, "deletes")
    shape = sample_shape(first_files(upserts))
    schema = spark_type({k: {} if k == "_ext" else v for k, v in shape.items()})  # _ext: kept as JSON text
    rundate = F.regexp_extract(F.input_file_name(), RUNDATE, 1).alias("_rundate")
    changes = spark.read.schema(schema).json(upserts).select(
        "id", rundate, F.lit(None).cast("long").alias("_cv"), F.lit(False).alias("_del"),
        F.struct(*[F.col(f"`{name}`") for name in schema.fieldNames()]).alias("rec"))
    if deletes:
        gone = spark.read.schema("id string, changeVersion long").json(deletes).select(
            "id", rundate, F.col("changeVersion").alias("_cv"), F.lit(True).alias("_del"),
            F.lit(None).cast(changes.schema["rec"].dataType).alias("rec"))
        changes = changes.unionByName(gone)
    newest = Window.partitionBy("id").orderBy(F.col("_rundate").desc(), F.col("_cv").desc_nulls_last())
    state = (changes.withColumn("_n", F.row_number().over(newest)).where((F.col("_n") == 1) & ~F.col("_del"))
             .select("id", "rec"))
    entities = plan(metadata, resource, shape)
    if len(entities) > 1:
        state = state.persist(StorageLevel.MEMORY_AND_DISK)
    written = {}
    try:
        for entity in entities:
            rows = state.select("id", F.col("rec").alias("_item0"))
            if not entity.present:
                rows = rows.select("id", *[F.lit(0).alias(f"_ord{n}") for n in range(len(entity.arrays))],
                                   F.lit(None).alias(f"_item{len(entity.arrays)}")).where(F.lit(False))
            for level, key in enumerate(entity.arrays if entity.present else ()):
                rows = rows.select("*", F.posexplode(F.col(f"_item{level}.`{key}`")).alias(
                    f"_ord{level}", f"_item{level + 1}"))
            item = f"_item{len(entity.arrays)}"
            table = _spark_columns(rows, entity, item, salt)
            table.write.mode("overwrite").parquet(os.path.join(out, entity.table))
            written[entity.table] = os.path.join(out, entity.table)
            lookup = lookup_columns(entity)
            if lookup:
                typed = rows.select(*[_spark_value(c, item).alias(c.name) for c in lookup]).where(
                    F.coalesce(*[F.col(c.name) for c in lookup if c.op is PseudoOp.HASH]).isNotNull()).distinct()
                typed.select(*[x for c in lookup for x in (
                    [F.col(c.name), _spark_hash(F.col(c.name), salt).alias(c.name + "_pseudonym")]
                    if c.op is PseudoOp.HASH else [F.col(c.name)])]).write.mode("overwrite").parquet(
                    os.path.join(out, entity.table + "_lookup"))
    finally:
        state.unpersist()
    return written


def _spark_value(column: Column, item: str):
    from pyspark.sql import functions as F

    kind = column.sources[0] if column.sources else None
    if kind == "id":
        value = F.col("id")
    elif kind == "ordinal":
        value = F.col(f"_ord{column.sources[1]}")
    elif kind == "value":
        value = F.col(item)
    elif kind == "ext":
        value = F.when(F.col(f"{item}._ext").isin("{}", ""), None).otherwise(F.col(f"{item}._ext"))  # JSON text
    elif kind == "path":
        values = [F.col(item + "." + ".".join(f"`{k}`" for k in path)) for path in column.sources[1:]]
        value = values[0] if len(values) == 1 else F.coalesce(*values)
        if column.name.endswith("Descriptor"):
            value = F.regexp_replace(value, DESCRIPTOR_URI, "")
    else:
        value = F.lit(None)
    return value.cast(column.sql_type)


def _spark_hash(value, salt: str):
    from pyspark.sql import functions as F

    text = value.cast("string")
    return F.when(F.trim(text) == "", None).otherwise(F.sha2(F.concat(text, F.lit(salt)), 256))


def _spark_columns(rows, entity: Entity, item: str, salt: str):
    from pyspark.sql import functions as F

    out = []
    for column in entity.columns:
        value = _spark_value(column, item)
        if column.op in (PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP):
            out.append(_spark_hash(value, salt).alias(column.name + "_pseudonym"))
        elif column.op is PseudoOp.MASK:
            out.append(F.lit("*").alias(column.name))
        else:
            out.append(value.alias(column.name))
    return rows.select(*out)


# DuckDB -------------------------------------------------------------------------------------------
_DUCK_TYPES = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "smallint": "SMALLINT", "date": "DATE",
               "boolean": "BOOLEAN", "double": "DOUBLE", "float": "FLOAT", "timestamp": "TIMESTAMP"}


def _duck_type(sql_type: str) -> str:
    return _DUCK_TYPES.get(sql_type) or re.sub(r"^decimal", "DECIMAL", sql_type)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_resource(con, roots: list[str], resource: str, metadata, salt: str, out: str) -> dict[str, int]:
    """Like :func:`spark_resource`, with DuckDB; rows per table."""
    upserts, deletes = change_files(roots, resource, "upserts"), change_files(roots, resource, "deletes")
    shape = sample_shape(first_files(upserts))
    columns = "{" + ", ".join(f"{_quote(k)}: {_quote(duckdb_type({} if k == '_ext' else v))}"
                              for k, v in shape.items()) + "}"
    files = "[" + ", ".join(_quote(f) for f in upserts) + "]"
    record = "{" + ", ".join(f"{_quote(k)}: u.\"{k}\"" for k in shape) + "}"
    changes = (f"SELECT id, regexp_extract(filename, '{RUNDATE}', 1) AS rundate, NULL::BIGINT AS cv, false AS del, "
               f"{record} AS rec FROM read_json({files}, format = 'newline_delimited', columns = {columns}, "
               "filename = true) u")
    if deletes:
        gone = "[" + ", ".join(_quote(f) for f in deletes) + "]"
        changes += (f" UNION ALL SELECT id, regexp_extract(filename, '{RUNDATE}', 1), changeVersion, true, NULL "
                    f"FROM read_json({gone}, format = 'newline_delimited', "
                    "columns = {'id': 'VARCHAR', 'changeVersion': 'BIGINT'}, filename = true)")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE state AS SELECT id, rec FROM (
        SELECT *, row_number() OVER (PARTITION BY id ORDER BY rundate DESC, cv DESC NULLS LAST) AS n
        FROM ({changes})) WHERE n = 1 AND NOT del""")
    written = {}
    for entity in plan(metadata, resource, shape):
        rows = "SELECT id, rec AS _item0 FROM state"
        if not entity.present:
            ordinals = "".join(f", 0 AS _ord{n}" for n in range(len(entity.arrays)))
            rows = f"SELECT id{ordinals}, NULL AS _item{len(entity.arrays)} FROM state WHERE false"
        for level, key in enumerate(entity.arrays if entity.present else ()):
            ordinals = "".join(f", _ord{n}" for n in range(level))
            rows = (f"SELECT id{ordinals}, generate_subscripts(_item{level}[{_quote(key)}], 1) - 1 AS _ord{level}, "
                    f"unnest(_item{level}[{_quote(key)}]) AS _item{level + 1} FROM ({rows})")
        item = f"_item{len(entity.arrays)}"
        selected = ", ".join(_duck_column(c, item, salt) for c in entity.columns)
        path = os.path.join(out, entity.table + ".parquet")
        written[entity.table] = con.execute(f"COPY (SELECT {selected} FROM ({rows})) TO {_quote(path)} "
                                            "(FORMAT PARQUET)").fetchone()[0]
        lookup = lookup_columns(entity)
        if lookup:
            values = ", ".join(f"{_duck_value(c, item)} AS \"{c.name}\"" for c in lookup)
            hashed = " OR ".join(f'"{c.name}" IS NOT NULL' for c in lookup if c.op is PseudoOp.HASH)
            outputs = ", ".join(f'"{c.name}", {_duck_hash(chr(34) + c.name + chr(34), salt)} AS "{c.name}_pseudonym"'
                                if c.op is PseudoOp.HASH else f'"{c.name}"' for c in lookup)
            con.execute(f"COPY (SELECT {outputs} FROM (SELECT DISTINCT {values} FROM ({rows})) WHERE {hashed}) TO "
                        f"{_quote(os.path.join(out, entity.table + '_lookup.parquet'))} (FORMAT PARQUET)")
    con.execute("DROP TABLE state")
    return written


def _duck_value(column: Column, item: str) -> str:
    kind = column.sources[0] if column.sources else None
    if kind == "id":
        value = "id"
    elif kind == "ordinal":
        value = f"_ord{column.sources[1]}"
    elif kind == "value":
        value = item
    elif kind == "ext":
        value = f"nullif(nullif(CAST({item}['_ext'] AS VARCHAR), '{{}}'), '')"
    elif kind == "path":
        values = [item + "".join(f"[{_quote(k)}]" for k in path) for path in column.sources[1:]]
        value = values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"
        if column.name.endswith("Descriptor"):
            value = f"regexp_replace({value}, '{DESCRIPTOR_URI}', '')"
    else:
        value = "NULL"
    return f"CAST({value} AS {_duck_type(column.sql_type)})"


def _duck_hash(value: str, salt: str) -> str:
    return (f"CASE WHEN {value} IS NULL OR trim(CAST({value} AS VARCHAR)) = '' THEN NULL "
            f"ELSE sha256(CAST({value} AS VARCHAR) || {_quote(salt)}) END")


def _duck_column(column: Column, item: str, salt: str) -> str:
    value = _duck_value(column, item)
    if column.op in (PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP):
        return f'{_duck_hash(value, salt)} AS "{column.name}_pseudonym"'
    if column.op is PseudoOp.MASK:
        return f"'*' AS \"{column.name}\""
    return f'{value} AS "{column.name}"'
