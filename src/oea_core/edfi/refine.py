"""Ed-Fi refine: current state -> flat, typed, pseudonymized tables (``stage2p/edfi/<entity>``).

Every resource is refined, whether the metadata CSV declares it or not. A column's type and
pseudonymization op come from the CSV where it declares the column, else from the type the
column had before, else from the API's OpenAPI metadata when it was landed from an API
(:mod:`.openapi`), else from the values themselves (whole numbers -> bigint, numbers -> double,
booleans, ``YYYY-MM-DD`` -> date, anything else -> string) and :mod:`.privacy`'s rules. The schemas
in use are kept in the commit metadata of ``stage2np/edfi/<resource>_not_refined``, the table of
what could not be refined, which every refine writes last.

A refine is proportional to the change: it rewrites only the rows of the records changed or
deleted by the batches ingested since the last refine (a Delta MERGE per table keyed by ``id`` and
the ordinals), unless a column appeared or changed type, in which case the resource is rebuilt.
Entities with no rows get no table. Every record is accounted for: current state = refined rows
+ rows in ``_not_refined`` with the reason.
"""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from typing import TYPE_CHECKING

from ..errors import RejectedRowsError
from ..privacy.pseudonymize import PSEUDONYM_SUFFIX, hash_column, to_lookup, to_pseudonymized
from ..schema import PseudoOp, TableSchema
from ..source_module import IngestResult
from . import landing
from .flatten import ORDINAL, coerce, flatten_record
from .ingest import TOMBSTONES, ingest_app_id, resource_table
from .metadata import DESCRIPTOR_SPEC, EdFiMetadata, is_descriptor, table_name
from .privacy import describes_person, rule_op

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from pyspark.sql import DataFrame, SparkSession

    from ..delta import DeltaStore
    from ..lake.paths import LakePaths
    from ..privacy.salt import Salt

log = logging.getLogger("oea")
SOURCE = "edfi"
NOT_REFINED = "_not_refined"
NOT_REFINED_DDL = "entity string, id string, _reject_reason string, _raw string"
_REJECTED = "\0rejected"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Spec = list[list[str]]  # [[column, type, op], ...] of one entity


def refine_app_id(table: str, state_version: int) -> str:
    return f"oea.refine/{SOURCE}/{table}@{state_version}"


# on Spark's Python workers --------------------------------------------------------------------
def _flat_rows(resource: str, row) -> tuple[dict[str, list[dict]], str | None]:
    """The record's flattened rows, or why it cannot be flattened (a state written before the depth limit)."""
    try:
        return flatten_record(resource, json.loads(row["_record"])), None
    except (ValueError, RecursionError) as exc:
        return {}, f"{resource}: {exc}"


