"""The Spark-Delta engine: Delta Lake's own Spark writer (``delta-spark``), as Synapse and Databricks run.

Writes go through ``df.write.format("delta")`` (append, overwrite, ``replaceWhere``) and
``DeltaTable.merge``; the app transaction rides on ``txnAppId``/``txnVersion`` (writer options,
or the ``spark.databricks.delta.write.txn*`` session settings for a MERGE), so Delta itself
refuses a second commit of the same batch. The local session gets Delta's jars from
``scripts/setup.sh`` (see :mod:`oea_core.spark`); Synapse and Databricks sessions have them.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import DeltaEngineError, DeltaTableError
from .base import CommitMetadata, DeltaStore, Staged, WriteResult, collect_arrow, user_metadata
from .failures import explained

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    import pyarrow as pa
    from delta.tables import DeltaMergeBuilder, DeltaTable
    from pyspark.sql import Column, DataFrame, Row, SparkSession
    from pyspark.sql.types import StructType

# A MERGE takes its app transaction and metadata from session settings: one MERGE at a time per process.
_SESSION_SETTINGS = threading.Lock()
_TXN_SCHEMA = "txn struct<appId: string, version: long>"
# WriteResult's counts and the commitInfo.operationMetrics they come from, per kind of commit
_WRITE_METRICS = {"files": "numFiles", "rows": "numOutputRows"}
_MERGE_METRICS = {"files": "numTargetFilesAdded", "rows": "numSourceRows", "inserted": "numTargetRowsInserted",
                  "updated": "numTargetRowsUpdated", "deleted": "numTargetRowsDeleted"}


def spark_has_delta(spark: SparkSession) -> bool:
    """True when the session can read and write ``format("delta")`` (Synapse, Databricks, oea's local session)."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return "DeltaSparkSessionExtension" in extensions or spark.conf.get(
        "spark.databricks.delta.preview.enabled", None) is not None


