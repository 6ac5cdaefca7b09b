"""Slowly changing dimensions over a DeltaStore: type 2 (history) and type 1 (overwrite in place).

A dimension is given as a *snapshot*: one row per durable key (a hash key) with its attributes, as
of an *effective date*. A type 2 table holds ``<surrogate>, <key>, <attributes...>, hashdiff,
valid_from, valid_to, is_current``; a range is ``[valid_from, valid_to)``, and an open row has
``valid_to`` = :data:`END_OF_TIME` and ``is_current`` true.

Type 2 rules, for a snapshot at date ``d`` (the row *containing* ``d`` is the one with
``valid_from <= d < valid_to``):

- same hashdiff as the containing row: nothing is written;
- a changed key: the containing row is closed at ``d`` (``valid_to = d``) and a new row opens at
  ``d`` and runs to where the containing row ran (open and current if it was current);
- a key with no containing row opens a row from ``d`` to the key's next ``valid_from`` (or open);
- a key missing from a full snapshot: its containing row is closed at ``d``; nothing is removed;
- a change dated on the containing row's own ``valid_from`` overwrites that row (the later load wins);
  a deletion dated so closes it to the empty range ``[d, d)``.

So a late or out-of-order snapshot lands in history by splitting the range that contains its date,
and the result does not depend on the order in which changes arrive, with one limit: an unchanged
snapshot writes nothing, so a late change inside the current row's range becomes the current
version even if a later batch had confirmed the old one (see ``docs/gold.md``). Adjacent rows with
equal attributes are not merged. Rows with a negative surrogate key are reserved members (the unknown
student): the rules never touch them.

Type 1 keeps one row per key (surrogate key from the hash key alone): new and changed keys are
overwritten in place, keys missing from a full snapshot get ``is_deleted`` true, unchanged ones
write nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..errors import GoldError
from .changes import Pending, plan_upsert, unchanged
from .keys import hashdiff_column, surrogate_key_column

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import Column, DataFrame

    from ..delta import DeltaStore, WriteResult
    from ..delta.base import CommitMetadata

END_OF_TIME = dt.date(9999, 12, 31)
HASHDIFF = "hashdiff"
VALID_FROM = "valid_from"
VALID_TO = "valid_to"
IS_CURRENT = "is_current"
IS_DELETED = "is_deleted"


def scd2_columns(surrogate: str, key: str, attributes: Sequence[str]) -> list[str]:
    """The columns of a type 2 table, in order."""
    return [surrogate, key, *attributes, HASHDIFF, VALID_FROM, VALID_TO, IS_CURRENT]


def scd1_columns(surrogate: str, key: str, attributes: Sequence[str]) -> list[str]:
    """The columns of a type 1 table, in order."""
    return [surrogate, key, *attributes, HASHDIFF, IS_DELETED]


def _snapshot(snapshot: DataFrame, key: str, attributes: Sequence[str], table: str) -> DataFrame:
    """The snapshot's key, attributes and hashdiff; GoldError when a column is missing or a key is null or twice."""
    from pyspark.sql import functions as F

    missing = [c for c in (key, *attributes) if c not in snapshot.columns]
    if missing:
        raise GoldError(f"the snapshot for {table} lacks columns {missing}; it has {snapshot.columns}",
                        table=table, column=missing[0])
    snap = snapshot.select(key, *attributes).withColumn(HASHDIFF, hashdiff_column(*[F.col(a) for a in attributes]))
    bad = snap.groupBy(key).count().where(F.col(key).isNull() | (F.col("count") > 1)).limit(3).collect()
    if bad:
        raise GoldError(f"the snapshot for {table} holds key {key} null or more than once (e.g. "
                        f"{[(r[0], r[1]) for r in bad]}): give one row per key", table=table, column=key)
    return snap


def scd2_changes(current: DataFrame | None, snapshot: DataFrame, *, key: str, surrogate: str,
                 attributes: Sequence[str], effective_date: dt.date, full: bool = True,
                 table: str = "dimension") -> DataFrame:
    """The rows to upsert (by ``surrogate``) into a type 2 table holding ``current`` (None: no table yet).

    ``full``: the snapshot holds every live key, so a key it lacks was deleted. Raises GoldError for a
    snapshot without the columns, or with a key null or twice.
    """
    from pyspark.sql import functions as F

    columns = scd2_columns(surrogate, key, attributes)
    snap = _snapshot(snapshot, key, attributes, table)
    day, end = F.lit(effective_date), F.lit(END_OF_TIME)

    def opened(valid_to: Column) -> list[Column]:
        values = {surrogate: surrogate_key_column(F.col(key), day), VALID_FROM: day, VALID_TO: valid_to,
                  IS_CURRENT: valid_to == end}
        return [values[c].alias(c) if c in values else F.col(c) for c in columns]

    if current is None:
        return snap.select(*opened(end))
    rows = current.where(F.col(surrogate) >= 0)
    containing = rows.where((F.col(VALID_FROM) <= day) & (day < F.col(VALID_TO))).select(
        key, *[F.col(c).alias("_r_" + c) for c in columns if c != key])
    following = rows.where(F.col(VALID_FROM) > day).groupBy(key).agg(F.min(VALID_FROM).alias("_next_from"))
    seen = snap.withColumn("_deleted", F.lit(False))
    if full:
        gone = containing.select(key).join(snap.select(key), key, "left_anti")
        seen = seen.unionByName(gone.select(
            key, *[F.lit(None).cast(snap.schema[a].dataType).alias(a) for a in attributes],
            F.lit(None).cast("string").alias(HASHDIFF), F.lit(True).alias("_deleted")))
    joined = seen.join(containing, key, "left").join(following, key, "left")
    has_row = F.col("_r_" + surrogate).isNotNull()
    changed = has_row & (F.col("_deleted") | (F.col("_r_" + HASHDIFF) != F.col(HASHDIFF)))
    same_day = F.col("_r_" + VALID_FROM) == day

    def old(overrides: dict[str, Column]) -> list[Column]:
        return [overrides[c].alias(c) if c in overrides else F.col(c if c == key else "_r_" + c).alias(c)
                for c in columns]

    closed = joined.where(changed & (~same_day | F.col("_deleted"))).select(
        *old({VALID_TO: day, IS_CURRENT: F.lit(False)}))
    overwritten = joined.where(changed & same_day & ~F.col("_deleted")).select(
        *old({c: F.col(c) for c in (*attributes, HASHDIFF)}))
    opens = joined.where(~F.col("_deleted") & (~has_row | (changed & ~same_day))).select(
        *opened(F.when(has_row, F.col("_r_" + VALID_TO)).otherwise(F.coalesce(F.col("_next_from"), end))))
    return closed.unionByName(overwritten).unionByName(opens)


