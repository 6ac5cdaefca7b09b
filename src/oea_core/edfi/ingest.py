"""Ed-Fi ingestion: landed batches -> ``stage2np/edfi/<resource>`` (current state), then refine.

Ingest: every landed record is an upsert or a delete of the record with that ``id``. Within a
batch the newest change wins: by change version where the records carry one, else deletes
after upserts, else file and line order; across batches, a later batch wins unless both
changes carry change versions and the later one is older. Each batch is applied in one
Delta commit carrying ``oea.ingest/edfi/<namespace>/<resource>/<batch>``, so a rerun skips it.
Every delete leaves a tombstone (``<resource>_tombstones``); an upsert of a deleted record is ignored
unless it is provably newer (:func:`without_deleted`), so a delete that landed first stays a delete.
Then the batch's key changes rewrite the natural keys of the records they are newer than
(:mod:`.key_changes`), and are kept in ``<resource>_key_changes``.
Lines that are not JSON records with an ``id`` are set aside in ``<resource>_rejected``, and so is
a record past the limits (``MAX_RECORD_BYTES``, 16 MiB; ``flatten.MAX_DEPTH``, 64 levels): a JSON
Lines record is measured before it is parsed, and a JSON array too deep for Python's parser is
split into items without parsing, so no record can crash a worker and the others still load.

Refine (flat, typed, pseudonymized tables in stage2p) is :mod:`.refine`.
"""

from __future__ import annotations

import json
import logging
import re
from itertools import accumulate, islice
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..errors import RejectedRowsError
from ..intake.csv_ingest import queue_words
from ..intake.spark_paths import file_uri, literal_path
from ..source_module import IngestResult
from . import landing
from .flatten import MAX_DEPTH
from .key_changes import HISTORY, apply_key_changes, key_change_problem
from .metadata import table_name

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from pyspark.sql import DataFrame, SparkSession

    from ..delta import DeltaStore
    from ..lake.paths import LakePaths

log = logging.getLogger("oea")
SOURCE = "edfi"
EVENT_SCHEMA = ("_batch_id string, _kind string, _file_seq int, _line int, id string, _change_version bigint, "
                "_last_modified string, _record string, _reject_reason string, _source_file string, _raw string")
TOMBSTONES = "_tombstones"  # stage2np/edfi/<resource>_tombstones: id, _change_version, _batch_id of each delete
STATE_COLUMNS = ("id", "_change_version", "_batch_id", "_last_modified", "_record")
REJECTED_COLUMNS = ("_batch_id", "_source_file", "_line", "_reject_reason", "_raw")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_OLD_DELETE_KEYS = {"Id": "id", "ChangeVersion": "changeVersion", "KeyValues": "keyValues"}
MAX_RECORD_BYTES = 16 * 2**20  # one record; real Ed-Fi records are a few KiB
RAW_KEPT = 100_000  # characters of an oversize or unreadable text kept in _raw


def resource_table(namespace: str, resource: str) -> str:
    """``students`` -> ``students``; another namespace is a prefix: ``tpdm`` ``candidates`` -> ``tpdm_candidates``."""
    name = table_name(resource)
    return name if namespace == landing.DEFAULT_NAMESPACE else f"{re.sub(r'[^a-z0-9]+', '_', namespace.lower())}_{name}"


def ingest_app_id(namespace: str, resource: str, batch_id: str) -> str:
    return f"oea.ingest/{SOURCE}/{namespace}/{resource}/{batch_id}"


# parsing (runs on Spark's Python workers) ------------------------------------------------------
def normalize_id(value: object) -> str | None:
    """A record id as text; GUIDs lower-case without dashes (older APIs spell them differently)."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return value.replace("-", "").lower() if _GUID.match(value) else value


def parse_file(text: str, kind: str):
    """``(line, record-or-None, reason-or-None, raw)`` for every record of a landed file's text.

    JSON arrays and JSON Lines both work; a byte-order mark and blank lines are ignored. A record
    larger than ``MAX_RECORD_BYTES`` or nested deeper than ``MAX_DEPTH`` is rejected before it is
    parsed (its ``raw`` cut to ``RAW_KEPT`` characters); an array item's line is its position.
    """
    text = text.lstrip("\ufeff")
    stripped = text.strip()
    if not stripped:
        return
    if stripped.startswith("["):
        yield from _parse_array(stripped, kind)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield (number, *_parse_record(line, kind, "line"))


def _parse_record(text: str, kind: str, what: str) -> tuple[dict | None, str | None, str]:
    """``(record, reason, raw)`` for one record's JSON text, its limits checked before parsing."""
    reason = _past_limits(text)
    if reason:
        return None, reason, text[:RAW_KEPT]
    try:
        item = json.loads(text)
    except ValueError as exc:
        return None, f"{what} is not valid JSON: {exc}", text
    return (*_check_record(item, kind), text)


