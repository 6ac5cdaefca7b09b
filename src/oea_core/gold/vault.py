"""The Data Vault (``stage3p/vault/``): insert-only hubs, links and satellites.

- A hub gets a row for each business key it has not seen (``<hk>, <business key...>``); a link for
  each relationship (``<link hk>, <hub hks...>, <dependent keys...>``).
- A satellite gets a row for a key whose attributes' hashdiff differs from the key's latest row (by
  ``load_ts``), and a row with ``is_deleted`` true for a key whose latest row is live but which its
  source no longer holds (stage2p tables are the current state, deletes applied).
- Every row carries ``load_ts`` (the batch's load time) and ``record_source`` (``stage2p/<source>/<table>``).
- Each table is written in at most one commit per batch, carrying the app id
  ``oea.gold/vault/<table>/<batch>``: a rerun writes nothing, and so does a batch that changed nothing.
- A hub is loaded from those of its source tables that exist; a link or satellite whose source table
  does not exist (an export without sections) is not built, and is named as missing. A later batch that
  brings the table builds it in full.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import GoldError
from .changes import Pending, plan_append, unchanged
from .keys import hash_key_column, hashdiff_column
from .model import GOLD_STAGE, LOAD_TS, RECORD_SOURCE, VAULT, Hub, Link, Load, Satellite
from .scd import HASHDIFF, IS_DELETED

if TYPE_CHECKING:
    import datetime as dt

    from pyspark.sql import Column, DataFrame

    from ..delta import DeltaStore, WriteResult
    from ..lake.paths import LakePaths

log = logging.getLogger("oea")


def vault_app_id(table: str, batch_id: str) -> str:
    return f"oea.gold/vault/{table}/{batch_id}"


def require_columns(df: DataFrame, columns: tuple[str, ...], table: str) -> None:
    """Raise GoldError naming the table, the missing columns and the ones it has."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise GoldError(f"table {table} lacks the key columns {missing} the gold layer needs; it has {df.columns}. "
                        "Refine the source again, or fix its metadata CSV", table=table, column=missing[0])


def _key(columns: tuple[str, ...]) -> Column:
    from pyspark.sql import functions as F

    return hash_key_column(*[F.col(c) for c in columns])


def _first_per(df: DataFrame, key: str, *order: str) -> DataFrame:
    """One row per ``key``: the first by ``order`` (deterministic)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy(key).orderBy(*[F.col(c).asc_nulls_last() for c in order])
    return df.withColumn("_n", F.row_number().over(window)).where(F.col("_n") == 1).drop("_n")


def hub_candidates(source: DataFrame, hub: Hub, table: str = "source") -> DataFrame:
    """``<hk>, <business key...>`` of every key in ``source`` (rows with an all-null key left out)."""
    require_columns(source, hub.business_key, table)
    return source.select(_key(hub.business_key).alias(hub.hash_key), *hub.business_key).where(
        f"`{hub.hash_key}` IS NOT NULL")


def link_candidates(source: DataFrame, link: Link, table: str = "source") -> DataFrame:
    """``<link hk>, <hub hks...>, <dependent...>`` of every relationship in ``source`` whose hubs all have a key."""
    from pyspark.sql import functions as F

    require_columns(source, link.key_columns, table)
    hubs = [_key(hub.business_key).alias(hub.hash_key) for hub in link.hubs]
    rows = source.select(_key(link.key_columns).alias(link.hash_key), *hubs, *link.dependent)
    complete = F.lit(True)
    for hub in link.hubs:
        complete = complete & F.col(hub.hash_key).isNotNull()
    return rows.where(complete)


def satellite_candidates(source: DataFrame, sat: Satellite, table: str = "source") -> DataFrame:
    """``<parent hk>, <attributes...>`` (typed as declared; a column the source lacks is null), one row per key."""
    from pyspark.sql import functions as F

    require_columns(source, sat.parent.key_columns, table)
    absent = [name for name, _ in sat.attributes if name not in source.columns]
    if absent:
        log.warning("%s: table %s has no %s; they are null in the satellite", sat.table, table, absent)
    values = [(F.col(name) if name in source.columns else F.lit(None)).cast(sql_type).alias(name)
              for name, sql_type in sat.attributes]
    rows = source.select(_key(sat.parent.key_columns).alias(sat.parent.hash_key), *values).where(
        f"`{sat.parent.hash_key}` IS NOT NULL")
    rows = rows.withColumn(HASHDIFF, hashdiff_column(*[F.col(n) for n in sat.attribute_names]))
    return _first_per(rows, sat.parent.hash_key, HASHDIFF)


def latest(satellite: DataFrame, hash_key: str) -> DataFrame:
    """The latest row (by ``load_ts``) of each key of a satellite."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy(hash_key).orderBy(F.col(LOAD_TS).desc())
    return satellite.withColumn("_n", F.row_number().over(window)).where(F.col("_n") == 1).drop("_n")


def satellite_changes(candidates: DataFrame, existing: DataFrame | None, sat: Satellite) -> DataFrame:
    """``<parent hk>, hashdiff, is_deleted, <attributes...>`` of the rows to insert: changed or new keys,
    and deletions of live keys the candidates (a full snapshot) lack."""
    from pyspark.sql import functions as F

    hk = sat.parent.hash_key
    columns = [hk, HASHDIFF, IS_DELETED, *sat.attribute_names]
    rows = candidates.withColumn(IS_DELETED, F.lit(False)).select(*columns)
    if existing is None:
        return rows
    last = latest(existing, hk).select(hk, F.col(HASHDIFF).alias("_last"), F.col(IS_DELETED).alias("_was_deleted"))
    changed = rows.join(last, hk, "left").where(
        F.col("_last").isNull() | F.col("_was_deleted") | (F.col("_last") != F.col(HASHDIFF))).select(*columns)
    gone = last.where(~F.col("_was_deleted")).join(candidates.select(hk), hk, "left_anti")
    deleted = gone.select(hk, hashdiff_column(F.lit("deleted")).alias(HASHDIFF), F.lit(True).alias(IS_DELETED),
                          *[F.lit(None).cast(t).alias(n) for n, t in sat.attributes])
    return changed.unionByName(deleted)


