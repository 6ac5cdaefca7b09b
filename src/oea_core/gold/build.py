"""Entry points: ``build_vault`` then ``build_star``, per batch, callable as flow ``python`` steps.

Run both for each batch in the order the batches are loaded: the star reads the vault as the batch
left it (the latest satellite rows are the batch's snapshot). ``effective_date`` is the business date
the batch describes (``valid_from`` of the versions it opens); a batch dated before earlier ones is a
late change (see :mod:`.scd`). Each table's commit carries ``oea.gold/<vault|star>/<table>/<batch>``,
so rerunning a batch writes nothing, and a batch that changed nothing writes nothing either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cloud_lake import open_cloud
from ..delta import delta_store
from ..delta.rs import table_version
from ..errors import GoldError
from ..lock import lake_lock
from ..paths import LakePaths
from ..spark import get_spark
from . import facts
from .changes import sync_rows
from .dq import STAR_CHECKS, VAULT_CHECKS, raise_on_failures, run_checks
from .keys import UNKNOWN_KEY, hash_key_column
from .model import (
    CLEVER,
    EDFI,
    GOLD_STAGE,
    HUB_SCHOOL,
    HUB_SECTION,
    HUB_STUDENT,
    LINK_ENROLLMENT,
    SAT_ENROLLMENT,
    SAT_SCHOOL,
    SAT_STUDENT_DEMOGRAPHICS,
    SECTION_ATTRIBUTES,
    STAR,
    VAULT,
    VAULT_LOADS,
    VAULT_TABLES,
)
from .scd import apply_scd1, apply_scd2
from .star import current_attributes, star_app_id, star_path, unknown_member, write_dim_date
from .vault import load_vault, require_columns

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyspark.sql import DataFrame

    from ..delta import DeltaStore, WriteResult

log = logging.getLogger("oea")


@dataclass(frozen=True)
class GoldResult:
    """What a build wrote (per table), its data-quality counts, and the Clever rows kept under student ``-1``."""

    tables: dict[str, WriteResult]
    checks: dict[str, int] = field(default_factory=dict)
    unknown_students: int = 0
    up_to_date: bool = False  # skipped: no input table changed since the last successful build

    @property
    def rows(self) -> int:
        """Rows written or merged, over all tables (what a flow step reports)."""
        return sum(result.rows for result in self.tables.values())


def _settings(lake: LakePaths | str | None, batch_id: str | None, context: dict[str, Any] | None,
              what: str) -> tuple[LakePaths, str]:
    context = context or {}
    lake = lake if lake is not None else context.get("lake")
    batch_id = batch_id or context.get("batch_id")
    if lake is None or not batch_id:
        raise GoldError(f"{what} needs a lake and a batch id: pass lake= and batch_id=, or run it as a flow python "
                        "step (which passes both in context)")
    return (lake if isinstance(lake, LakePaths) else LakePaths.from_setting(lake)), str(batch_id)


def _store(store: DeltaStore | None, engine: str | None) -> DeltaStore:
    return store if store is not None else delta_store(get_spark("oea-gold"), engine)


@contextlib.contextmanager
def _synced(lake: LakePaths, area: str) -> Iterator[None]:
    """A build of ``area`` under the lake's ``gold`` lock; on a cloud lake's working copy, with its inputs
    (``stage2p/edfi``, ``stage2p/clever``, and the vault for the star) and its own folder pulled from the
    account first, and its own folder pushed once the build succeeded (see :mod:`oea_core.cloud_lake`)."""
    with lake_lock(lake, "gold", f"gold {area}"):
        if lake.account is None or lake.root is None:  # a local lake, or Spark reaching the account (Synapse)
            yield
            return
        cloud = open_cloud(lake)
        inputs = [("stage2p", EDFI), ("stage2p", CLEVER)] + ([(GOLD_STAGE, VAULT)] if area == STAR else [])
        for stage, source in inputs:
            cloud.folder(stage, source).pull()
        own = cloud.folder(GOLD_STAGE, area)
        own.pull()
        yield
        own.push()


def _inputs(lake: LakePaths, area: str) -> dict[str, int | None] | None:
    """The Delta version of every table a build of ``area`` reads (None: a cloud lake, whose working copy is
    only brought up to date inside :func:`_synced`, or Spark reaching the account: always build)."""
    if lake.root is None or lake.account is not None:
        return None
    tables = [("stage2p", source, name) for source in (EDFI, CLEVER)
              for name in sorted(_listdir(lake.path("stage2p", source)))]
    if area == STAR:
        tables += [(GOLD_STAGE, VAULT, name) for name in VAULT_TABLES]
    return {"/".join(t): table_version(lake.table(*t)) for t in tables}


def _listdir(folder: str) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name, "_delta_log"))]
    except FileNotFoundError:
        return []


def _built_from(lake: LakePaths, area: str) -> str:
    return lake.state_path("gold", f"{area}_inputs.json")


def up_to_date(lake: LakePaths, area: str) -> tuple[bool, dict[str, int | None] | None]:
    """Whether ``area`` (vault or star) was built from exactly the input versions the lake holds now, and
    those versions (recorded after a build whose checks passed). Reads Delta logs only: no Spark."""
    inputs = _inputs(lake, area)
    if inputs is None:
        return False, None
    try:
        with open(_built_from(lake, area), encoding="utf-8") as f:
            recorded = json.load(f).get("inputs")
    except (OSError, ValueError):
        return False, inputs
    return recorded == inputs and all(v is not None for v in inputs.values()), inputs


def _record_inputs(lake: LakePaths, area: str, batch_id: str, inputs: dict[str, int | None] | None) -> None:
    if inputs is None:
        return
    path = _built_from(lake, area)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"batch_id": batch_id, "inputs": inputs}, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def build_vault(lake: LakePaths | str | None = None, batch_id: str | None = None, *,
                load_ts: dt.datetime | None = None, store: DeltaStore | None = None, engine: str | None = None,
                checks: bool = True, context: dict[str, Any] | None = None) -> GoldResult:
    """Load the Data Vault (``stage3p/vault``) from ``stage2p/edfi`` for one batch.

    Raises GoldError for a missing setting or input, DataQualityError when a check finds offending rows.
    """
    lake, batch_id = _settings(lake, batch_id, context, "build_vault")
    with _synced(lake, VAULT):
        current, inputs = up_to_date(lake, VAULT)
        if current:
            log.info("vault: up to date, no input table changed since its last build; nothing to do")
            return GoldResult({}, up_to_date=True)
        store = _store(store, engine)
        results = load_vault(store, lake, VAULT_LOADS, batch_id, load_ts or dt.datetime.now(dt.timezone.utc))
        counts = run_checks(store, lake, VAULT_CHECKS) if checks else {}
        raise_on_failures(counts, f"vault batch {batch_id}")
        _record_inputs(lake, VAULT, batch_id, inputs if checks else None)
        return GoldResult(results, counts)


def _read(store: DeltaStore, path: str, what: str) -> DataFrame:
    if not store.exists(path):
        raise GoldError(f"{path} does not exist: {what}", table=path.rstrip("/").rsplit("/", 1)[-1])
    return store.read(path)


def _scd2(store: DeltaStore, lake: LakePaths, table: str, snapshot: DataFrame, key: str, surrogate: str,
          effective_date: dt.date, batch_id: str) -> WriteResult:
    attributes = [c for c in snapshot.columns if c != key]
    return apply_scd2(store, star_path(lake, table), snapshot, key=key, surrogate=surrogate, attributes=attributes,
                      effective_date=effective_date, app_id=star_app_id(table, batch_id),
                      reserved=unknown_member(snapshot, key, surrogate, attributes), metadata={"batch_id": batch_id})


def _dimensions(store: DeltaStore, lake: LakePaths, effective_date: dt.date, batch_id: str) -> dict[str, WriteResult]:
    from pyspark.sql import functions as F

    def vault(table: str) -> DataFrame:
        return _read(store, lake.table(GOLD_STAGE, VAULT, table), "run build_vault for the batch first")

    students = current_attributes(vault(HUB_STUDENT.table), vault(SAT_STUDENT_DEMOGRAPHICS.table), HUB_STUDENT,
                                  SAT_STUDENT_DEMOGRAPHICS)
    schools = current_attributes(vault(HUB_SCHOOL.table), vault(SAT_SCHOOL.table), HUB_SCHOOL, SAT_SCHOOL)
    results = {
        "dim_student": _scd2(store, lake, "dim_student", students, HUB_STUDENT.hash_key, facts.STUDENT_KEY,
                             effective_date, batch_id),
        "dim_school": _scd2(store, lake, "dim_school", schools, HUB_SCHOOL.hash_key, facts.SCHOOL_KEY,
                            effective_date, batch_id)}
    sections = _read(store, lake.table("stage2p", EDFI, "sections"), "ingest and refine Ed-Fi first")
    require_columns(sections, HUB_SECTION.business_key, "stage2p/edfi/sections")
    hk = HUB_SECTION.hash_key
    snapshot = sections.select(
        hash_key_column(*[F.col(c) for c in HUB_SECTION.business_key]).alias(hk), *HUB_SECTION.business_key,
        *[(F.col(n) if n in sections.columns else F.lit(None)).cast(t).alias(n) for n, t in SECTION_ATTRIBUTES]
    ).where(F.col(hk).isNotNull()).dropDuplicates([hk])
    results["dim_section"] = apply_scd1(
        store, star_path(lake, "dim_section"), snapshot, key=hk, surrogate="section_key",
        attributes=[c for c in snapshot.columns if c != hk], app_id=star_app_id("dim_section", batch_id),
        metadata={"batch_id": batch_id})
    return results


def _clever(store: DeltaStore, lake: LakePaths, table: str) -> DataFrame | None:
    path = lake.table("stage2p", CLEVER, table)
    return store.read(path) if store.exists(path) else None


def build_star(lake: LakePaths | str | None = None, batch_id: str | None = None, *,
               effective_date: dt.date | str | None = None, store: DeltaStore | None = None,
               engine: str | None = None, checks: bool = True, context: dict[str, Any] | None = None) -> GoldResult:
    """Build the star schema (``stage3p/star``) from the vault, ``stage2p/edfi`` and ``stage2p/clever``.

    ``effective_date`` (a date or ``YYYY-MM-DD``; None or empty: today, UTC) dates the batch's dimension
    changes. Raises GoldError for a missing setting or input, DataQualityError when a check fails.
    """
    lake, batch_id = _settings(lake, batch_id, context, "build_star")
    day = _as_date(effective_date)
    with _synced(lake, STAR):
        current, inputs = up_to_date(lake, STAR)
        if current:
            log.info("star: up to date, no input table changed since its last build; nothing to do")
            return GoldResult({}, up_to_date=True)
        result = _build_star(lake, batch_id, day, _store(store, engine), checks)
        _record_inputs(lake, STAR, batch_id, inputs if checks else None)
        return result


def _build_star(lake: LakePaths, batch_id: str, day: dt.date, store: DeltaStore, checks: bool) -> GoldResult:
    from pyspark.sql import functions as F

    results = _dimensions(store, lake, day, batch_id)
    dim_student, dim_school = store.read(star_path(lake, "dim_student")), store.read(star_path(lake, "dim_school"))
    spans = facts.enrollments(_read(store, lake.table(GOLD_STAGE, VAULT, LINK_ENROLLMENT.table), "run build_vault"),
                              _read(store, lake.table(GOLD_STAGE, VAULT, SAT_ENROLLMENT.table), "run build_vault"))
    built: dict[str, tuple[DataFrame, str, tuple[str, ...]]] = {"fact_enrollment": (facts.fact_enrollment(spans, dim_student, dim_school), "enrollment_hk", ())}
    events_path = lake.table("stage2p", EDFI, "student_school_attendance_events")
    if store.exists(events_path):
        built["fact_attendance"] = (facts.fact_attendance(store.read(events_path), dim_student, dim_school),
                                    "attendance_event_id", facts.PARTITIONS)
    activity = facts.clever_activity(_clever(store, lake, "daily_participation_pseudo"),
                                     _clever(store, lake, "resource_usage_pseudo"))
    if activity is not None:
        built["fact_digital_activity"] = (facts.fact_digital_activity(activity, spans, dim_student, dim_school),
                                          facts.ACTIVITY_KEY, facts.PARTITIONS)
    dates: list[dt.date | None] = []
    for name, column in (("fact_enrollment", "entryDate"), ("fact_enrollment", "exitWithdrawDate"),
                         ("fact_attendance", "eventDate"), ("fact_digital_activity", "date")):
        if name in built:
            dates += list(built[name][0].agg(F.min(column), F.max(column)).first() or ())
    results["dim_date"] = write_dim_date(store, lake, dates, batch_id)
    unknown = 0
    for name, (rows, key, partitions) in built.items():
        metadata: dict[str, object] = {"batch_id": batch_id}
        if name == "fact_digital_activity":
            rows = rows.localCheckpoint(eager=True)
            unknown = metadata["unknown_students"] = rows.where(F.col(facts.STUDENT_KEY) == UNKNOWN_KEY).count()
            if unknown:
                log.warning("fact_digital_activity: %d Clever rows have no matching student in dim_student; they "
                            "are kept under student_key %d", unknown, UNKNOWN_KEY)
        results[name] = sync_rows(store, star_path(lake, name), rows, (key,), app_id=star_app_id(name, batch_id),
                                  metadata=metadata, partition_by=partitions)
    counts = run_checks(store, lake, STAR_CHECKS) if checks else {}
    raise_on_failures(counts, f"star batch {batch_id}")
    return GoldResult(results, counts, unknown)


def _as_date(value: dt.date | str | None) -> dt.date:
    if value is None or isinstance(value, str) and not value.strip():
        return dt.datetime.now(dt.timezone.utc).date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise GoldError(f"effective_date {value!r} is not a date: give YYYY-MM-DD") from None