def _past_limits(text: str) -> str | None:
    """Why a record's JSON text is too large or too deep to load, or None; cheap for ordinary records."""
    if len(text) > MAX_RECORD_BYTES // 4 and (size := len(text.encode("utf-8", "surrogatepass"))) > MAX_RECORD_BYTES:
        return f"record is {size:,} bytes, more than the limit of {MAX_RECORD_BYTES:,}"
    if text.count("{") + text.count("[") > MAX_DEPTH and (depth := nesting_depth(text)) > MAX_DEPTH:
        return f"record is nested {depth:,} levels deep, more than the limit of {MAX_DEPTH}"
    return None


def _parse_array(text: str, kind: str):
    """Like :func:`parse_file` for a JSON array file; its items are numbered from 1."""
    try:
        items = json.loads(text)
    except RecursionError:  # an item nests too deep for Python's parser: split the array without parsing it
        for number, item_text in enumerate(_array_items(text), start=1):
            yield (number, *_parse_record(item_text, kind, "item"))
        return
    except ValueError as exc:
        yield 0, None, f"file is not valid JSON: {exc}", text[:RAW_KEPT]
        return
    for number, item in enumerate(items, start=1):
        try:
            raw = json.dumps(item, ensure_ascii=False)
        except RecursionError:  # too deep to write back as JSON (so far past the limit): take its text
            raw = next(islice(_array_items(text), number - 1, None))
        reason = _past_limits(raw)
        yield (number, None, reason, raw[:RAW_KEPT]) if reason else (number, *_check_record(item, kind), raw)


