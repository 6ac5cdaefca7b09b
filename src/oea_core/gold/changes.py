"""Writing only what changed: every gold write goes through one of these three, and none of them makes a
Delta commit when there is nothing to write, so an unchanged batch leaves every table's version as it was.

Each takes the batch's app id: a table that already holds it is skipped before any work (a rerun of a
batch writes nothing), and the commit carries it (a batch is never written twice, see ``docs/lake.md``).
The rows to write are computed from the table itself, so they are materialized (``localCheckpoint``)
before the commit changes the table under them.

Each also has a ``plan_*`` form returning a :class:`Pending` write: the table as the commit will leave it
(``after``, for checks to run on before anything is committed) and the commit itself, not yet made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..delta import WriteResult

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pyspark.sql import DataFrame

    from ..delta import DeltaStore
    from ..delta.base import CommitMetadata

DELETED = "_deleted"


@dataclass(frozen=True)
class Pending:
    """A write computed but not committed: ``after`` is the table as ``commit()`` will leave it."""

    path: str
    after: DataFrame
    commit: Callable[[], WriteResult]


def _nothing(store: DeltaStore, path: str) -> WriteResult:
    return WriteResult(path, store.version(path), 0, 0)


def skipped(store: DeltaStore, path: str) -> WriteResult:
    """The result of a write skipped because its batch's app id already reached the table."""
    return WriteResult(path, store.version(path), 0, 0, skipped=True)


def unchanged(store: DeltaStore, path: str, *, skip: bool = False) -> Pending:
    """A pending write of an existing table that commits nothing (``skip``: its batch already reached it)."""
    return Pending(path, store.read(path), lambda: skipped(store, path) if skip else _nothing(store, path))


def _materialized(df: DataFrame) -> tuple[DataFrame, int]:
    rows = df.localCheckpoint(eager=True)
    return rows, rows.count()


def plan_append(store: DeltaStore, path: str, rows: DataFrame, *, app_id: str,
                metadata: CommitMetadata | None = None, partition_by: Sequence[str] = ()) -> Pending:
    """:func:`append_rows`, not yet committed."""
    if store.applied(path, app_id):
        return unchanged(store, path, skip=True)
    rows, count = _materialized(rows)
    exists = store.exists(path)
    if count == 0 and exists:
        return unchanged(store, path)
    after = store.read(path).unionByName(rows) if exists else rows
    return Pending(path, after, lambda: store.write(rows, path, mode="append", partition_by=tuple(partition_by),
                                                    app_id=app_id, metadata=metadata))


def append_rows(store: DeltaStore, path: str, rows: DataFrame, *, app_id: str,
                metadata: CommitMetadata | None = None, partition_by: Sequence[str] = ()) -> WriteResult:
    """Append ``rows`` (insert-only tables); creates the table, empty if need be, when it is missing."""
    return plan_append(store, path, rows, app_id=app_id, metadata=metadata, partition_by=partition_by).commit()


def plan_upsert(store: DeltaStore, path: str, rows: DataFrame, keys: Sequence[str], *, app_id: str,
                metadata: CommitMetadata | None = None) -> Pending:
    """:func:`upsert_rows`, not yet committed (``keys`` are never null)."""
    if store.applied(path, app_id):
        return unchanged(store, path, skip=True)
    rows, count = _materialized(rows)
    exists = store.exists(path)
    if count == 0 and exists:
        return unchanged(store, path)
    after = (store.read(path).join(rows.select(*keys), list(keys), "left_anti").unionByName(rows) if exists
             else rows)
    return Pending(path, after, lambda: store.merge(rows, path, tuple(keys), update=True, app_id=app_id,
                                                    metadata=metadata))


def upsert_rows(store: DeltaStore, path: str, rows: DataFrame, keys: Sequence[str], *, app_id: str,
                metadata: CommitMetadata | None = None) -> WriteResult:
    """Insert ``rows`` whose ``keys`` are new and overwrite those whose keys exist, in one MERGE."""
    return plan_upsert(store, path, rows, keys, app_id=app_id, metadata=metadata).commit()


def row_changes(new: DataFrame, old: DataFrame, keys: Sequence[str]) -> DataFrame:
    """The rows of ``new`` that are not in ``old`` as they are, plus ``old``'s keys missing from ``new``
    (other columns null), with a ``_deleted`` flag: the change set that turns ``old`` into ``new``."""
    from pyspark.sql import functions as F

    values = [c for c in new.columns if c not in keys]

    def fingerprint(df: DataFrame) -> DataFrame:
        return df.withColumn("_row", F.sha2(F.to_json(F.struct(*[F.col(c) for c in values])), 256))

    before = fingerprint(old).select(*keys, F.col("_row").alias("_old_row"))
    upserts = (fingerprint(new).join(before, list(keys), "left")
               .where(F.col("_old_row").isNull() | (F.col("_old_row") != F.col("_row")))
               .select(*new.columns).withColumn(DELETED, F.lit(False)))
    gone = old.select(*keys).join(new.select(*keys), list(keys), "left_anti")
    deletes = gone.select(*[F.col(c) if c in keys else F.lit(None).cast(new.schema[c].dataType).alias(c)
                            for c in new.columns]).withColumn(DELETED, F.lit(True))
    return upserts.unionByName(deletes)


def plan_sync(store: DeltaStore, path: str, new: DataFrame, keys: Sequence[str], *, app_id: str,
              metadata: CommitMetadata | None = None, partition_by: Sequence[str] = ()) -> Pending:
    """:func:`sync_rows`, not yet committed (``new`` is materialized: it is what the table will hold)."""
    if store.applied(path, app_id):
        return unchanged(store, path, skip=True)
    new, _ = _materialized(new)
    if not store.exists(path):
        return Pending(path, new, lambda: store.write(new, path, partition_by=tuple(partition_by), app_id=app_id,
                                                      metadata=metadata))
    changes, count = _materialized(row_changes(new, store.read(path).select(*new.columns), keys))
    if count == 0:
        return unchanged(store, path)
    return Pending(path, new, lambda: store.apply_changes(changes, path, tuple(keys), order=None, deleted=DELETED,
                                                          app_id=app_id, metadata=metadata))


def sync_rows(store: DeltaStore, path: str, new: DataFrame, keys: Sequence[str], *, app_id: str,
              metadata: CommitMetadata | None = None, partition_by: Sequence[str] = ()) -> WriteResult:
    """Make the table hold exactly ``new`` (unique by ``keys``), rewriting only the rows that are new,
    changed or gone; creates the table (partitioned by ``partition_by``) when it is missing."""
    return plan_sync(store, path, new, keys, app_id=app_id, metadata=metadata, partition_by=partition_by).commit()
