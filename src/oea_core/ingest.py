"""Ingestion of landed CSV batches: stage1np -> stage2p ``_pseudo``, stage2np ``_lookup``/``_rejected``.

Each batch is processed once: every table write carries the app transaction
``oea.ingest/<source>/<table>/<batch>``, so a rerun skips what reached a table, and a run
with nothing new writes nothing.

Each batch's CSV is read once: that one pass stages the p files (uncommitted Parquet) while
Spark observes the row and reject counts and collects the distinct identities for the lookup.
Only when every pending batch is under ``max_reject_share`` are the rejected rows (a second
read, only for batches that have them), the lookup and the p files committed; otherwise the
staged files are removed and the lake is as it was. Before Spark reads a file its bytes are
checked (:mod:`.csv_source`): an empty file is skipped, and every line of a file that is not UTF-8
text is a rejected row, counted under ``max_reject_share`` and named in the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .csv_source import RAW_LINE, RAW_PREFIX, REASON, SOURCE_FILE, read_csv_files, text_problems
from .delta import DeltaStore, Staged, delta_store
from .errors import RejectedRowsError
from .landing import batch_files, list_batches
from .pseudonymize import PSEUDONYM_SUFFIX, identity_columns, to_lookup, to_pseudonymized
from .schema import PseudoOp, TableSchema
from .spark_paths import shown

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import DataFrame, SparkSession

    from .paths import LakePaths
    from .salt import Salt

log = logging.getLogger("oea")
BATCH = "_batch_id"
# identities travel from the executors as JSON; microsecond timestamps survive the round trip
_JSON = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}
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
    kind: str = "ingested"  # "ingested": landed batches into a table; "refined": a table rebuilt from another

    @property
    def nothing_new(self) -> bool:
        return not self.batches

    def describe(self) -> str:
        """One line for the terminal: the table, what was written and what was set aside."""
        label = f"{self.table} ({self.kind})" if self.kind != "ingested" else self.table
        if self.nothing_new:
            return f"{label}: nothing new"
        if self.kind == "refined":
            return f"{label}: {self.rows} rows written, {self.rejected} set aside"
        return f"{label}: {len(self.batches)} batches, {self.rows} rows written, {self.rejected} rejected"


def app_id(source: str, table: str, batch_id: str) -> str:
    """The app transaction id that marks ``batch_id`` as written to ``table``."""
    return f"oea.ingest/{source}/{table}/{batch_id}"


def ingest_csv_table(spark: SparkSession, lake: LakePaths, table_def: CsvTableDef, salt: Salt, *,
                     store: DeltaStore | None = None,
                     max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> IngestResult:
    """Ingest every landed batch of ``table_def`` not yet written; raises RejectedRowsError over the share."""
    store = store or delta_store(spark)
    source, table = table_def.source, table_def.table
    p_path = lake.table("stage2p", source, table_def.pseudo_table)
    batches = list_batches(lake, source, table_def.landed_name)
    applied = store.applied_ids(p_path, [app_id(source, table, b) for b in batches])
    done = [b for b in batches if app_id(source, table, b) in applied]
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
    staged: list[_StagedBatch] = []
    try:
        for batch in pending:
            staged.append(_stage_batch(spark, store, lake, table_def, salt, batch, files[batch]))
        total = sum(item.rows for item in staged)
        rejected = sum(item.rejected for item in staged)
        if total and rejected / total > max_reject_share:
            bad_files = [f for item in staged if item.rejected for f in item.files]
            examples = _reject_examples(spark, table_def, bad_files)
            problems = [f" {shown(path)} is {problem}." for path, problem in text_problems(bad_files).items()]
            not_text = "".join(problems[:5]) + (f" So are {len(problems) - 5} more files." if len(problems) > 5 else "")
            raise RejectedRowsError(
                f"{table}: {rejected} of {total} rows ({rejected / total:.1%}) could not be read, more than "
                f"the allowed {max_reject_share:.1%}; nothing was written.{not_text} Examples: {examples}. Fix "
                "the export, or raise --max-reject-share to set these rows aside in the _rejected table",
                table=table, rejected=rejected, total=total)
        while staged:
            _commit_batch(spark, store, lake, table_def, salt, staged[0])
            staged.pop(0)
    finally:
        for item in staged:
            store.discard(item.pseudo)
    if rejected:
        log.warning("%s: %d of %d rows rejected, set aside in stage2np/%s/%s", table, rejected, total,
                    source, table_def.rejected_table)
    return IngestResult(table, tuple(pending), tuple(done), total - rejected, rejected,
                        _versions(store, lake, table_def))


@dataclass
class _StagedBatch:
    """One batch after its single pass: the staged p files, its counts and its distinct identities."""

    batch: str
    files: list[str]
    pseudo: Staged
    rows: int
    rejected: int
    # JSON array of raw identity structs (never printed); None when nothing is hashed with lookup
    identities: str | None = field(default=None, repr=False)


def _stage_batch(spark: SparkSession, store: DeltaStore, lake: LakePaths, table_def: CsvTableDef, salt: Salt,
                 batch: str, paths: list[str]) -> _StagedBatch:
    """Read a batch's CSV once: stage its p rows, counting rows and rejects and collecting identities on the way."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    schema = table_def.schema
    parsed = read_csv_files(spark, paths, schema, table_def.file_columns, required=table_def.required)
    parsed = parsed.select(*schema.names, *table_def.passthrough, REASON)
    counts = Observation()
    parsed = parsed.observe(counts, F.count(F.lit(1)).alias("rows"), F.count(REASON).alias("rejected"))
    good = parsed.where(F.col(REASON).isNull()).drop(REASON)
    identities = None
    names = identity_columns(schema)
    if names:
        identities = Observation()
        good = good.observe(identities, F.to_json(F.collect_set(F.struct(*names)), _JSON).alias("ids"))
    pseudo = to_pseudonymized(good, schema, salt, table_def.passthrough)
    if table_def.date_partition:
        date = F.col(table_def.date_partition)
        pseudo = pseudo.withColumn("year", F.year(date)).withColumn("month", F.month(date))
    staged = store.stage(pseudo, lake.table("stage2p", table_def.source, table_def.pseudo_table),
                         partition_by=table_def.partition_by)
    got = counts.get
    log.info("%s batch %s: read %d rows from %d files, %d rejected; staged", table_def.table, batch, got["rows"],
             len(paths), got["rejected"])
    return _StagedBatch(batch, paths, staged, got["rows"], got["rejected"],
                        identities.get["ids"] if identities else None)


