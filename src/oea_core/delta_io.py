"""Delta table IO: create/overwrite, append, merge (upsert) by key, delete by key.

Two engines behind one interface. Where the Spark session has Delta Lake (Synapse,
Databricks) Spark writes Delta itself. On the embedded local default Spark writes Parquet
into a staging folder inside the table, the files are moved into place, and delta-rs
commits them in one transaction, so a failed write leaves the previous version intact.
Every commit can carry app transactions (``txn`` actions) that make a batch's write
idempotent: :meth:`DeltaStore.applied` tells whether a batch already reached a table.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import DeltaTableError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

_STAGING = "_staging"


@dataclass(frozen=True)
class WriteResult:
    """What a write committed: the new table version, files added and rows written."""

    path: str
    version: int | None
    files: int
    rows: int


@dataclass(frozen=True)
class Staged:
    """Parquet files written for a table by :meth:`DeltaStore.stage`, not yet committed."""

    path: str
    staging: str
    mode: str
    partition_by: tuple[str, ...]
    schema: StructType


def spark_has_delta(spark: SparkSession) -> bool:
    """True when the session can read and write ``format("delta")`` (Synapse, Databricks)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return "DeltaSparkSessionExtension" in extensions or spark.conf.get(
        "spark.databricks.delta.preview.enabled", None) is not None


def delta_store(spark: SparkSession) -> DeltaStore:
    """The Delta engine that fits ``spark``."""
    from .delta_spark import SparkDeltaStore

    return SparkDeltaStore(spark) if spark_has_delta(spark) else DeltaStore(spark)


