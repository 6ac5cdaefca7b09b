"""The delta-rs engine: Spark writes Parquet, delta-rs commits it.

Works in any Spark session, with or without Delta Lake's jars. Staged files are moved into
the table folder and published with their Parquet-footer statistics in one delta-rs commit,
so a failed write leaves the previous version intact. Merges, deletes and change sets collect
their source to the driver as Arrow: they are meant for lookup- and batch-sized data.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, QueryBuilder, Schema, Transaction
from deltalake import DeltaTable as RsTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, create_table_with_add_actions

from .base import CommitMetadata, DeltaStore, Staged, WriteResult, collect_arrow, user_metadata
from .failures import explained

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from deltalake.table import TableMerger
    from deltalake.transaction import RemoveAction
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

    # Shapes one MERGE: adds its when-matched and when-not-matched clauses to the merger.
    MergeClauses = Callable[[TableMerger], TableMerger]


def table_version(path: str) -> int | None:
    """The current version of the Delta table at local ``path`` (None when there is none), read by delta-rs
    without Spark; either engine's tables (delta-rs reads what Delta Lake's Spark writer commits)."""
    log = os.path.join(path, "_delta_log")
    if not (os.path.isdir(log) and any(name.endswith(".json") for name in os.listdir(log))):
        return None
    return RsTable(path).version()


class DeltaRsStore(DeltaStore):
    """Delta IO with delta-rs commits; the embedded lake's engine when the benchmark says so."""

    name = "delta-rs"

    @contextmanager
    def _failing_write(self, path: str, staged: Staged | None = None) -> Iterator[None]:
        """As the base's, one line keeping the cause (a full disk says so): see :mod:`.failures`."""
        with super()._failing_write(path, staged), explained(path, self.name):
            yield

    def _table(self, path: str) -> RsTable | None:
        return RsTable(path) if self.exists(path) else None

    def _open(self, path: str) -> RsTable:
        self._require(path)
        return RsTable(path)

    # reading -----------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        log = os.path.join(path, "_delta_log")
        return os.path.isdir(log) and any(name.endswith(".json") for name in os.listdir(log))

    def version(self, path: str) -> int | None:
        return table_version(path)

    def applied(self, path: str, app_id: str) -> bool:
        table = self._table(path)
        return table is not None and table.transaction_version(app_id) is not None

    def read(self, path: str) -> DataFrame:
        from pyspark.sql.pandas.types import from_arrow_schema

        table = self._open(path)
        schema = from_arrow_schema(_arrow_schema(table))
        files = table.file_uris()
        if not files:
            return self.spark.createDataFrame([], schema)
        # The declared schema keeps partition values typed as the table says ('007' stays '007').
        return self.spark.read.schema(schema).option("basePath", path).parquet(*files)

    def read_arrow(self, path: str, sql_where: str | None = None) -> pa.Table:
        table = self._open(path)
        query = "SELECT * FROM t" + (f" WHERE {sql_where}" if sql_where else "")
        return pa.table(QueryBuilder().register("t", table).execute(query).read_all())

    def schema(self, path: str) -> StructType:
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(_arrow_schema(self._open(path)))

    def partition_columns(self, path: str) -> list[str]:
        return list(self._open(path).metadata().partition_columns)

    def last_commit(self, path: str) -> dict[str, Any]:
        (info,) = self._open(path).history(1)
        return info

    # writing -----------------------------------------------------------------------------
    def _commit(self, staged: Staged, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        from pyspark.sql.pandas.types import to_arrow_schema

        path = staged.path
        moved: list[str] = []
        committed = False
        try:
            adds, rows = _move_into_place(staged, moved)
            schema = Schema.from_arrow(_nullable(to_arrow_schema(staged.schema)))

            def attempt() -> WriteResult:
                nonlocal committed
                table = self._table(path)
                if _has_txn(table, app_id):  # checked in the snapshot the commit builds on
                    return self._skipped(path)
                props = _props(app_id, metadata)
                if table is None:
                    create_table_with_add_actions(path, schema, adds, mode="error",
                                                  partition_by=list(staged.partition_by), commit_properties=props)
                else:
                    filters = [(k, "=", v) for k, v in staged.replace] or None
                    actions: list[AddAction | RemoveAction] = list(adds)  # list is invariant
                    table.create_write_transaction(actions, mode=staged.mode, schema=schema,
                                                   partition_by=list(staged.partition_by), partition_filters=filters,
                                                   commit_properties=props)
                committed = True
                return WriteResult(path, self.version(path), len(adds), rows)

            return self._until_committed(path, attempt)
        finally:
            if not committed:  # never leave files in the table folder that no commit names
                for file in moved:
                    _remove_quietly(file)

    def _merge(self, df: DataFrame, path: str, keys: tuple[str, ...], update: bool, app_id: str | None,
               metadata: CommitMetadata | None) -> WriteResult:
        def build(merger: TableMerger) -> TableMerger:
            if update:
                merger = merger.when_matched_update_all()
            return merger.when_not_matched_insert_all()

        return self._merged(path, collect_arrow(df), keys, app_id, metadata, build)

    def _delete(self, keys_df: DataFrame, path: str, keys: tuple[str, ...], app_id: str | None,
                metadata: CommitMetadata | None) -> WriteResult:
        return self._merged(path, collect_arrow(keys_df), keys, app_id, metadata,
                            lambda merger: merger.when_matched_delete())

    def _apply_changes(self, changes: DataFrame, path: str, keys: tuple[str, ...], order: str | None,
                       deleted: str, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        columns = [c for c in changes.columns if c != deleted]
        newer = f'(s."{order}" IS NULL OR t."{order}" IS NULL OR s."{order}" >= t."{order}")' if order else "TRUE"
        values = {f'"{c}"': f's."{c}"' for c in columns}
        return self._merged(path, collect_arrow(changes), keys, app_id, metadata, lambda merger: (
            merger.when_matched_delete(predicate=f's."{deleted}" AND {newer}')
            .when_matched_update(values, predicate=f'NOT s."{deleted}" AND {newer}')
            .when_not_matched_insert(values, predicate=f'NOT s."{deleted}"')))

    def _merged(self, path: str, source: pa.Table, keys: tuple[str, ...], app_id: str | None,
                metadata: CommitMetadata | None, build: MergeClauses) -> WriteResult:
        """One MERGE of ``source`` by ``keys`` (null-safe), shaped by ``build``, committed race-safely."""
        predicate = " AND ".join(f"(t.\"{k}\" IS NOT DISTINCT FROM s.\"{k}\")" for k in keys)

        def attempt() -> WriteResult:
            table = self._open(path)
            if _has_txn(table, app_id):  # checked in the snapshot the commit builds on
                return self._skipped(path)
            # streamed_exec=False: cost follows the source, not the whole target (ENGINE_NOTES.md)
            merger = table.merge(source, predicate, source_alias="s", target_alias="t", streamed_exec=False,
                                 commit_properties=_props(app_id, metadata))
            return self._result(path, build(merger).execute())

        return self._until_committed(path, attempt)

    def _lost_race(self, exc: Exception) -> bool:
        return isinstance(exc, CommitFailedError) or (
            isinstance(exc, DeltaError) and "already exists" in str(exc))

    def _result(self, path: str, metrics: dict[str, Any]) -> WriteResult:
        return WriteResult(path, self.version(path), int(metrics.get("num_target_files_added", 0)),
                           int(metrics.get("num_source_rows", 0)), int(metrics.get("num_target_rows_inserted", 0)),
                           int(metrics.get("num_target_rows_updated", 0)),
                           int(metrics.get("num_target_rows_deleted", 0)))


def _props(app_id: str | None, metadata: CommitMetadata | None) -> CommitProperties:
    # No retries inside delta-rs: it would rebase the commit onto a newer version without checking the
    # app transaction again (delta-rs accepts a repeated app id); DeltaStore._until_committed re-checks.
    return CommitProperties(custom_metadata={"userMetadata": user_metadata(metadata)}, max_commit_retries=0,
                            app_transactions=[Transaction(app_id, 1)] if app_id else None)


def _has_txn(table: RsTable | None, app_id: str | None) -> bool:
    if not app_id or table is None:
        return False
    return table.transaction_version(app_id) is not None


def _nullable(schema: pa.Schema) -> pa.Schema:
    """As Spark's Delta writer does: every column nullable, so both engines store one schema."""
    return pa.schema([field.with_nullable(True) for field in schema])


def _arrow_schema(table: RsTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def _move_into_place(staged: Staged, moved: list[str]) -> tuple[list[AddAction], int]:
    adds: list[AddAction] = []
    total = 0
    now = int(time.time() * 1000)
    for folder, _dirs, files in os.walk(staged.staging):
        for name in sorted(files):
            if not name.endswith(".parquet"):
                continue
            relative = os.path.relpath(os.path.join(folder, name), staged.staging)
            target = os.path.join(staged.path, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(folder, name), target)
            moved.append(target)
            escaped = dict(part.split("=", 1) for part in os.path.dirname(relative).split(os.sep) if "=" in part)
            values = {k: _unescape_partition(v) for k, v in escaped.items()}
            rows, stats = _stats(target)
            total += rows
            adds.append(AddAction(relative.replace(os.sep, "/"), os.path.getsize(target),
                                  {c: values.get(c) for c in staged.partition_by}, now, True, stats))
    return adds, total


def _stats(path: str) -> tuple[int, str]:
    """numRecords, min, max and null counts from a Parquet footer, in Delta's stats JSON."""
    meta = pq.read_metadata(path)
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int | None] = {}
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for ci in range(group.num_columns):
            column = group.column(ci)
            name = column.path_in_schema
            if "." in name:
                continue
            stats = column.statistics
            if stats is None or not stats.has_null_count:
                nulls[name] = None
                continue
            counted = nulls.get(name, 0)
            if counted is None:  # an earlier row group had no null count: the file gives none
                continue
            nulls[name] = counted + stats.null_count
            if stats.has_min_max and column.physical_type in ("INT32", "INT64", "DOUBLE", "FLOAT",
                                                              "BYTE_ARRAY") and stats.logical_type.type in (
                    "NONE", "STRING", "INT", "DATE"):
                lo, hi = stats.min, stats.max
                if hasattr(lo, "isoformat"):
                    lo, hi = lo.isoformat(), hi.isoformat()
                mins[name] = lo if name not in mins else min(mins[name], lo)
                maxs[name] = hi if name not in maxs else max(maxs[name], hi)
    known = {k: v for k, v in nulls.items() if v is not None}
    doc = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": known}
    return meta.num_rows, json.dumps(doc, default=str)


def _unescape_partition(value: str) -> str | None:
    return None if value == "__HIVE_DEFAULT_PARTITION__" else unquote(value)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
