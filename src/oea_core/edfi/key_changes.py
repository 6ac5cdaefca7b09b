"""Ed-Fi key changes: a record's natural key rewritten in place, its ``id`` kept.

An ODS/API (5.3 and later) reports at ``<resource>/keyChanges`` the records whose natural key
changed (a student school association's ``entryDate``, a session's or section's keys):
``{"id", "changeVersion", "oldKeyValues", "newKeyValues"}``, keys named as flattened columns
(:func:`.flatten.reference_column`), found in the record at its top level or inside an
``xReference`` object.

Ingest applies a batch's key changes after its upserts and deletes are resolved. Per ``id``, in
change-version order, a key change newer than the record (a greater change version, or a record
without one) rewrites each new key value where the record holds the old one (or anywhere, when
no old value is given) and takes the record to its change version. The record is the batch's
upsert of that ``id`` when the state would take it, else the current state's; a key change of a
deleted or absent record changes nothing, so it never brings a record back. Every key change is
kept in ``stage2np/edfi/<resource>_key_changes`` with whether it was applied, written in the
batch's transaction. Key changes are rare: they are collected to the driver and applied in Python,
and a batch without any costs no Spark job here.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from .flatten import REFERENCE, reference_column

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row

    from ..delta import DeltaStore
    from ..delta.base import CommitMetadata

log = logging.getLogger("oea")
KIND = "keyChanges"
HISTORY = "_key_changes"  # stage2np/edfi/<resource>_key_changes
HISTORY_SCHEMA = ("id string, _change_version bigint, _batch_id string, old_key_values string, "
                  "new_key_values string, applied boolean")
CHANGE_SCHEMA = ("id string, _change_version bigint, _batch_id string, _last_modified string, _record string, "
                 "_deleted boolean")


def key_change_problem(item: dict) -> str | None:
    """Why a keyChanges record cannot be applied (its id and change version checked elsewhere), or None."""
    new, old = item.get("newKeyValues"), item.get("oldKeyValues")
    if new is None:
        return "key change has no newKeyValues"
    if not isinstance(new, dict):
        return f"key change's newKeyValues is {type(new).__name__}, not an object"
    if old is not None and not isinstance(old, dict):
        return f"key change's oldKeyValues is {type(old).__name__}, not an object"
    return None


def rewrite_keys(record: dict, old: dict, new: dict) -> dict:
    """``record`` with each key of ``new`` rewritten where it appears (top level, or in an ``xReference``
    under its column name, role-named ones included), only where the value equals ``old``'s when given."""

    def rewritten(column: str, value: object) -> object:
        if column in new and not isinstance(value, (dict, list)) and (column not in old or old[column] == value):
            return new[column]
        return value

    out: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, dict) and key.endswith(REFERENCE) and len(key) > len(REFERENCE):
            out[key] = {k: rewritten(reference_column(key, k), v) for k, v in value.items()}
        else:
            out[key] = rewritten(key, value)
    return out


def apply_to(record: dict, version: int | None, changes: list[tuple[int | None, dict]]) -> tuple[dict, int | None,
                                                                                                 list[bool]]:
    """``(record, change version, applied)`` after ``changes`` (``(changeVersion, key change)``, oldest first):
    each one newer than the record so far is applied."""
    applied = []
    for change_version, change in changes:
        newer = version is None or (change_version is not None and change_version > version)
        if newer:
            record = rewrite_keys(record, change.get("oldKeyValues") or {}, change["newKeyValues"])
            if change_version is not None:
                version = change_version
                if "changeVersion" in record:
                    record["changeVersion"] = version
        applied.append(newer)
    return record, version, applied


def _base(batch_row: Row | None, state_row: Row | None) -> Row | None:
    """The record a key change applies to: the batch's change when the state will take it, else the state's."""
    if batch_row is not None and batch_row["_deleted"]:
        return None
    if batch_row is None:
        return state_row
    if state_row is not None and None not in (state_row["_change_version"], batch_row["_change_version"]) and (
            state_row["_change_version"] > batch_row["_change_version"]):
        return state_row  # the batch's upsert is older than the state: apply_changes will not take it
    return batch_row


def apply_key_changes(store: DeltaStore, events: DataFrame, changes: DataFrame, table: str, state_path: str,
                      history_path: str, batch_id: str, app_id: str, metadata: CommitMetadata) -> DataFrame:
    """``changes`` (one per id, as ``latest_changes`` gives them) with the batch's key changes applied;
    writes every key change to ``history_path`` in the ``app_id`` transaction."""
    from pyspark.sql import functions as F

    found = events.where((F.col("_kind") == KIND) & F.col("_reject_reason").isNull()).select(
        "id", "_change_version", "_file_seq", "_line", "_record").collect()
    by_id: dict[str, list[tuple[int | None, dict]]] = {}
    for row in sorted(found, key=lambda r: (r["_change_version"] is not None, r["_change_version"] or 0,
                                            r["_file_seq"], r["_line"])):
        by_id.setdefault(row["id"], []).append((row["_change_version"], json.loads(row["_record"])))
    ids = sorted(by_id)
    in_batch = {r["id"]: r for r in changes.where(F.col("id").isin(ids)).collect()}
    in_state = ({r["id"]: r for r in store.read(state_path).where(F.col("id").isin(ids)).select(
        "id", "_change_version", "_last_modified", "_record").collect()} if store.exists(state_path) else {})
    patched: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    missing = 0
    for record_id, key_changes in by_id.items():
        base = _base(in_batch.get(record_id), in_state.get(record_id))
        applied = [False] * len(key_changes)
        if base is None:
            missing += len(key_changes)
        else:
            record, version, applied = apply_to(json.loads(base["_record"]), base["_change_version"], key_changes)
            if any(applied):
                patched.append((record_id, version, batch_id, base["_last_modified"],
                                json.dumps(record, ensure_ascii=False, separators=(",", ":")), False))
        history += [(record_id, version, batch_id, _json(change.get("oldKeyValues")), _json(change["newKeyValues"]),
                     was_applied) for (version, change), was_applied in zip(key_changes, applied, strict=True)]
    spark = events.sparkSession
    store.write(spark.createDataFrame(history, HISTORY_SCHEMA), history_path, app_id=app_id, metadata=metadata)
    if missing:
        log.warning("%s batch %s: %d key changes of records deleted or not in the current state changed nothing; "
                    "they are kept in stage2np/edfi/%s%s (applied = false)", table, batch_id, missing, table, HISTORY)
    if not patched:
        return changes
    fixed = spark.createDataFrame(patched, CHANGE_SCHEMA)
    return changes.join(fixed.select("id"), "id", "left_anti").unionByName(fixed)


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)