def value_kind(value: object) -> str:
    """What a flattened JSON value looks like: bool, int, float, date (``YYYY-MM-DD``) or str."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "date" if isinstance(value, str) and _DATE.match(value) else "str"


def _observe(resource: str, rows: Iterable) -> Iterator[tuple[str, str, int]]:
    """Per partition: ``(entity, '', rows)`` and ``(entity, column, kinds bitmask)`` of what the records hold."""
    counts: dict[str, int] = {}
    kinds: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        for entity, entity_rows in _flat_rows(resource, row)[0].items():
            counts[entity] = counts.get(entity, 0) + len(entity_rows)
            for flat in entity_rows:
                for column, value in flat.items():
                    if value is not None:
                        kinds.setdefault((entity, column), set()).add(value_kind(value))
    yield from ((entity, "", count) for entity, count in counts.items())
    yield from ((entity, column, _KIND_BITS.mask(found)) for (entity, column), found in kinds.items())


class _KindBits:
    names = ("bool", "int", "float", "date", "str")

    def mask(self, kinds: set[str]) -> int:
        return sum(1 << self.names.index(k) for k in kinds)

    def kinds(self, mask: int) -> set[str]:
        return {name for bit, name in enumerate(self.names) if mask & (1 << bit)}


_KIND_BITS = _KindBits()


def _of(entity: str):
    """A filter for the ``(entity, row)`` items of one entity (a function, not a lambda in a loop)."""
    def keep(item: tuple) -> bool:
        return item[0] == entity
    return keep


def _row(item: tuple) -> tuple:
    return item[1]


def _typed(resource: str, specs: dict[str, tuple[tuple[str, str], ...]], rows: Iterable) -> Iterator[tuple]:
    """``(entity, row)`` for every flattened row of an entity in ``specs``, typed; ``(_REJECTED, why)`` if not."""
    for row in rows:
        flat_rows, problem = _flat_rows(resource, row)
        if problem:
            yield _REJECTED, (resource, row["id"], problem, None)
            continue
        for entity, entity_rows in flat_rows.items():
            columns = specs.get(entity)
            if columns is None:
                continue
            for flat in entity_rows:
                values = []
                for name, sql_type in columns:
                    try:
                        values.append(coerce(flat.get(name), sql_type))
                    except (ValueError, ArithmeticError):
                        reason = f"{entity}.{name}: {flat.get(name)!r} is not a valid {sql_type}"
                        yield _REJECTED, (entity, row["id"], reason, json.dumps(flat, default=str))
                        break
                else:
                    yield entity, tuple(values)


# on the driver ---------------------------------------------------------------------------------
def infer_type(column: str, kinds: set[str]) -> str:
    """The Spark type of an undeclared column from the kinds of value seen in it."""
    if column.endswith(ORDINAL):
        return "int"
    if column in ("id", "_ext", "_lastModifiedDate") or not kinds:
        return "string"
    if kinds == {"int"}:
        return "bigint"
    if kinds <= {"int", "float"}:
        return "double"
    if kinds in ({"bool"}, {"date"}):
        return "boolean" if kinds == {"bool"} else "date"
    return "string"


def entity_specs(metadata: EdFiMetadata, resource: str, observed: dict[str, dict[str, set[str]]],
                 previous: dict[str, Spec], api_types: dict[str, dict[str, str]] | None = None) -> dict[str, Spec]:
    """The schema of every entity seen now or before: declared columns, then earlier ones, then new ones.

    A new column's type is the API's (``api_types``: entity -> column -> type, from its OpenAPI
    metadata) where it declares one, else inferred from the values.
    """
    api_types = api_types or {}
    main_columns = set(observed.get(resource, {})) | {c[0] for c in previous.get(resource, [])}
    if resource in metadata.schemas:
        main_columns |= set(metadata.schemas[resource].names)
    person = describes_person(resource, frozenset(main_columns))
    specs: dict[str, Spec] = {}
    for entity in [*previous, *(e for e in observed if e not in previous)]:
        declared: Spec = []
        if entity in metadata.schemas:
            declared = [[c.name, c.type, c.op.value] for c in metadata.schemas[entity].columns]
        elif entity == resource and is_descriptor(resource):
            declared = [list(c) for c in DESCRIPTOR_SPEC]
        spec = list(declared)
        names = {c[0] for c in spec}
        if "id" not in names:  # every flattened row has its record's id: the key of incremental refines
            spec.insert(0, ["id", "string", rule_op(resource, entity, "id", "string", person).value])
            names.add("id")
        for column, type_name, _ in previous.get(entity, []):
            if column not in names:
                spec.append([column, type_name, rule_op(resource, entity, column, type_name, person).value])
                names.add(column)
        for column in sorted(observed.get(entity, {}).keys() - names):
            type_name = api_types.get(entity, {}).get(column) or infer_type(column, observed[entity][column])
            spec.append([column, type_name, rule_op(resource, entity, column, type_name, person).value])
        specs[entity] = spec
    return specs


def _last_refine(store: DeltaStore, marker: str) -> dict:
    """The metadata of the last refine (state version, batches, schemas), or {} before the first."""
    if not store.exists(marker):
        return {}
    try:
        return json.loads(store.last_commit(marker).get("userMetadata") or "{}")
    except ValueError:
        return {}


def _key_columns(schema: TableSchema) -> list[str]:
    """The refined table's row key: the (pseudonymized) ``id`` and the ordinals."""
    keys = []
    for column in schema.columns:
        if column.name == "id":
            hashed = column.op in (PseudoOp.HASH, PseudoOp.HASH_NO_LOOKUP)
            keys.append("id" + PSEUDONYM_SUFFIX if hashed else "id")
        elif column.name.endswith(ORDINAL):
            keys.append(column.name)
    return keys


