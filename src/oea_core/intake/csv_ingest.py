"""Ingestion of landed CSV batches: stage1np -> stage2p ``_pseudo``, stage2np ``_lookup``/``_rejected``.

Each batch is processed once: every table write carries the app transaction
``oea.ingest/<source>/<table>/<batch>``, so a rerun skips what reached a table, and a run
with nothing new writes nothing.

Each batch's CSV is read once: that one pass stages the p files (uncommitted Parquet) while
Spark observes the row and reject counts and collects the distinct identities for the lookup.
Each batch is judged on its own: only when its own rejected rows are within ``max_reject_share``
are they (a second read, only for a batch that has them), the lookup and the p files committed;
otherwise its staged files are removed, nothing of it is written, and the ingest stops there (the
batches before it stay written, the ones after it wait). Before Spark reads a file its bytes are
checked (:mod:`.csv_source`): an empty file is skipped, and every line of a file that is not UTF-8
text is a rejected row, counted under ``max_reject_share`` and named in the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..delta import DeltaStore, Staged, delta_store
from ..errors import RejectedRowsError
from ..privacy.pseudonymize import PSEUDONYM_SUFFIX, identity_columns, to_lookup, to_pseudonymized
from ..schema import PseudoOp, TableSchema
from ..source_module import DEFAULT_MAX_REJECT_SHARE, IngestResult
from .csv_source import RAW_LINE, RAW_PREFIX, REASON, SOURCE_FILE, read_csv_files, text_problems
from .landing import batch_files, list_batches
from .spark_paths import shown

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from pyspark.sql import DataFrame, SparkSession

    from ..lake.paths import LakePaths
    from ..privacy.salt import Salt

log = logging.getLogger("oea")
BATCH = "_batch_id"
# identities travel from the executors as JSON; microsecond timestamps survive the round trip
_JSON = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}


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


def app_id(source: str, table: str, batch_id: str) -> str:
    """The app transaction id that marks ``batch_id`` as written to ``table``."""
    return f"oea.ingest/{source}/{table}/{batch_id}"


def ingest_csv_table(spark: SparkSession, lake: LakePaths, table_def: CsvTableDef, salt: Salt, *,
                     store: DeltaStore | None = None, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
                     batches: Collection[str] | None = None) -> IngestResult:
    """Ingest every landed batch of ``table_def`` not yet written (only ``batches`` when given), oldest first,
    each judged on its own reject share: a batch over ``max_reject_share`` raises RejectedRowsError with
    nothing of it written, after the batches before it were; the batches after it wait for the next run."""
    return ingest_csv_tables(spark, lake, [table_def], salt, store=store, max_reject_share=max_reject_share,
                             batches=batches)[0]


def ingest_csv_tables(spark: SparkSession, lake: LakePaths, table_defs: Sequence[CsvTableDef], salt: Salt, *,
                      store: DeltaStore | None = None, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
                      batches: Collection[str] | None = None) -> list[IngestResult]:
    """Ingest the landed batches of each of ``table_defs`` (see :func:`ingest_csv_table`).

    With ``batches`` (a submission's own batch), the batch is all or nothing across the tables: every table's
    part of it is read and judged before any is committed, so a rejected batch leaves every table as it was.
    """
    store = store or delta_store(spark)
    plans = [_plan(store, lake, table_def, batches) for table_def in table_defs]
    if batches is None:
        return [_ingest_one_by_one(spark, store, lake, plan, salt, max_reject_share) for plan in plans]
    staged: list[tuple[_Plan, _StagedBatch]] = []
    committed: list[tuple[_Plan, _StagedBatch]] = []
    try:
        for plan in plans:
            for batch in plan.pending:
                staged.append((plan, item := _stage_batch(spark, store, lake, plan.table_def, salt, batch,
                                                          plan.files[batch])))
                _gate(spark, plan, item, max_reject_share, written=[], waiting=[])
        while staged:
            _commit_batch(spark, store, lake, staged[0][0].table_def, salt, staged[0][1])
            committed.append(staged.pop(0))
    finally:
        for _, item in staged:
            store.discard(item.pseudo)
    return [plan.result(store, lake, plan.pending, sum(i.rows for p, i in committed if p is plan),
                        sum(i.rejected for p, i in committed if p is plan)) for plan in plans]


@dataclass(frozen=True)
class _Plan:
    """What is landed of a table and not yet written: the batches, oldest first, and their files."""

    table_def: CsvTableDef
    done: tuple[str, ...]
    pending: tuple[str, ...]
    files: dict[str, list[str]]

    def result(self, store: DeltaStore, lake: LakePaths, written: Sequence[str], rows: int = 0,
               rejected: int = 0) -> IngestResult:
        table = self.table_def.table
        if not written:
            log.info("%s: nothing new (%d batches already ingested)", table, len(self.done))
        elif rejected:
            log.warning("%s: %d of %d rows rejected, set aside in stage2np/%s/%s", table, rejected, rows,
                        self.table_def.source, self.table_def.rejected_table)
        return IngestResult(table, tuple(written), self.done, rows - rejected, rejected,
                            _versions(store, lake, self.table_def))


def _plan(store: DeltaStore, lake: LakePaths, table_def: CsvTableDef, only: Collection[str] | None) -> _Plan:
    source, table = table_def.source, table_def.table
    p_path = lake.table("stage2p", source, table_def.pseudo_table)
    landed = list_batches(lake, source, table_def.landed_name)
    if only is not None:
        landed = [b for b in landed if b in only]
    applied = store.applied_ids(p_path, [app_id(source, table, b) for b in landed])
    done = [b for b in landed if app_id(source, table, b) in applied]
    files = {b: batch_files(lake, source, table_def.landed_name, b) for b in landed if b not in done}
    for batch in [b for b, found in files.items() if not found]:
        log.warning("%s batch %s holds no CSV files; nothing to ingest", table_def.landed_name, batch)
    pending = tuple(b for b, found in files.items() if found)
    if pending:
        log.info("%s: ingesting %d batches (%d files)", table, len(pending), sum(len(files[b]) for b in pending))
    return _Plan(table_def, tuple(done), pending, files)


def _ingest_one_by_one(spark: SparkSession, store: DeltaStore, lake: LakePaths, plan: _Plan, salt: Salt,
                       max_reject_share: float) -> IngestResult:
    """Each pending batch read, judged and committed before the next is read."""
    written: list[str] = []
    rows = rejected = 0
    for number, batch in enumerate(plan.pending):
        item = _stage_batch(spark, store, lake, plan.table_def, salt, batch, plan.files[batch])
        try:
            _gate(spark, plan, item, max_reject_share, written=written, waiting=plan.pending[number + 1:])
            _commit_batch(spark, store, lake, plan.table_def, salt, item)
        finally:
            store.discard(item.pseudo)  # a no-op once committed
        written.append(batch)
        rows, rejected = rows + item.rows, rejected + item.rejected
    return plan.result(store, lake, written, rows, rejected)


def _gate(spark: SparkSession, plan: _Plan, item: _StagedBatch, max_reject_share: float, *,
          written: Sequence[str], waiting: Sequence[str]) -> None:
    """RejectedRowsError when more of the batch's own rows than ``max_reject_share`` could not be read."""
    if not item.rows or item.rejected / item.rows <= max_reject_share:
        return
    table_def, table = plan.table_def, plan.table_def.table
    examples = _reject_examples(spark, table_def, item.files)
    problems = [f" {shown(path)} is {problem}." for path, problem in text_problems(item.files).items()]
    not_text = "".join(problems[:5]) + (f" So are {len(problems) - 5} more files." if len(problems) > 5 else "")
    raise RejectedRowsError(
        f"{table} batch {item.batch}: {item.rejected} of {item.rows} rows ({item.rejected / item.rows:.1%}) could "
        f"not be read, more than the allowed {max_reject_share:.1%}; nothing of batch {item.batch} was written."
        f"{queue_words(written, waiting, 'written')}{not_text} Examples: {examples}. Fix the export and land it again (then remove "
        f"stage1np/{table_def.source}/{table_def.landed_name}/{item.batch}), or raise --max-reject-share to set "
        "these rows aside in the _rejected table", table=table, rejected=item.rejected, total=item.rows)


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


def queue_words(written: Sequence[str], waiting: Sequence[str], done: str) -> str:
    """What a rejected batch's error says of the batches around it: ``done`` before it, waiting behind it."""
    before = f" Batches {', '.join(written)} were {done} before it." if written else ""
    after = (f" {len(waiting)} later batches ({', '.join(waiting[:3])}{', ...' if len(waiting) > 3 else ''}) "
             "wait behind it." if waiting else "")
    return before + after


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