class SparkDeltaStore(DeltaStore):
    """Delta IO with ``delta-spark``: what a Synapse or Databricks pipeline runs."""

    name = "spark-delta"

    def __init__(self, spark: SparkSession) -> None:
        if not spark_has_delta(spark):
            raise DeltaEngineError(
                "the spark-delta engine needs Delta Lake in the Spark session, and this one has none: run "
                "scripts/setup.sh (it installs Delta's jars, which oea's local session loads), or choose "
                "--engine delta-rs (OEA_ENGINE=delta-rs)", engine=self.name)
        super().__init__(spark)

    @contextmanager
    def _failing_write(self, path: str, staged: Staged | None = None) -> Iterator[None]:
        """As the base's, one line keeping the cause (a full disk says so): see :mod:`.failures`."""
        with super()._failing_write(path, staged), explained(path, self.name):
            yield

    def _delta(self, path: str) -> DeltaTable:
        from delta.tables import DeltaTable

        self._require(path)
        return DeltaTable.forPath(self.spark, path)

    # reading -----------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, path))

    def version(self, path: str) -> int | None:
        if not self.exists(path):
            return None
        return int(_first(self._delta(path).history(1).select("version"), path)[0])

    def applied(self, path: str, app_id: str) -> bool:
        return bool(self.applied_ids(path, (app_id,)))

    def applied_ids(self, path: str, app_ids: Iterable[str]) -> set[str]:
        """One read of the log's ``txn`` actions (JSON commits and checkpoints, the public format)."""
        from pyspark.errors import AnalysisException
        from pyspark.sql import functions as F

        wanted = sorted(set(app_ids))
        if not wanted or not self.exists(path):
            return set()
        log = f"{path.rstrip('/')}/_delta_log/"
        frames = [self.spark.read.schema(_TXN_SCHEMA).json(log + "*.json")]
        try:  # a checkpoint holds the txn actions of the commits it replaced
            frames.append(self.spark.read.schema(_TXN_SCHEMA).parquet(log + "*.checkpoint*.parquet"))
        except AnalysisException:
            pass  # no checkpoint yet
        found: set[str] = set()
        for frame in frames:
            found |= {r[0] for r in frame.where(F.col("txn.appId").isin(wanted)).select("txn.appId")
                      .distinct().collect()}
        return found

    def read(self, path: str) -> DataFrame:
        self._require(path)
        return self.spark.read.format("delta").load(path)

    def read_arrow(self, path: str, sql_where: str | None = None) -> pa.Table:
        df = self.read(path)
        return collect_arrow(df.where(sql_where) if sql_where else df)

    def schema(self, path: str) -> StructType:
        return self.read(path).schema

    def partition_columns(self, path: str) -> list[str]:
        return list(_first(self._delta(path).detail().select("partitionColumns"), path)[0])

    def last_commit(self, path: str) -> dict[str, Any]:
        return _first(self._delta(path).history(1), path).asDict(recursive=True)

    # writing -----------------------------------------------------------------------------
    def _commit(self, staged: Staged, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        names = [f.name for f in staged.schema.fields]

        def write() -> None:
            df = self.spark.read.schema(staged.schema).parquet(staged.staging).select(*names)
            writer = (df.write.format("delta").mode(staged.mode).partitionBy(*staged.partition_by)
                      .option("userMetadata", user_metadata(metadata)))
            if app_id:  # Delta checks it inside the commit and refuses a concurrent one with the same id
                writer = writer.option("txnAppId", app_id).option("txnVersion", 1)
            if staged.replace:
                writer = writer.option("replaceWhere",
                                       " AND ".join(f"`{k}` = '{_quote(v)}'" for k, v in staged.replace))
            elif staged.mode == "overwrite":
                writer = writer.option("overwriteSchema", "true")
            writer.save(staged.path)

        return self._race_safe(staged.path, app_id, write, _WRITE_METRICS)

    def _race_safe(self, path: str, app_id: str | None, commit: Callable[[], None],
                   metric_names: Mapping[str, str]) -> WriteResult:
        """``commit()`` until no concurrent writer beats it; a retry first checks ``app_id`` again."""
        tries = 0

        def attempt() -> WriteResult:
            nonlocal tries
            tries += 1
            if tries > 1 and app_id and self.applied(path, app_id):
                return self._skipped(path)
            before = self.version(path)
            commit()
            version, metrics = self._commit_since(path, before)
            if metrics is None:
                return WriteResult(path, version, 0, 0, skipped=True)

            def count(field: str) -> int:
                name = metric_names.get(field)
                return int(metrics.get(name, 0)) if name else 0

            return WriteResult(path, version, count("files"), count("rows"), count("inserted"), count("updated"),
                               count("deleted"))

        return self._until_committed(path, attempt)

    def _lost_race(self, exc: Exception) -> bool:
        # Delta's ConcurrentModificationException family (ConcurrentAppendException, ConcurrentTransaction-
        # Exception, ProtocolChangedException when two writers create one table ...), raised through py4j
        text = f"{type(exc).__name__} {exc}"
        return any(name in text for name in ("ConcurrentAppend", "ConcurrentDelete", "ConcurrentTransaction",
                                             "ConcurrentWrite", "MetadataChanged", "ProtocolChanged",
                                             "DELTA_CONCURRENT", "DELTA_METADATA_CHANGED",
                                             "DELTA_PROTOCOL_CHANGED"))

    def discard(self, staged: Staged) -> None:
        """As :meth:`DeltaStore.discard`, through Hadoop's file system (abfss:// on Synapse, local here)."""
        jvm = self.spark.sparkContext._jvm
        if jvm is None:
            raise DeltaEngineError(f"cannot remove {staged.staging}: the Spark session has stopped", engine=self.name)
        staging = jvm.org.apache.hadoop.fs.Path(staged.staging)
        fs = staging.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        fs.delete(staging, True)
        for folder in (staging.getParent(), jvm.org.apache.hadoop.fs.Path(staged.path)):
            if fs.exists(folder) and len(fs.listStatus(folder)) == 0:
                fs.delete(folder, False)

    def _merge(self, df: DataFrame, path: str, keys: tuple[str, ...], update: bool, app_id: str | None,
               metadata: CommitMetadata | None) -> WriteResult:
        merger = self._delta(path).alias("t").merge(df.alias("s"), _null_safe(keys))
        if update:
            merger = merger.whenMatchedUpdateAll()
        return self._execute(merger.whenNotMatchedInsertAll(), path, app_id, metadata)

    def _delete(self, keys_df: DataFrame, path: str, keys: tuple[str, ...], app_id: str | None,
                metadata: CommitMetadata | None) -> WriteResult:
        merger = self._delta(path).alias("t").merge(keys_df.alias("s"), _null_safe(keys)).whenMatchedDelete()
        return self._execute(merger, path, app_id, metadata)

    def _apply_changes(self, changes: DataFrame, path: str, keys: tuple[str, ...], order: str | None,
                       deleted: str, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        newer = f"(s.`{order}` IS NULL OR t.`{order}` IS NULL OR s.`{order}` >= t.`{order}`)" if order else "TRUE"
        values: dict[str, str | Column] = {f"`{c}`": f"s.`{c}`" for c in changes.columns if c != deleted}
        merger = (self._delta(path).alias("t").merge(changes.alias("s"), _null_safe(keys))
                  .whenMatchedDelete(f"s.`{deleted}` AND {newer}")
                  .whenMatchedUpdate(f"NOT s.`{deleted}` AND {newer}", values)
                  .whenNotMatchedInsert(f"NOT s.`{deleted}`", values))
        return self._execute(merger, path, app_id, metadata)

    def _execute(self, merger: DeltaMergeBuilder, path: str, app_id: str | None, metadata: CommitMetadata | None) -> WriteResult:
        def merge() -> None:
            with self._session_settings(app_id, metadata):
                merger.execute()

        return self._race_safe(path, app_id, merge, _MERGE_METRICS)

    def _commit_since(self, path: str, before: int | None) -> tuple[int, dict[str, Any] | None]:
        """The table version and the operation metrics of the commit just made (None: Delta made none,
        as when its app transaction was already there)."""
        info = self.last_commit(path)
        version = int(info["version"])
        if before is not None and version == before:
            return version, None
        return version, dict(info.get("operationMetrics") or {})

    @contextmanager
    def _session_settings(self, app_id: str | None, metadata: CommitMetadata | None) -> Iterator[None]:
        """The settings through which a MERGE carries its app transaction and commit metadata."""
        settings = {"spark.databricks.delta.commitInfo.userMetadata": user_metadata(metadata)}
        if app_id:
            settings |= {"spark.databricks.delta.write.txnAppId": app_id,
                         "spark.databricks.delta.write.txnVersion": "1"}
        with _SESSION_SETTINGS:
            for key, value in settings.items():
                self.spark.conf.set(key, value)
            try:
                yield
            finally:
                for key in settings:
                    self.spark.conf.unset(key)


def _first(df: DataFrame, path: str) -> Row:
    """The first row of a query on the log of table ``path``; raises DeltaTableError when there is none."""
    row = df.first()
    if row is None:
        raise DeltaTableError(f"Delta table {path} has no commits in its log: rewrite it", path=path)
    return row


def _null_safe(keys: tuple[str, ...]) -> str:
    return " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
