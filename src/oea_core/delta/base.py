"""The Delta IO contract both engines keep, and the checks they share.

A write goes through three steps a subclass provides: ``stage`` (Spark writes Parquet into
``<table>/_staging/<id>``, invisible to readers), ``commit`` (the engine publishes it as one Delta
commit) and ``discard``. Every commit may carry one app transaction (``txn`` action): a commit
whose app id already reached the table is skipped, on both engines, so a rerun writes nothing.
Commit metadata is stored as ``commitInfo.userMetadata`` (a JSON object) by both engines.

The app transaction is checked twice: once before any work (a cheap skip), and again inside the
commit, against the very version the commit builds on, so two writers racing with one batch
cannot both commit it. A commit that loses a race to another writer is retried (its app id
checked again) a few times, then refused with :class:`~oea_core.errors.CommitConflictError`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from ..errors import CommitConflictError, DeltaTableError
from ..privacy.redaction import redact

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger("oea")
STAGING = "_staging"
COMMIT_ATTEMPTS = 5  # commits tried against a table other writers keep changing
WriteMode = Literal["append", "overwrite"]
CommitMetadata: TypeAlias = Mapping[str, object]  # stored as commitInfo.userMetadata, a JSON object


@dataclass(frozen=True)
class WriteResult:
    """What one commit did: the table version after it, data files added and row counts.

    ``rows`` is what the commit wrote (a write) or read from its source (a merge, delete or
    change set); ``inserted``, ``updated`` and ``deleted`` are the target rows it changed.
    ``skipped`` is true when the app transaction had already reached the table.
    """

    path: str
    version: int | None
    files: int
    rows: int
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: bool = False


@dataclass(frozen=True)
class Staged:
    """Parquet files written for a table by :meth:`DeltaStore.stage`, not yet committed."""

    path: str
    staging: str
    mode: WriteMode
    partition_by: tuple[str, ...]
    schema: StructType
    replace: tuple[tuple[str, str], ...] = ()


class DeltaStore(ABC):
    """Delta table IO: exists, version, applied, read, stage/commit/discard, write, merge, delete, apply_changes.

    Paths are table folders (local paths or URLs the engine can reach). Errors are
    :class:`~oea_core.errors.DeltaTableError` naming the table.
    """

    name: ClassVar[str]

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        # Also for sessions we did not start: INT96 timestamps make tables delta-rs cannot read.
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    # reading -----------------------------------------------------------------------------
    @abstractmethod
    def exists(self, path: str) -> bool:
        """True when ``path`` holds a Delta table."""

    @abstractmethod
    def version(self, path: str) -> int | None:
        """The table's current version, or None when there is no table."""

    @abstractmethod
    def applied(self, path: str, app_id: str) -> bool:
        """True when a commit carrying app transaction ``app_id`` reached the table."""

    def applied_ids(self, path: str, app_ids: Iterable[str]) -> set[str]:
        """Those of ``app_ids`` that reached the table (one log read where the engine allows)."""
        return {app_id for app_id in app_ids if self.applied(path, app_id)}

    @abstractmethod
    def read(self, path: str) -> DataFrame:
        """The table's current version as a Spark DataFrame; raises DeltaTableError when missing."""

    @abstractmethod
    def read_arrow(self, path: str, sql_where: str | None = None) -> pa.Table:
        """The table (optionally filtered by a SQL predicate) as an Arrow table, for small results."""

    @abstractmethod
    def schema(self, path: str) -> StructType:
        """The table's schema as Spark types."""

    @abstractmethod
    def partition_columns(self, path: str) -> list[str]:
        """The table's partition columns, in order."""

    @abstractmethod
    def last_commit(self, path: str) -> dict[str, Any]:
        """The newest commit's ``commitInfo`` (operation, userMetadata, operationMetrics ...)."""

    # writing -----------------------------------------------------------------------------
    def write(self, df: DataFrame, path: str, *, mode: WriteMode = "append", partition_by: tuple[str, ...] = (),
              replace: Mapping[str, object] | None = None, app_id: str | None = None,
              metadata: CommitMetadata | None = None) -> WriteResult:
        """Append to, or overwrite, the table at ``path`` (created when missing) in one commit.

        ``replace`` (with ``mode="overwrite"``) replaces only the partitions whose columns have
        these values (Delta's ``replaceWhere``); the data must lie inside them.
        """
        if app_id and self.applied(path, app_id):
            return self._skipped(path)
        staged = self.stage(df, path, mode=mode, partition_by=partition_by, replace=replace)
        try:
            return self._publish(staged, app_id, metadata)
        finally:
            self.discard(staged)

    def stage(self, df: DataFrame, path: str, *, mode: WriteMode = "append", partition_by: tuple[str, ...] = (),
              replace: Mapping[str, object] | None = None) -> Staged:
        """Write ``df`` as Parquet files for the table at ``path`` without committing them.

        Readers do not see staged files; :meth:`commit` publishes them, :meth:`discard` removes them.
        """
        self._check_write(df, path, mode, tuple(partition_by), replace)
        pairs = tuple((str(k), str(v)) for k, v in (replace or {}).items())
        staged = Staged(path, f"{path.rstrip('/')}/{STAGING}/{uuid.uuid4().hex}", mode, tuple(partition_by),
                        df.schema, pairs)
        with self._failing_write(path, staged):
            df.write.mode("errorifexists").partitionBy(*partition_by).parquet(staged.staging)
        return staged

    def commit(self, staged: Staged, *, app_id: str | None = None,
               metadata: CommitMetadata | None = None) -> WriteResult:
        """Publish staged files in one commit carrying ``app_id``; the staging folder is removed either way."""
        try:
            if app_id and self.applied(staged.path, app_id):
                return self._skipped(staged.path)
            return self._publish(staged, app_id, metadata)
        finally:
            self.discard(staged)

    def _publish(self, staged: Staged, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        with self._failing_write(staged.path):
            return self._commit(staged, app_id, metadata)

    @abstractmethod
    def _commit(self, staged: Staged, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        """Publish ``staged`` as one commit (the staging folder is removed by the caller)."""

    def discard(self, staged: Staged) -> None:
        """Remove staged files that will not be committed (and a table folder only staging created)."""
        shutil.rmtree(staged.staging, ignore_errors=True)
        _remove_empty_dir(os.path.dirname(staged.staging))
        _remove_empty_dir(staged.path)

    def merge(self, df: DataFrame, path: str, keys: tuple[str, ...], *, update: bool = False,
              app_id: str | None = None, metadata: CommitMetadata | None = None) -> WriteResult:
        """Upsert ``df`` by ``keys`` (null-safe): insert new keys, update matched ones when ``update``."""
        if not self.exists(path):
            return self.write(df, path, app_id=app_id, metadata=metadata)
        if app_id and self.applied(path, app_id):
            return self._skipped(path)
        self._check_same_schema(path, df.schema)
        with self._failing_write(path):
            return self._merge(df, path, keys, update, app_id, metadata)

    @abstractmethod
    def _merge(self, df: DataFrame, path: str, keys: tuple[str, ...], update: bool, app_id: str | None,
               metadata: CommitMetadata | None) -> WriteResult: ...

    def delete(self, keys_df: DataFrame, path: str, keys: tuple[str, ...], *, app_id: str | None = None,
               metadata: CommitMetadata | None = None) -> WriteResult:
        """Delete the rows whose ``keys`` (null-safe) appear in ``keys_df``."""
        if not self.exists(path):
            raise DeltaTableError(f"no Delta table at {path} to delete from: write it first", path=path)
        if app_id and self.applied(path, app_id):
            return self._skipped(path)
        with self._failing_write(path):
            return self._delete(keys_df.select(*keys).dropDuplicates(), path, keys, app_id, metadata)

    @abstractmethod
    def _delete(self, keys_df: DataFrame, path: str, keys: tuple[str, ...], app_id: str | None,
                metadata: CommitMetadata | None) -> WriteResult: ...

    def apply_changes(self, changes: DataFrame, path: str, key: str | tuple[str, ...], *, order: str | None,
                      deleted: str, app_id: str | None = None,
                      metadata: CommitMetadata | None = None) -> WriteResult:
        """Apply one change per ``key`` (a column, or several): upsert, or delete where ``deleted`` is true.

        A change does not replace a row whose ``order`` value is newer (both non-null);
        otherwise (and always when ``order`` is None) the change wins. ``deleted`` is not stored.
        """
        from pyspark.sql import functions as F

        if not self.exists(path):
            return self.write(changes.where(~F.col(deleted)).drop(deleted), path, app_id=app_id, metadata=metadata)
        if app_id and self.applied(path, app_id):
            return self._skipped(path)
        self._check_same_schema(path, changes.drop(deleted).schema)
        with self._failing_write(path):
            return self._apply_changes(changes, path, (key,) if isinstance(key, str) else key, order, deleted,
                                       app_id, metadata)

    @abstractmethod
    def _apply_changes(self, changes: DataFrame, path: str, keys: tuple[str, ...], order: str | None, deleted: str,
                       app_id: str | None, metadata: CommitMetadata | None) -> WriteResult: ...

    # commit races ------------------------------------------------------------------------
    def _until_committed(self, path: str, attempt: Callable[[], WriteResult]) -> WriteResult:
        """Run ``attempt`` (one commit that refuses an app id already in the version it builds on)
        until it is not beaten by another writer; after a lost race the next attempt checks again."""
        last: Exception | None = None
        for number in range(1, COMMIT_ATTEMPTS + 1):
            try:
                return attempt()
            except Exception as exc:
                if not self._lost_race(exc):
                    raise
                last = exc
                log.info("%s: another writer committed first (attempt %d of %d); checking again", path, number,
                         COMMIT_ATTEMPTS)
                time.sleep(random.uniform(0.05, 0.2) * number)
        raise CommitConflictError(
            f"Delta table {path}: another writer committed at the same time, {COMMIT_ATTEMPTS} times in a row; "
            "this commit was not made (the table holds the other writer's version): rerun to finish the work",
            path=path) from last

    @abstractmethod
    def _lost_race(self, exc: Exception) -> bool:
        """True when ``exc`` means another writer committed the version this commit built on."""

    # shared checks -----------------------------------------------------------------------
    def _skipped(self, path: str) -> WriteResult:
        return WriteResult(path, self.version(path), 0, 0, skipped=True)

    def _require(self, path: str) -> None:
        if not self.exists(path):
            raise DeltaTableError(f"no Delta table at {path}: ingest the source first", path=path)

    def _check_write(self, df: DataFrame, path: str, mode: str, partition_by: tuple[str, ...],
                     replace: Mapping[str, object] | None) -> None:
        if mode not in ("append", "overwrite"):
            raise DeltaTableError(f"write mode {mode!r} for {path} is not 'append' or 'overwrite'", path=path)
        missing = [c for c in partition_by if c not in df.columns]
        if missing:
            raise DeltaTableError(f"partition columns {missing} are not in the data for {path}; the data has "
                                  f"{df.columns}", path=path)
        if replace and (mode != "overwrite" or not set(replace) <= set(partition_by)):
            raise DeltaTableError(
                f"replace={dict(replace)} for {path} needs mode='overwrite' and names only partition columns "
                f"{list(partition_by)}", path=path)
        if not self.exists(path):
            return
        if mode == "append" or replace:
            self._check_same_schema(path, df.schema)
            have = self.partition_columns(path)
            if have != list(partition_by):
                raise DeltaTableError(f"table {path} is partitioned by {have}, not {list(partition_by)}: "
                                      "write with the table's partitioning", path=path)

    def _check_same_schema(self, path: str, incoming: StructType) -> None:
        have = {f.name: f.dataType.simpleString() for f in self.schema(path).fields}
        new = {f.name: f.dataType.simpleString() for f in incoming.fields}
        differs = sorted(k for k in set(have) | set(new) if have.get(k) != new.get(k))
        if differs:
            detail = ", ".join(f"{k}: table {have.get(k, '-')} vs data {new.get(k, '-')}" for k in differs)
            raise DeltaTableError(
                f"the data does not match the schema of Delta table {path} ({detail}); "
                "rebuild the table with mode='overwrite' if the change is intended", path=path)

    @contextmanager
    def _failing_write(self, path: str, staged: Staged | None = None) -> Iterator[None]:
        """Turn an engine's failure into a DeltaTableError that names the table (secrets redacted)."""
        try:
            yield
        except DeltaTableError:
            if staged is not None:
                self.discard(staged)
            raise
        except Exception as exc:
            if staged is not None:
                self.discard(staged)
            raise DeltaTableError(
                f"writing Delta table {path} with the {self.name} engine failed; the previous version is "
                f"unchanged: {redact(str(exc) or repr(exc))}",
                path=path) from exc


def user_metadata(metadata: CommitMetadata | None) -> str:
    """The ``commitInfo.userMetadata`` both engines write: the metadata as sorted JSON."""
    return json.dumps(dict(metadata or {}), sort_keys=True)


def collect_arrow(df: DataFrame) -> pa.Table:
    """``df`` collected to the driver as Arrow, typed as its Spark schema (for small results)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)
    batches = df._collect_as_arrow()
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