def apply_scd2(store: DeltaStore, path: str, snapshot: DataFrame, *, key: str, surrogate: str,
               attributes: Sequence[str], effective_date: dt.date, app_id: str, full: bool = True,
               reserved: DataFrame | None = None, metadata: CommitMetadata | None = None) -> WriteResult:
    """Bring the type 2 table at ``path`` to ``snapshot`` as of ``effective_date`` in one MERGE (see the
    module's rules); ``reserved`` rows (negative surrogate keys) are inserted when missing.

    Writes nothing when nothing changed or when ``app_id`` already reached the table. Raises GoldError
    for a bad snapshot.
    """
    return plan_scd2(store, path, snapshot, key=key, surrogate=surrogate, attributes=attributes,
                     effective_date=effective_date, app_id=app_id, full=full, reserved=reserved,
                     metadata=metadata).commit()


def plan_scd2(store: DeltaStore, path: str, snapshot: DataFrame, *, key: str, surrogate: str,
              attributes: Sequence[str], effective_date: dt.date, app_id: str, full: bool = True,
              reserved: DataFrame | None = None, metadata: CommitMetadata | None = None) -> Pending:
    """:func:`apply_scd2`, not yet committed."""
    if store.applied(path, app_id):
        return unchanged(store, path, skip=True)
    current = store.read(path) if store.exists(path) else None
    changes = scd2_changes(current, snapshot, key=key, surrogate=surrogate, attributes=attributes,
                           effective_date=effective_date, full=full, table=path)
    if reserved is not None:
        missing = reserved if current is None else reserved.join(current.select(surrogate), surrogate, "left_anti")
        changes = changes.unionByName(missing.select(*changes.columns))
    meta = {"effective_date": effective_date.isoformat(), **(metadata or {})}
    return plan_upsert(store, path, changes, (surrogate,), app_id=app_id, metadata=meta)


def scd1_changes(current: DataFrame | None, snapshot: DataFrame, *, key: str, surrogate: str,
                 attributes: Sequence[str], full: bool = True, table: str = "dimension") -> DataFrame:
    """The rows to upsert (by ``surrogate``) into a type 1 table holding ``current`` (None: no table yet)."""
    from pyspark.sql import functions as F

    columns = scd1_columns(surrogate, key, attributes)
    snap = (_snapshot(snapshot, key, attributes, table).withColumn(IS_DELETED, F.lit(False))
            .withColumn(surrogate, surrogate_key_column(F.col(key))).select(*columns))
    if current is None:
        return snap
    rows = current.where(F.col(surrogate) >= 0)
    before = rows.select(key, F.col(HASHDIFF).alias("_old"), F.col(IS_DELETED).alias("_old_deleted"))
    changed = snap.join(before, key, "left").where(
        F.col("_old").isNull() | (F.col("_old") != F.col(HASHDIFF)) | F.col("_old_deleted")).select(*columns)
    if not full:
        return changed
    gone = rows.where(~F.col(IS_DELETED)).join(snap.select(key), key, "left_anti").withColumn(
        IS_DELETED, F.lit(True)).select(*columns)
    return changed.unionByName(gone)


def apply_scd1(store: DeltaStore, path: str, snapshot: DataFrame, *, key: str, surrogate: str,
               attributes: Sequence[str], app_id: str, full: bool = True,
               metadata: CommitMetadata | None = None) -> WriteResult:
    """Overwrite the type 1 table's changed keys in place in one MERGE; writes nothing when nothing changed."""
    return plan_scd1(store, path, snapshot, key=key, surrogate=surrogate, attributes=attributes, app_id=app_id,
                     full=full, metadata=metadata).commit()


def plan_scd1(store: DeltaStore, path: str, snapshot: DataFrame, *, key: str, surrogate: str,
              attributes: Sequence[str], app_id: str, full: bool = True,
              metadata: CommitMetadata | None = None) -> Pending:
    """:func:`apply_scd1`, not yet committed."""
    if store.applied(path, app_id):
        return unchanged(store, path, skip=True)
    current = store.read(path) if store.exists(path) else None
    changes = scd1_changes(current, snapshot, key=key, surrogate=surrogate, attributes=attributes, full=full,
                           table=path)
    return plan_upsert(store, path, changes, (surrogate,), app_id=app_id, metadata=metadata)