def refine_resource(spark: SparkSession, lake: LakePaths, store: DeltaStore, metadata: EdFiMetadata,
                    namespace: str, resource: str, salt: Salt, *, max_reject_share: float,
                    api_types: dict[tuple[str, str], dict[str, str]] | None = None) -> list[IngestResult]:
    """Bring the refined tables of a resource up to its current state: the changed records, or all of them.

    ``api_types`` are the column types of the API's OpenAPI metadata, by ``(namespace, entity)``.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    table = resource_table(namespace, resource)
    state_path = lake.table("stage2np", SOURCE, table)
    version = store.version(state_path)
    if version is None:
        return []
    app = refine_app_id(table, version)
    marker = lake.table("stage2np", SOURCE, f"{table}{NOT_REFINED}")
    last = _last_refine(store, marker)
    prefix = table[: -len(table_name(resource))]  # '' for ed-fi, '<namespace>_' otherwise
    # "schemas": a marker written before refines recorded them (an older oea_core) is rebuilt over once
    if last.get("state_version") == version and "schemas" in last and store.applied(marker, app):
        log.info("%s: refined tables are up to date (state version %d)", table, version)
        return [IngestResult(prefix + table_name(e), skipped=(str(version),), kind="refined")
                for e in last.get("schemas", {})]
    all_batches = landing.batches(lake, namespace, resource)
    applied_ids = store.applied_ids(state_path, [ingest_app_id(namespace, resource, b) for b in all_batches])
    applied = sorted(b for b in all_batches if ingest_app_id(namespace, resource, b) in applied_ids)
    new = [b for b in applied if b > last.get("last_batch", "")]
    incremental = bool(last.get("schemas")) and len(applied) == last.get("batch_count", -1) + len(new)
    state = store.read(state_path)
    affected = None
    if incremental:
        affected = state.where(F.col("_batch_id").isin(new)).select("id")
        tombstones = lake.table("stage2np", SOURCE, f"{table}{TOMBSTONES}")
        if store.exists(tombstones):
            affected = affected.union(store.read(tombstones).where(F.col("_batch_id").isin(new)).select("id"))
        affected = affected.distinct().persist(StorageLevel.DISK_ONLY)
    source = (state.join(affected, "id", "left_semi") if affected is not None else state).select("id", "_record")
    previous = last.get("schemas", {})
    types = {entity: columns for (space, entity), columns in (api_types or {}).items() if space == namespace}
    observed = _observed(spark, source, resource)
    specs = entity_specs(metadata, resource, observed, previous, types)
    if incremental and any(specs[e] != previous.get(e) for e in specs):
        log.info("%s: columns appeared or changed type; rebuilding its refined tables", table)
        incremental, source = False, state.select("id", "_record")
        observed = _observed(spark, source, resource)
        specs = entity_specs(metadata, resource, observed, previous, types)
    meta = {"state_version": version, "batch_count": len(applied), "last_batch": max(applied, default=""),
            "schemas": specs}
    try:
        return _write(spark, lake, store, table, prefix, resource, specs, source, state, affected, salt, app, meta,
                      marker, max_reject_share, incremental)
    finally:
        if affected is not None:
            affected.unpersist()


def _observed(spark: SparkSession, source: DataFrame, resource: str) -> dict[str, dict[str, set[str]]]:
    """Entity -> column -> kinds of value, for every entity with rows in ``source``."""
    observed: dict[str, dict[str, set[str]]] = {}
    for entity, column, value in source.rdd.mapPartitions(partial(_observe, resource)).collect():
        if column:
            observed.setdefault(entity, {}).setdefault(column, set()).update(_KIND_BITS.kinds(value))
        elif value:
            observed.setdefault(entity, {})
    return observed


def _write(spark: SparkSession, lake: LakePaths, store: DeltaStore, table: str, prefix: str, resource: str,
           specs: dict[str, Spec], source: DataFrame, state: DataFrame, affected: DataFrame | None, salt: Salt,
           app: str, meta: dict, marker: str, max_reject_share: float, incremental: bool) -> list[IngestResult]:
    from pyspark import StorageLevel

    schemas = {e: TableSchema.parse(prefix + table_name(e), spec) for e, spec in specs.items()}
    columns = {e: tuple((c.name, c.type) for c in s.columns) for e, s in schemas.items()}
    typed = source.rdd.mapPartitions(partial(_typed, resource, columns)).persist(StorageLevel.DISK_ONLY)
    try:
        # countByValue reduces over partitions, and raises on none: Spark can plan an empty source (a batch
        # whose every change lost to a newer one) with no partition at all
        counts = dict(typed.map(lambda item: item[0]).countByValue()) if typed.getNumPartitions() else {}
        bad, total = counts.get(_REJECTED, 0), sum(counts.values())
        rejects = spark.createDataFrame(typed.filter(_of(_REJECTED)).map(_row),
                                        NOT_REFINED_DDL, verifySchema=False)
        if total and bad / total > max_reject_share:
            examples = [r["_reject_reason"] for r in rejects.limit(3).collect()]
            raise RejectedRowsError(
                f"{table}: {bad} of {total} refined rows ({bad / total:.1%}) have values that do not match their "
                f"column types, more than the allowed {max_reject_share:.1%}; nothing was refined. Examples: "
                f"{examples}. Fix the types in the Ed-Fi metadata CSV or raise --max-reject-share", table=table,
                rejected=bad, total=total)
        rejected_by: dict[str, int] = dict(rejects.groupBy("entity").count().collect()) if bad else {}
        results = []
        for entity, schema in schemas.items():
            target = lake.table("stage2p", SOURCE, schema.table)
            rows = counts.get(entity, 0)
            if not rows and not store.exists(target):
                continue  # an entity with no rows gets no table
            ddl = ", ".join(f"`{name}` {sql_type}" for name, sql_type in columns[entity])
            entity_rows = typed.filter(_of(entity)).map(_row)
            frame = to_pseudonymized(spark.createDataFrame(entity_rows, ddl, verifySchema=False), schema, salt)
            if incremental and store.exists(target):
                _merge_rows(store, frame, target, schema, affected, salt, app, meta)
            else:
                store.write(frame, target, mode="overwrite", app_id=app, metadata=meta)
            if schema.with_ops(PseudoOp.HASH):  # lookups are rebuilt whole: one row per person, not per event
                whole = state.select("id", "_record").rdd.mapPartitions(
                    partial(_typed, resource, {entity: columns[entity]})).filter(_of(entity))
                lookup = to_lookup(spark.createDataFrame(whole.map(_row), ddl, verifySchema=False),
                                   schema, salt)
                if lookup is not None:
                    store.write(lookup, lake.table("stage2np", SOURCE, f"{schema.table}_lookup"), mode="overwrite",
                                app_id=app, metadata=meta)
            results.append(IngestResult(schema.table, (meta["last_batch"] or str(meta["state_version"]),), rows=rows,
                                        rejected=rejected_by.get(entity, 0), kind="refined"))
            log.info("%s: %d rows refined into stage2p/%s/%s", entity, rows, SOURCE, schema.table)
        kept = rejects
        if incremental and affected is not None and store.exists(marker):
            kept = store.read(marker).join(affected, "id", "left_anti").unionByName(rejects)
        if bad:
            log.warning("%s: %d rows could not be refined; they are in stage2np/%s/%s%s with the reason", table,
                        bad, SOURCE, table, NOT_REFINED)
        store.write(kept.select("entity", "id", "_reject_reason", "_raw"), marker, mode="overwrite", app_id=app,
                    metadata=meta)
        return results
    finally:
        typed.unpersist()


def _merge_rows(store: DeltaStore, frame: DataFrame, target: str, schema: TableSchema, affected: DataFrame | None,
                salt: Salt, app: str, meta: dict) -> None:
    """Replace the rows of the affected records in ``target`` by ``frame``'s, in one MERGE."""
    from pyspark.sql import functions as F

    keys = _key_columns(schema)
    assert affected is not None
    id_key = keys[0]
    ids = affected.select((hash_column(F.col("id"), salt) if id_key != "id" else F.col("id")).alias(id_key))
    gone = (store.read(target).join(ids, id_key, "left_semi").select(*keys)
            .join(frame.select(*keys), keys, "left_anti"))
    markers = gone.select(*[F.col(c) if c in keys else F.lit(None).cast(frame.schema[c].dataType).alias(c)
                            for c in frame.columns]).withColumn("_deleted", F.lit(True))
    changes = frame.withColumn("_deleted", F.lit(False)).unionByName(markers)
    store.apply_changes(changes, target, tuple(keys), order=None, deleted="_deleted", app_id=app, metadata=meta)