def _stamped(rows: DataFrame, load_ts: dt.datetime, record_source: Column | str, key: str,
             rest: list[str]) -> DataFrame:
    from pyspark.sql import functions as F

    source = F.lit(record_source) if isinstance(record_source, str) else record_source
    return rows.select(key, F.lit(load_ts).alias(LOAD_TS), source.alias(RECORD_SOURCE), *rest)


def missing_sources(store: DeltaStore, lake: LakePaths, load: Load) -> tuple[str, ...]:
    """``stage2p/<source>/<table>`` of each source table of ``load`` that does not exist."""
    return tuple(f"stage2p/{load.source}/{t}" for t in load.tables
                 if not store.exists(lake.table("stage2p", load.source, t)))


def plan_table(store: DeltaStore, lake: LakePaths, load: Load, batch_id: str, load_ts: dt.datetime) -> Pending | None:
    """The new rows of one vault table for ``batch_id``, not yet committed (nothing when it already holds
    the batch); None when none of its source tables exists.

    Raises GoldError when a source table lacks one of its key columns.
    """
    from pyspark.sql import functions as F

    target = load.target
    path = lake.table(GOLD_STAGE, VAULT, target.table)
    app_id = vault_app_id(target.table, batch_id)
    if store.exists(path) and store.applied(path, app_id):
        return unchanged(store, path, skip=True)
    sources = [(f"stage2p/{load.source}/{table}", store.read(lake.table("stage2p", load.source, table)), table)
               for table in load.tables if store.exists(lake.table("stage2p", load.source, table))]
    if not sources:
        return None
    existing = store.read(path) if store.exists(path) else None
    metadata = {"batch_id": batch_id, "load_ts": load_ts.isoformat()}
    if isinstance(target, Satellite):
        record_source, source, table = sources[0]
        new = satellite_changes(satellite_candidates(source, target, table), existing, target)
        rows = _stamped(new, load_ts, record_source, target.parent.hash_key,
                        [HASHDIFF, IS_DELETED, *target.attribute_names])
        return plan_append(store, path, rows, app_id=app_id, metadata=metadata)
    hk = target.hash_key
    candidates = None
    for order, (record_source, source, table) in enumerate(sources):
        found = (hub_candidates(source, target, table) if isinstance(target, Hub)
                 else link_candidates(source, target, table))
        found = found.withColumn("_order", F.lit(order)).withColumn(RECORD_SOURCE, F.lit(record_source))
        candidates = found if candidates is None else candidates.unionByName(found)
    assert candidates is not None  # at least one source exists
    rest = [c for c in candidates.columns if c not in (hk, "_order", RECORD_SOURCE)]
    first = _first_per(candidates, hk, "_order", *rest)
    if existing is not None:
        first = first.join(existing.select(hk), hk, "left_anti")
    rows = _stamped(first, load_ts, F.col(RECORD_SOURCE), hk, rest)
    return plan_append(store, path, rows, app_id=app_id, metadata=metadata)


def load_table(store: DeltaStore, lake: LakePaths, load: Load, batch_id: str, load_ts: dt.datetime) -> WriteResult:
    """Insert the new rows of one vault table for ``batch_id`` (nothing when it already holds the batch).

    Raises GoldError when none of its source tables exists, or one lacks a key column.
    """
    pending = plan_table(store, lake, load, batch_id, load_ts)
    if pending is None:
        table = load.tables[0]
        raise GoldError(f"the vault table {load.target.table} is loaded from stage2p/{load.source}/{table}, which "
                        f"does not exist: ingest and refine {load.source} first", table=table)
    return pending.commit()


def plan_vault(store: DeltaStore, lake: LakePaths, loads: tuple[Load, ...], batch_id: str,
               load_ts: dt.datetime) -> tuple[dict[str, Pending], dict[str, tuple[str, ...]]]:
    """The pending writes of every vault table of ``loads`` for one batch, and the tables not built because
    none of their source tables exists (each with the missing ones)."""
    pending, missing = {}, {}
    for load in loads:
        planned = plan_table(store, lake, load, batch_id, load_ts)
        if planned is None:
            missing[load.target.table] = missing_sources(store, lake, load)
            log.warning("vault %s: not built, its source %s does not exist", load.target.table,
                        ", ".join(missing[load.target.table]))
        else:
            pending[load.target.table] = planned
    return pending, missing


def load_vault(store: DeltaStore, lake: LakePaths, loads: tuple[Load, ...], batch_id: str,
               load_ts: dt.datetime) -> dict[str, WriteResult]:
    """Load every vault table of ``loads`` in order (hubs, links, satellites) for one batch, unchecked."""
    pending, _ = plan_vault(store, lake, loads, batch_id, load_ts)
    return commit_all(pending, "vault")


def commit_all(pending: dict[str, Pending], area: str) -> dict[str, WriteResult]:
    """Commit each pending write, in order."""
    results = {}
    for table, write in pending.items():
        results[table] = result = write.commit()
        log.info("%s %s: %d rows written%s", area, table, result.rows,
                 " (batch already loaded)" if result.skipped else "")
    return results