_JSON_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRINGS = re.compile(_JSON_STRING, re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_TOKENS = re.compile(_JSON_STRING + r"|[\[\]{},]", re.DOTALL)
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, found without parsing (and so without recursion)."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _array_items(text: str):
    """The texts of a JSON array's top-level items (``text`` starts with ``[``), split without parsing."""
    depth, start, end = 0, 1, len(text)  # an array never closed: the rest is its last item
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in ("[", "{"):
            depth += 1
        elif char in ("]", "}"):
            depth -= 1
            if depth == 0:
                end = token.start()
                break
        elif char == "," and depth == 1:
            yield text[start:token.start()].strip()
            start = token.end()
    if last := text[start:end].strip():
        yield last


def _check_record(item: object, kind: str) -> tuple[dict | None, str | None]:
    if not isinstance(item, dict):
        return None, f"expected a JSON object, got {type(item).__name__}"
    if kind == "deletes":
        item = {_OLD_DELETE_KEYS.get(k, k) if _OLD_DELETE_KEYS.get(k, k) not in item else k: v
                for k, v in item.items()}
    record_id = normalize_id(item.get("id"))
    if record_id is None:
        return None, "record has no id"
    version, problem = change_version(item.get("changeVersion"))
    if problem:
        return None, problem
    if kind == "keyChanges" and (problem := key_change_problem(item)):
        return None, problem
    if version is not None:
        item["changeVersion"] = version
    item["id"] = record_id
    return item, None


_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d{1,19}\s*$")


def change_version(value: object) -> tuple[int | None, str | None]:
    """A record's ``changeVersion`` as an integer, or why it is not one.

    Exports spell it as a JSON number or, from some tools, as a string (``"123456"``): both are taken
    where the value is unambiguous (digits, or a whole number such as ``123456.0``); anything else
    (``"12a"``, ``1.5``, ``true``, ``"1e6"``, past a bigint) is refused with the reason.
    """
    if value is None:
        return None, None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer() or isinstance(value, str) and _INTEGER_TEXT.match(value):
        number = int(value)
    if number is None or not -(2**63) <= number < 2**63:
        return None, f"changeVersion {value!r} is not an integer"
    return number, None


def _events(path_meta: dict, pair: tuple[str, str]):
    uri, text = pair
    meta = path_meta.get(uri) or path_meta.get(file_uri(unquote(urlsplit(uri).path)))
    if meta is None:
        raise RuntimeError(f"landed file {uri} is not in its batch manifest")
    batch, kind, seq, source = meta
    for number, record, reason, raw in parse_file(text, kind):
        if record is None:
            yield (batch, kind, seq, number, None, None, None, None, reason, source, raw)
            continue
        body = None if kind == "deletes" else json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        yield (batch, kind, seq, number, record["id"], record.get("changeVersion"),
               record.get("_lastModifiedDate"), body, None, source, None)


def read_events(spark: SparkSession, lake: LakePaths, namespace: str, resource: str,
                batch_ids: list[str]) -> DataFrame | None:
    """Every landed record of the batches as change events (``EVENT_SCHEMA``); None when no files."""
    import os
    from functools import partial

    from pyspark.sql import functions as F

    path_meta, paths = {}, []  # meta by the URI input_file_name() gives; paths escaped, never glob patterns
    for batch_id in batch_ids:
        for seq, (kind, path) in enumerate(landing.batch_files(lake, namespace, resource, batch_id)):
            path_meta[file_uri(path)] = (batch_id, kind, seq, os.path.relpath(path, lake.root))
            paths.append(literal_path(os.path.abspath(path)))
    if not path_meta:
        return None
    texts = spark.read.text(paths, wholetext=True).select(F.input_file_name(), "value")
    return spark.createDataFrame(texts.rdd.flatMap(partial(_events, path_meta)), EVENT_SCHEMA, verifySchema=False)


# ingest ------------------------------------------------------------------------------------------
def ingest_resource(spark: SparkSession, lake: LakePaths, store: DeltaStore, namespace: str, resource: str, *,
                    max_reject_share: float, batches: Collection[str] | None = None,
                    check_only: bool = False) -> IngestResult:
    """Apply every landed batch of a resource not yet applied (only ``batches`` when given) to its current-state
    table, oldest first, each judged on its own reject share: a batch over ``max_reject_share`` raises
    RejectedRowsError with nothing of it written, after the batches before it were applied. ``check_only``
    judges every pending batch and writes nothing."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    table = resource_table(namespace, resource)
    state_path = lake.table("stage2np", SOURCE, table)
    all_batches = [b for b in landing.batches(lake, namespace, resource) if batches is None or b in batches]
    applied = store.applied_ids(state_path, [ingest_app_id(namespace, resource, b) for b in all_batches])
    done = [b for b in all_batches if ingest_app_id(namespace, resource, b) in applied]
    pending = [b for b in all_batches if b not in done and landing.batch_files(lake, namespace, resource, b)]
    new_events = read_events(spark, lake, namespace, resource, pending)  # None exactly when nothing is pending
    if new_events is None:
        log.info("%s: nothing new (%d batches already ingested)", table, len(done))
        return IngestResult(table, skipped=tuple(done), versions={f"stage2np/{SOURCE}/{table}":
                                                                   store.version(state_path)})
    events = new_events.persist(StorageLevel.DISK_ONLY)
    written: list[str] = []
    try:
        read = F.col("_reject_reason").isNull()
        counts = {r["_batch_id"]: (r["rows"], r["rejected"], r["deletes"], r["key_changes"])
                  for r in events.groupBy("_batch_id").agg(
                      F.count(F.lit(1)).alias("rows"), F.count("_reject_reason").alias("rejected"),
                      F.count(F.when(read & (F.col("_kind") == "deletes"), 1)).alias("deletes"),
                      F.count(F.when(read & (F.col("_kind") == "keyChanges"), 1)).alias("key_changes")).collect()}
        for number, batch_id in enumerate(pending):
            batch_counts = counts.get(batch_id, (0, 0, 0, 0))
            _judge(events, table, batch_id, batch_counts, max_reject_share, written, pending[number + 1:])
            if not check_only:
                _apply_batch(store, lake, table, namespace, resource, events.where(F.col("_batch_id") == batch_id),
                             batch_id, batch_counts)
                written.append(batch_id)
    finally:
        events.unpersist()
    total = sum(counts[b][0] for b in written if b in counts)
    rejected = sum(counts[b][1] for b in written if b in counts)
    if rejected:
        log.warning("%s: %d of %d records rejected, set aside in stage2np/%s/%s_rejected", table, rejected,
                    total, SOURCE, table)
    return IngestResult(table, tuple(written), tuple(done), total - rejected, rejected,
                        {f"stage2np/{SOURCE}/{table}": store.version(state_path)})


def _judge(events: DataFrame, table: str, batch_id: str, counts: tuple[int, int, int, int], max_reject_share: float,
           written: Sequence[str], waiting: Sequence[str]) -> None:
    """RejectedRowsError when more of the batch's own records than ``max_reject_share`` could not be read."""
    from pyspark.sql import functions as F

    total, rejected = counts[0], counts[1]
    if not total or rejected / total <= max_reject_share:
        return
    examples = [f"{r['_source_file']} line {r['_line']}: {r['_reject_reason']}" for r in
                events.where((F.col("_batch_id") == batch_id) & F.col("_reject_reason").isNotNull()).limit(3).collect()]
    raise RejectedRowsError(
        f"{table} batch {batch_id}: {rejected} of {total} records ({rejected / total:.1%}) could not be read, more "
        f"than the allowed {max_reject_share:.1%}; nothing of batch {batch_id} was written."
        f"{queue_words(written, waiting, 'applied')} "
        f"Examples: {examples}. Fix the export and land it again (then remove the batch's folder from stage1np), "
        "or raise --max-reject-share to set these records aside", table=table, rejected=rejected, total=total)


def latest_changes(events: DataFrame) -> DataFrame:
    """One change per id: the newest by change version, then deletes after upserts, then file and line.

    Key changes are not among them (:mod:`.key_changes` applies them afterwards).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    deleted = F.col("_kind") == "deletes"
    newest_first = Window.partitionBy("id").orderBy(
        F.col("_change_version").desc_nulls_last(), deleted.desc(), F.col("_file_seq").desc(), F.col("_line").desc())
    ranked = events.where(F.col("_reject_reason").isNull() & (F.col("_kind") != "keyChanges")).withColumn(
        "_rank", F.row_number().over(newest_first))
    return ranked.where(F.col("_rank") == 1).select(
        "id", "_change_version", "_batch_id", "_last_modified", "_record", deleted.alias("_deleted"))


def _apply_batch(store: DeltaStore, lake: LakePaths, table: str, namespace: str, resource: str,
                 events: DataFrame, batch_id: str, counts: tuple[int, int, int, int]) -> None:
    from pyspark.sql import functions as F

    txn = ingest_app_id(namespace, resource, batch_id)
    meta = {"batch_id": batch_id, "records": counts[0], "rejected": counts[1]}
    if counts[1]:
        store.write(events.where(F.col("_reject_reason").isNotNull()).select(*REJECTED_COLUMNS),
                    lake.table("stage2np", SOURCE, f"{table}_rejected"), app_id=txn, metadata=meta)
    changes = latest_changes(events)
    tombstones = lake.table("stage2np", SOURCE, f"{table}{TOMBSTONES}")
    ignored = 0
    if store.exists(tombstones):
        changes, ignored = without_deleted(store.read(tombstones), changes)
    if counts[2]:  # the batch has deletes: each leaves a tombstone
        deletes = changes.where(F.col("_deleted")).select("id", "_change_version", "_batch_id")
        store.merge(deletes, tombstones, ("id",), update=True, app_id=txn, metadata=meta)
    state_path = lake.table("stage2np", SOURCE, table)
    if counts[3]:
        changes = apply_key_changes(store, events, changes, table, state_path,
                                    lake.table("stage2np", SOURCE, f"{table}{HISTORY}"), batch_id, txn, meta)
    result = store.apply_changes(changes, state_path, "id",
                                 order="_change_version", deleted="_deleted", app_id=txn, metadata=meta)
    if not store.applied(state_path, txn):  # every change lost to a newer one: the MERGE made no commit
        result = store.write(store.read(state_path).limit(0), state_path, app_id=txn, metadata=meta)
    if ignored:
        log.warning("%s batch %s: %d upserts of records deleted before (by a delete that landed first) were "
                    "ignored; their tombstones are in stage2np/%s/%s%s", table, batch_id, ignored, SOURCE, table,
                    TOMBSTONES)
    log.info("%s batch %s: %d records applied (%d key changes), %d rejected (version %s)", table, batch_id,
             counts[0] - counts[1] - counts[3], counts[3], counts[1], result.version)


def without_deleted(tombstones: DataFrame, changes: DataFrame) -> tuple[DataFrame, int]:
    """``changes`` less the upserts of records a tombstone says were deleted, and how many those were.

    An upsert passes a tombstone only when both carry change versions and the upsert's is newer: Ed-Fi
    never reuses a record's ``id``, so an upsert that is not provably newer than the delete of its
    record is a late delivery of an older version, and would bring the record back.
    """
    from pyspark.sql import functions as F

    tomb = tombstones.select(F.col("id").alias("_tomb_id"), F.col("_change_version").alias("_tomb_version"))
    joined = changes.join(tomb, changes["id"] == tomb["_tomb_id"], "left")
    newer = F.col("_change_version").isNotNull() & F.col("_tomb_version").isNotNull() & (
        F.col("_change_version") > F.col("_tomb_version"))
    keep = F.col("_deleted") | F.col("_tomb_id").isNull() | newer
    ignored = joined.where(~keep).count()
    return joined.where(keep).drop("_tomb_id", "_tomb_version"), ignored