def _stats(path: str) -> tuple[int, str]:
    """numRecords, min, max and null counts from a Parquet footer, in Delta's stats JSON."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    mins: dict = {}
    maxs: dict = {}
    nulls: dict = {}
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
            if name in nulls and nulls[name] is None:
                continue
            nulls[name] = nulls.get(name, 0) + stats.null_count
            if stats.has_min_max and column.physical_type in ("INT32", "INT64", "DOUBLE", "FLOAT",
                                                              "BYTE_ARRAY") and stats.logical_type.type in (
                    "NONE", "STRING", "INT", "DATE"):
                lo, hi = stats.min, stats.max
                if hasattr(lo, "isoformat"):
                    lo, hi = lo.isoformat(), hi.isoformat()
                mins[name] = lo if name not in mins else min(mins[name], lo)
                maxs[name] = hi if name not in maxs else max(maxs[name], hi)
    nulls = {k: v for k, v in nulls.items() if v is not None}
    doc = {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return meta.num_rows, json.dumps(doc, default=str)


class DeltaStore:
    """Delta IO for a local lake: Spark writes Parquet, delta-rs commits it."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        # Also for sessions we did not start: INT96 timestamps make tables delta-rs cannot read.
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    # reading -----------------------------------------------------------------------------
    def _table(self, path: str):
        from deltalake import DeltaTable

        return DeltaTable(path) if self.exists(path) else None

    def exists(self, path: str) -> bool:
        """True when ``path`` holds a Delta table."""
        return os.path.isdir(os.path.join(path, "_delta_log")) and any(
            name.endswith(".json") for name in os.listdir(os.path.join(path, "_delta_log")))

    def version(self, path: str) -> int | None:
        """The table's current version, or None when there is no table."""
        table = self._table(path)
        return None if table is None else table.version()

    def applied(self, path: str, app_id: str) -> bool:
        """True when a commit carrying app transaction ``app_id`` reached the table."""
        table = self._table(path)
        return table is not None and table.transaction_version(app_id) is not None

    def read(self, path: str) -> DataFrame:
        """The table's current version as a Spark DataFrame, typed as the Delta schema says."""
        from pyspark.sql.pandas.types import from_arrow_schema

        table = self._table(path)
        if table is None:
            raise DeltaTableError(f"no Delta table at {path}: ingest the source first", path=path)
        schema = from_arrow_schema(_arrow_schema(table))
        files = table.file_uris()
        if not files:
            return self.spark.createDataFrame([], schema)
        # The declared schema keeps partition values typed as the table says ('007' stays '007').
        return self.spark.read.schema(schema).option("basePath", path).parquet(*files)

    def read_arrow(self, path: str, sql_where: str | None = None) -> pa.Table:
        """The table as Arrow, without Spark (DataFusion through delta-rs)."""
        from deltalake import QueryBuilder

        table = self._table(path)
        if table is None:
            raise DeltaTableError(f"no Delta table at {path}: ingest the source first", path=path)
        import pyarrow as pa

        query = "SELECT * FROM t" + (f" WHERE {sql_where}" if sql_where else "")
        return pa.table(QueryBuilder().register("t", table).execute(query).read_all())

    # writing -----------------------------------------------------------------------------
    def write(self, df: DataFrame, path: str, *, mode: str = "append", partition_by: tuple[str, ...] = (),
              app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        """Append to, or overwrite, the table at ``path`` (created when missing) in one commit."""
        return self.commit(self.stage(df, path, mode=mode, partition_by=partition_by),
                           app_ids=app_ids, metadata=metadata)

    def stage(self, df: DataFrame, path: str, *, mode: str = "append",
              partition_by: tuple[str, ...] = ()) -> Staged:
        """Write ``df`` as Parquet files for the table at ``path`` without committing them.

        Readers do not see staged files; :meth:`commit` publishes them, :meth:`discard` removes them.
        """
        from pyspark.sql.pandas.types import to_arrow_schema

        if mode not in ("append", "overwrite"):
            raise DeltaTableError(f"write mode {mode!r} is not append or overwrite", path=path)
        missing = [c for c in partition_by if c not in df.columns]
        if missing:
            raise DeltaTableError(f"partition columns {missing} are not in the data for {path}", path=path)
        table = self._table(path)
        if table is not None and mode == "append":
            _check_same_schema(path, _arrow_schema(table), to_arrow_schema(df.schema))
            if list(table.metadata().partition_columns) != list(partition_by):
                raise DeltaTableError(
                    f"table {path} is partitioned by {table.metadata().partition_columns}, "
                    f"not {list(partition_by)}: write with the table's partitioning", path=path)
        staged = Staged(path, os.path.join(path, _STAGING, uuid.uuid4().hex), mode, tuple(partition_by), df.schema)
        try:
            df.write.mode("errorifexists").partitionBy(*partition_by).parquet(staged.staging)
        except Exception as exc:
            self.discard(staged)
            from .salt import redact

            raise DeltaTableError(
                f"writing Delta table {path} failed; the previous version is unchanged: {redact(str(exc))}",
                path=path) from exc
        return staged

    def commit(self, staged: Staged, *, app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        """Publish staged files in one commit carrying ``app_ids``; the staging folder is removed either way."""
        from deltalake import Schema
        from deltalake.transaction import create_table_with_add_actions
        from pyspark.sql.pandas.types import to_arrow_schema

        path, partition_by = staged.path, list(staged.partition_by)
        moved: list[str] = []
        try:
            adds, rows = self._move_into_place(staged.staging, path, staged.partition_by, moved)
            props = _props(app_ids, metadata)
            schema = Schema.from_arrow(to_arrow_schema(staged.schema))
            table = self._table(path)
            if table is None:
                create_table_with_add_actions(path, schema, adds, mode="error", partition_by=partition_by,
                                              commit_properties=props)
            else:
                table.create_write_transaction(adds, mode=staged.mode, schema=schema, partition_by=partition_by,
                                               commit_properties=props)
        except Exception as exc:
            for file in moved:
                _remove_quietly(file)
            if isinstance(exc, DeltaTableError):
                raise
            from .salt import redact

            raise DeltaTableError(
                f"writing Delta table {path} failed; the previous version is unchanged: {redact(str(exc))}",
                path=path) from exc
        finally:
            self.discard(staged)
        return WriteResult(path, self.version(path), len(adds), rows)

    def discard(self, staged: Staged) -> None:
        """Remove staged files that will not be committed."""
        shutil.rmtree(staged.staging, ignore_errors=True)
        _remove_empty_dir(os.path.dirname(staged.staging))
        _remove_empty_dir(staged.path)  # a table that staging created and nothing committed to

    def _move_into_place(self, staging: str, path: str, partition_by: tuple[str, ...],
                         moved: list[str]) -> tuple[list, int]:
        from deltalake.transaction import AddAction

        adds, total = [], 0
        now = int(time.time() * 1000)
        for folder, _dirs, files in os.walk(staging):
            for name in sorted(files):
                if not name.endswith(".parquet"):
                    continue
                relative = os.path.relpath(os.path.join(folder, name), staging)
                target = os.path.join(path, relative)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(folder, name), target)
                moved.append(target)
                values = dict(part.split("=", 1) for part in os.path.dirname(relative).split(os.sep) if "=" in part)
                values = {k: _unescape_partition(v) for k, v in values.items()}
                rows, stats = _stats(target)
                total += rows
                adds.append(AddAction(relative.replace(os.sep, "/"), os.path.getsize(target),
                                      {c: values.get(c) for c in partition_by}, now, True, stats))
        return adds, total

    def merge(self, df: DataFrame, path: str, keys: tuple[str, ...], *, update: bool = False,
              app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        """Upsert ``df`` by ``keys`` (null-safe): insert new keys, update matched ones when ``update``.

        The source is collected to the driver as Arrow: meant for lookup-sized data.
        """
        table = self._table(path)
        source = _collect_arrow(df)
        if table is None:  # lookup-sized: delta-rs writes it directly, no Spark write job
            from deltalake import write_deltalake

            write_deltalake(path, source, mode="error", commit_properties=_props(app_ids, metadata))
            return WriteResult(path, self.version(path), len(self._table(path).file_uris()), source.num_rows)
        merger = self._merger(table, source, keys, app_ids, metadata)
        if update:
            merger = merger.when_matched_update_all()
        merger.when_not_matched_insert_all().execute()
        return WriteResult(path, table.version(), 0, source.num_rows)

    def delete(self, keys_df: DataFrame, path: str, keys: tuple[str, ...], *, app_ids: tuple[str, ...] = (),
               metadata: dict | None = None) -> WriteResult:
        """Delete the rows whose ``keys`` (null-safe) appear in ``keys_df``."""
        table = self._table(path)
        if table is None:
            raise DeltaTableError(f"no Delta table at {path} to delete from", path=path)
        source = _collect_arrow(keys_df.select(*keys).dropDuplicates())
        self._merger(table, source, keys, app_ids, metadata, check=False).when_matched_delete().execute()
        return WriteResult(path, table.version(), 0, source.num_rows)

    def apply_changes(self, changes: DataFrame, path: str, key: str, *, order: str, deleted: str,
                      app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        """Apply one change per ``key``: upsert, or delete where ``deleted`` is true.

        A change does not replace a row whose ``order`` value is newer (both non-null);
        otherwise the change, being later in landing order, wins. ``deleted`` is not stored.
        """
        from pyspark.sql import functions as F

        table = self._table(path)
        if table is None:
            live = changes.where(~F.col(deleted)).drop(deleted)
            return self.write(live, path, mode="append", app_ids=app_ids, metadata=metadata)
        source = _collect_arrow(changes)
        columns = [c for c in changes.columns if c != deleted]
        _check_same_schema(path, _arrow_schema(table), source.select(columns).schema)
        newer = f'(s."{order}" IS NULL OR t."{order}" IS NULL OR s."{order}" >= t."{order}")'
        values = {f'"{c}"': f's."{c}"' for c in columns}
        merger = self._merger(table, source, (key,), app_ids, metadata, check=False)
        (merger.when_matched_delete(predicate=f's."{deleted}" AND {newer}')
         .when_matched_update(values, predicate=f'NOT s."{deleted}" AND {newer}')
         .when_not_matched_insert(values, predicate=f'NOT s."{deleted}"')
         .execute())
        return WriteResult(path, table.version(), 0, source.num_rows)

    def _merger(self, table, source, keys, app_ids, metadata, check=True):
        if check:
            _check_same_schema(table.table_uri, _arrow_schema(table), source.schema)
        predicate = " AND ".join(f"(t.\"{k}\" IS NOT DISTINCT FROM s.\"{k}\")" for k in keys)
        props = _props(app_ids, metadata)
        return table.merge(source, predicate, source_alias="s", target_alias="t", streamed_exec=False,
                           commit_properties=props)


def _props(app_ids: tuple[str, ...], metadata: dict | None):
    from deltalake import CommitProperties, Transaction

    return CommitProperties(custom_metadata={"oea": json.dumps(metadata or {})},
                            app_transactions=[Transaction(a, 1) for a in app_ids] or None)


def _collect_arrow(df: DataFrame) -> pa.Table:
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)
    batches = df._collect_as_arrow()
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def _arrow_schema(table) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(table.schema().to_arrow())


def _delta_types(schema: pa.Schema) -> dict[str, str]:
    from deltalake import Schema

    return {f.name: str(getattr(f.type, "type", f.type)) for f in Schema.from_arrow(schema).fields}


def _check_same_schema(path: str, existing: pa.Schema, incoming: pa.Schema) -> None:
    have, new = _delta_types(existing), _delta_types(incoming)
    differs = sorted(k for k in set(have) | set(new) if have.get(k) != new.get(k))
    if differs:
        detail = ", ".join(f"{k}: table {have.get(k, '-')} vs data {new.get(k, '-')}" for k in differs)
        raise DeltaTableError(
            f"the data does not match the schema of Delta table {path} ({detail}); "
            "rebuild the table with mode='overwrite' if the change is intended", path=path)


def _unescape_partition(value: str) -> str | None:
    from urllib.parse import unquote

    return None if value == "__HIVE_DEFAULT_PARTITION__" else unquote(value)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
