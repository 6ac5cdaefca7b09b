"""Delta IO through Spark's own Delta Lake (Synapse, Databricks): same interface as DeltaStore.

Not exercised on the embedded default, where Spark has no Delta jars; see docs/lake.md.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .delta_io import _STAGING, DeltaStore, Staged, WriteResult
from .errors import DeltaTableError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class SparkDeltaStore(DeltaStore):
    """Delta IO with ``delta-spark``; one app transaction per commit, as Spark allows."""

    def _delta(self, path: str):
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def version(self, path: str) -> int | None:
        if not self.exists(path):
            return None
        return int(self._delta(path).history(1).select("version").first()[0])

    def applied(self, path: str, app_id: str) -> bool:
        if not self.exists(path):
            return False
        log = path.rstrip("/") + "/_delta_log/"
        frames = [self.spark.read.json(log + "*.json")]
        from pyspark.errors import AnalysisException

        with contextlib.suppress(AnalysisException):  # no checkpoint written yet
            frames.append(self.spark.read.parquet(log + "*.checkpoint*.parquet"))
        return any("txn" in f.columns and f.where(f.txn.appId == app_id).limit(1).count() for f in frames)

    @contextlib.contextmanager
    def _txn(self, app_ids: tuple[str, ...], path: str):
        """Delta's session settings that make a MERGE idempotent (one app id per commit)."""
        if len(app_ids) > 1:
            raise DeltaTableError(f"Spark Delta commits carry one app transaction; got {len(app_ids)}", path=path)
        if not app_ids:
            yield
            return
        conf = self.spark.conf
        conf.set("spark.databricks.delta.write.txnAppId", app_ids[0])
        conf.set("spark.databricks.delta.write.txnVersion", "1")
        try:
            yield
        finally:
            conf.unset("spark.databricks.delta.write.txnAppId")
            conf.unset("spark.databricks.delta.write.txnVersion")

    def read(self, path: str) -> DataFrame:
        if not self.exists(path):
            raise DeltaTableError(f"no Delta table at {path}: ingest the source first", path=path)
        return self.spark.read.format("delta").load(path)

    def read_arrow(self, path: str, sql_where: str | None = None):
        from .delta_io import _collect_arrow

        df = self.read(path)
        return _collect_arrow(df.where(sql_where) if sql_where else df)

    def write(self, df: DataFrame, path: str, *, mode: str = "append", partition_by: tuple[str, ...] = (),
              app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        if len(app_ids) > 1:
            raise DeltaTableError(f"Spark Delta commits carry one app transaction; got {len(app_ids)}", path=path)
        writer = df.write.format("delta").mode(mode).partitionBy(*partition_by)
        if app_ids:
            writer = writer.option("txnAppId", app_ids[0]).option("txnVersion", 1)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        writer.save(path)
        return WriteResult(path, self.version(path), 0, -1)

    def stage(self, df: DataFrame, path: str, *, mode: str = "append",
              partition_by: tuple[str, ...] = ()) -> Staged:
        """Parquet in ``<table>/_staging/<id>`` (Delta ignores it); :meth:`commit` writes it as Delta."""
        import uuid

        staged = Staged(path, f"{path.rstrip('/')}/{_STAGING}/{uuid.uuid4().hex}", mode, tuple(partition_by),
                        df.schema)
        try:
            df.write.mode("errorifexists").partitionBy(*partition_by).parquet(staged.staging)
        except Exception:
            self.discard(staged)
            raise
        return staged

    def commit(self, staged: Staged, *, app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        try:
            df = self.spark.read.schema(staged.schema).parquet(staged.staging)
            return self.write(df, staged.path, mode=staged.mode, partition_by=staged.partition_by,
                              app_ids=app_ids, metadata=metadata)
        finally:
            self.discard(staged)

    def discard(self, staged: Staged) -> None:
        jvm = self.spark.sparkContext._jvm
        folder = jvm.org.apache.hadoop.fs.Path(staged.staging)
        folder.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()).delete(folder, True)

    def merge(self, df: DataFrame, path: str, keys: tuple[str, ...], *, update: bool = False,
              app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        if not self.exists(path):
            return self.write(df, path, app_ids=app_ids, metadata=metadata)
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        merger = self._delta(path).alias("t").merge(df.alias("s"), condition)
        if update:
            merger = merger.whenMatchedUpdateAll()
        with self._txn(app_ids, path):
            merger.whenNotMatchedInsertAll().execute()
        return WriteResult(path, self.version(path), 0, -1)

    def delete(self, keys_df: DataFrame, path: str, keys: tuple[str, ...], *, app_ids: tuple[str, ...] = (),
               metadata: dict | None = None) -> WriteResult:
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        with self._txn(app_ids, path):
            self._delta(path).alias("t").merge(keys_df.alias("s"), condition).whenMatchedDelete().execute()
        return WriteResult(path, self.version(path), 0, -1)

    def apply_changes(self, changes: DataFrame, path: str, key: str, *, order: str, deleted: str,
                      app_ids: tuple[str, ...] = (), metadata: dict | None = None) -> WriteResult:
        """As :meth:`DeltaStore.apply_changes`, with Delta Lake's own MERGE."""
        from pyspark.sql import functions as F

        if not self.exists(path):
            live = changes.where(~F.col(deleted)).drop(deleted)
            return self.write(live, path, app_ids=app_ids, metadata=metadata)
        newer = f"(s.`{order}` IS NULL OR t.`{order}` IS NULL OR s.`{order}` >= t.`{order}`)"
        values = {f"`{c}`": f"s.`{c}`" for c in changes.columns if c != deleted}
        merger = self._delta(path).alias("t").merge(changes.alias("s"), f"t.`{key}` = s.`{key}`")
        merger = (merger.whenMatchedDelete(f"s.`{deleted}` AND {newer}")
                  .whenMatchedUpdate(f"NOT s.`{deleted}` AND {newer}", values)
                  .whenNotMatchedInsert(f"NOT s.`{deleted}`", values))
        with self._txn(app_ids, path):
            merger.execute()
        return WriteResult(path, self.version(path), 0, -1)
