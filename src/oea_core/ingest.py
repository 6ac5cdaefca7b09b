"""Ingestion of landed CSV batches: stage1np -> stage2p ``_pseudo``, stage2np ``_lookup``/``_rejected``.

Each batch is processed once: every table write carries the app transaction
``oea.ingest/<source>/<table>/<batch>``, so a rerun skips what reached a table, and a run
with nothing new writes nothing. Rejected rows are counted before anything is written; a
share above ``max_reject_share`` fails the run and leaves the lake as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .csv_source import RAW_LINE, RAW_PREFIX, REASON, SOURCE_FILE, read_csv_files
from .delta_io import DeltaStore, delta_store
from .errors import RejectedRowsError
from .landing import batch_files, list_batches
from .paths import LakePaths
from .pseudonymize import PSEUDONYM_SUFFIX, to_lookup, to_pseudonymized
from .salt import Salt
from .schema import PseudoOp, TableSchema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("oea")
BATCH = "_batch_id"
DEFAULT_MAX_REJECT_SHARE = 0.05


@dataclass(frozen=True)
class CsvTableDef:
    """A CSV-fed table of a source module and the stage 2 tables it produces."""

    source: str
    landed_name: str
    schema: TableSchema
    file_columns: Callable[[str], dict[str, str]] | None = None
    passthrough: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    date_partition: str | None = None

    @property
    def table(self) -> str:
        return self.schema.table

    @property
    def pseudo_table(self) -> str:
        return f"{self.table}_pseudo"

    @property
    def lookup_table(self) -> str:
        return f"{self.table}_lookup"

    @property
    def rejected_table(self) -> str:
        return f"{self.table}_rejected"

    @property
    def partition_by(self) -> tuple[str, ...]:
        return ("year", "month") if self.date_partition else ()


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one table did."""

    table: str
    batches: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    rows: int = 0
    rejected: int = 0
    versions: dict[str, int | None] = field(default_factory=dict)

    @property
    def nothing_new(self) -> bool:
        return not self.batches


def app_id(source: str, table: str, batch_id: str) -> str:
    """The app transaction id that marks ``batch_id`` as written to ``table``."""
    return f"oea.ingest/{source}/{table}/{batch_id}"