def _commit_batch(spark: SparkSession, store: DeltaStore, lake: LakePaths, table_def: CsvTableDef, salt: Salt,
                  item: _StagedBatch) -> None:
    """Rejected rows, then the lookup, then the p table: the p commit marks the batch as done."""
    from pyspark.sql import functions as F

    source, table, batch = table_def.source, table_def.table, item.batch
    txn = app_id(source, table, batch)
    meta = {"batch_id": batch, "rows": item.rows, "rejected": item.rejected}
    # Each store call skips a table this batch already reached (its app transaction), so a run cut
    # short between two tables finishes the rest next time without writing anything twice.
    if item.rejected:
        parsed = read_csv_files(spark, item.files, table_def.schema, table_def.file_columns,
                                required=table_def.required).withColumn(BATCH, F.lit(batch))
        store.write(_rejected_rows(parsed, table_def), lake.table("stage2np", source, table_def.rejected_table),
                    app_id=txn, metadata=meta)
    if item.identities is not None:
        names = identity_columns(table_def.schema)
        fields = ", ".join(f"`{c.name}`: {c.type}" for c in table_def.schema.columns if c.name in names)
        ids = spark.createDataFrame([(item.identities,)], "ids string").select(
            F.explode(F.from_json("ids", f"array<struct<{fields}>>", _JSON)).alias("i")).select("i.*")
        keys = tuple(c.name + PSEUDONYM_SUFFIX for c in table_def.schema.with_ops(PseudoOp.HASH))
        lookup = to_lookup(ids, table_def.schema, salt)
        # never None here: identities are collected exactly when a column is hashed with a lookup
        if lookup is not None:
            store.merge(lookup, lake.table("stage2np", source, table_def.lookup_table), keys, app_id=txn,
                        metadata=meta)
    result = store.commit(item.pseudo, app_id=txn, metadata=meta)
    log.info("%s batch %s: %d rows written, %d rejected (version %s)", table, batch, item.rows - item.rejected,
             item.rejected, result.version)


def _reject_examples(spark: SparkSession, table_def: CsvTableDef, paths: list[str], count: int = 3) -> list[str]:
    from pyspark.sql import functions as F

    parsed = read_csv_files(spark, paths, table_def.schema, table_def.file_columns, required=table_def.required)
    return [r[0] for r in parsed.where(F.col(REASON).isNotNull()).select(
        F.concat(F.col(SOURCE_FILE), F.lit(": "), F.col(REASON))).limit(count).collect()]


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