def ingest_csv_table(spark: SparkSession, lake: LakePaths, table_def: CsvTableDef, salt: Salt, *,
                     store: DeltaStore | None = None,
                     max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> IngestResult:
    """Ingest every landed batch of ``table_def`` not yet written; raises RejectedRowsError over the share."""
    from pyspark.sql import functions as F

    store = store or delta_store(spark)
    source, table = table_def.source, table_def.table
    p_path = lake.table("stage2p", source, table_def.pseudo_table)
    batches = list_batches(lake, source, table_def.landed_name)
    done = [b for b in batches if store.applied(p_path, app_id(source, table, b))]
    pending = [b for b in batches if b not in done]
    files = {b: batch_files(lake, source, table_def.landed_name, b) for b in pending}
    empty = [b for b in pending if not files[b]]
    for batch in empty:
        log.warning("%s batch %s holds no CSV files; nothing to ingest", table_def.landed_name, batch)
    pending = [b for b in pending if files[b]]
    if not pending:
        log.info("%s: nothing new (%d batches already ingested)", table, len(done))
        return IngestResult(table, skipped=tuple(done), versions=_versions(store, lake, table_def))
    log.info("%s: ingesting %d batches (%d files)", table, len(pending), sum(len(files[b]) for b in pending))
    frames = [read_csv_files(spark, files[b], table_def.schema, table_def.file_columns,
                             required=table_def.required).withColumn(BATCH, F.lit(b)) for b in pending]
    parsed = frames[0]
    for frame in frames[1:]:
        parsed = parsed.unionByName(frame)
    # Parse the CSV once into columnar scratch: the counts, the lookup and the p table then read
    # only the columns they need (faster than persist(), which stores whole rows).
    scratch = lake.state_path("scratch", f"{table}-{uuid.uuid4().hex}")
    parsed.write.parquet(scratch)
    parsed = spark.read.parquet(scratch)
    try:
        counts = {r[BATCH]: (r["rows"], r["rejected"]) for r in parsed.groupBy(BATCH).agg(
            F.count(F.lit(1)).alias("rows"), F.count(REASON).alias("rejected")).collect()}
        total = sum(c[0] for c in counts.values())
        rejected = sum(c[1] for c in counts.values())
        if total and rejected / total > max_reject_share:
            examples = [r[0] for r in parsed.where(F.col(REASON).isNotNull()).select(
                F.concat(F.col(SOURCE_FILE), F.lit(": "), F.col(REASON))).limit(3).collect()]
            raise RejectedRowsError(
                f"{table}: {rejected} of {total} rows ({rejected / total:.1%}) could not be read, more than "
                f"the allowed {max_reject_share:.1%}; nothing was written. Examples: {examples}. Fix the "
                "export, or raise --max-reject-share to set these rows aside in the _rejected table",
                table=table, rejected=rejected, total=total)
        for batch in pending:
            _write_batch(store, lake, table_def, salt, parsed.where(F.col(BATCH) == batch), batch, counts[batch])
    finally:
        _remove_tree(spark, scratch)
    if rejected:
        log.warning("%s: %d of %d rows rejected, set aside in stage2np/%s/%s", table, rejected, total,
                    source, table_def.rejected_table)
    return IngestResult(table, tuple(pending), tuple(done), total - rejected, rejected,
                        _versions(store, lake, table_def))


def _write_batch(store: DeltaStore, lake: LakePaths, table_def: CsvTableDef, salt: Salt, batch_df: DataFrame,
                 batch: str, counts: tuple[int, int]) -> None:
    from pyspark.sql import functions as F

    source, table = table_def.source, table_def.table
    txn = (app_id(source, table, batch),)
    meta = {"batch_id": batch, "rows": counts[0], "rejected": counts[1]}
    if counts[1]:
        path = lake.table("stage2np", source, table_def.rejected_table)
        if not store.applied(path, txn[0]):
            store.write(_rejected_rows(batch_df, table_def), path, app_ids=txn, metadata=meta)
    good = batch_df.where(F.col(REASON).isNull()).select(*table_def.schema.names, *table_def.passthrough)
    lookup = to_lookup(good, table_def.schema, salt)
    if lookup is not None:
        path = lake.table("stage2np", source, table_def.lookup_table)
        if not store.applied(path, txn[0]):
            keys = tuple(c.name + PSEUDONYM_SUFFIX for c in table_def.schema.with_ops(PseudoOp.HASH))
            store.merge(lookup, path, keys, app_ids=txn, metadata=meta)
    pseudo = to_pseudonymized(good, table_def.schema, salt, table_def.passthrough)
    if table_def.date_partition:
        date = F.col(table_def.date_partition)
        pseudo = pseudo.withColumn("year", F.year(date)).withColumn("month", F.month(date))
    result = store.write(pseudo, lake.table("stage2p", source, table_def.pseudo_table),
                         partition_by=table_def.partition_by, app_ids=txn, metadata=meta)
    log.info("%s batch %s: %d rows written, %d rejected (version %s)", table, batch, counts[0] - counts[1],
             counts[1], result.version)


def _remove_tree(spark: SparkSession, path: str) -> None:
    """Remove a scratch folder, local or on ADLS (through Hadoop's file system)."""
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        _remove_empty_dir(os.path.dirname(path))
        return
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hadoop_path, True)


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _rejected_rows(batch_df: DataFrame, table_def: CsvTableDef) -> DataFrame:
    from pyspark.sql import functions as F

    raw = [F.col(RAW_PREFIX + name).alias(name) for name in table_def.schema.names]
    return batch_df.where(F.col(REASON).isNotNull()).select(
        F.col(BATCH), F.col(SOURCE_FILE), F.col(REASON), *raw, *table_def.passthrough, F.col(RAW_LINE))


def _versions(store: DeltaStore, lake: LakePaths, table_def: CsvTableDef) -> dict[str, int | None]:
    source = table_def.source
    return {
        f"stage2p/{source}/{table_def.pseudo_table}":
            store.version(lake.table("stage2p", source, table_def.pseudo_table)),
        f"stage2np/{source}/{table_def.lookup_table}":
            store.version(lake.table("stage2np", source, table_def.lookup_table)),
    }
