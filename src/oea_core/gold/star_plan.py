"""One batch of the star schema, planned: every table's pending write (:class:`.changes.Pending`), computed
from the vault, ``stage2p/edfi`` and ``stage2p/clever`` and from the dimensions as this batch leaves them,
before anything is committed (so the checks can refuse the lot).

A table whose sources do not exist (an export without sections or attendance, no Clever module) is not
built, and is named with the missing source tables; a fact needs both dimensions it joins. The vault
tables a star table reads are traced back to the stage2p tables they are loaded from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..errors import GoldError
from . import facts
from .changes import plan_sync
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
    VAULT,
    VAULT_LOADS,
)
from .scd import plan_scd1, plan_scd2
from .star import current_attributes, plan_dim_date, star_app_id, star_path, unknown_member
from .vault import missing_sources, require_columns

if TYPE_CHECKING:
    import datetime as dt

    from pyspark.sql import DataFrame

    from ..delta import DeltaStore
    from ..lake.paths import LakePaths
    from .changes import Pending

log = logging.getLogger("oea")
CLEVER_TABLES = ("daily_participation_pseudo", "resource_usage_pseudo")


@dataclass
class StarPlan:
    """The star's pending writes (in commit order), the tables not built and why, the unknown Clever rows."""

    pending: dict[str, Pending] = field(default_factory=dict)
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unknown_students: int = 0

    def after(self) -> dict[str, DataFrame]:
        """Each planned table as its commit will leave it."""
        return {name: write.after for name, write in self.pending.items()}


class _Inputs:
    """The star's input tables, and the source tables missing for each one that does not exist."""

    def __init__(self, store: DeltaStore, lake: LakePaths) -> None:
        self.store, self.lake = store, lake

    def vault(self, table: str) -> DataFrame | tuple[str, ...]:
        path = self.lake.table(GOLD_STAGE, VAULT, table)
        if self.store.exists(path):
            return self.store.read(path)
        load = next(load for load in VAULT_LOADS if load.target.table == table)
        missing = missing_sources(self.store, self.lake, load)
        if len(missing) < len(load.tables):
            raise GoldError(f"stage3p/vault/{table} does not exist: run build_vault for the batch first", table=table)
        return missing

    def stage2p(self, source: str, table: str) -> DataFrame | tuple[str, ...]:
        path = self.lake.table("stage2p", source, table)
        return self.store.read(path) if self.store.exists(path) else (f"stage2p/{source}/{table}",)


def _gaps(*inputs: object) -> tuple[str, ...]:
    """The missing source tables among ``inputs`` (each a DataFrame, or the tuple of what is missing)."""
    return tuple(dict.fromkeys(name for i in inputs if isinstance(i, tuple) for name in i))


def _scd2(store: DeltaStore, lake: LakePaths, table: str, snapshot: DataFrame, key: str, surrogate: str,
          day: dt.date, batch_id: str) -> Pending:
    attributes = [c for c in snapshot.columns if c != key]
    return plan_scd2(store, star_path(lake, table), snapshot, key=key, surrogate=surrogate, attributes=attributes,
                     effective_date=day, app_id=star_app_id(table, batch_id),
                     reserved=unknown_member(snapshot, key, surrogate, attributes), metadata={"batch_id": batch_id})


def _dimensions(plan: StarPlan, inputs: _Inputs, day: dt.date, batch_id: str) -> None:
    from pyspark.sql import functions as F

    store, lake = inputs.store, inputs.lake
    for dim, hub, sat, surrogate in (("dim_student", HUB_STUDENT, SAT_STUDENT_DEMOGRAPHICS, facts.STUDENT_KEY),
                                     ("dim_school", HUB_SCHOOL, SAT_SCHOOL, facts.SCHOOL_KEY)):
        hub_rows, sat_rows = inputs.vault(hub.table), inputs.vault(sat.table)
        if isinstance(hub_rows, tuple) or isinstance(sat_rows, tuple):
            plan.missing[dim] = _gaps(hub_rows, sat_rows)
            continue
        snapshot = current_attributes(hub_rows, sat_rows, hub, sat)
        plan.pending[dim] = _scd2(store, lake, dim, snapshot, hub.hash_key, surrogate, day, batch_id)
    sections = inputs.stage2p(EDFI, "sections")
    if isinstance(sections, tuple):
        plan.missing["dim_section"] = sections
        return
    require_columns(sections, HUB_SECTION.business_key, "stage2p/edfi/sections")
    hk = HUB_SECTION.hash_key
    snapshot = sections.select(
        hash_key_column(*[F.col(c) for c in HUB_SECTION.business_key]).alias(hk), *HUB_SECTION.business_key,
        *[(F.col(n) if n in sections.columns else F.lit(None)).cast(t).alias(n) for n, t in SECTION_ATTRIBUTES]
    ).where(F.col(hk).isNotNull()).dropDuplicates([hk])
    plan.pending["dim_section"] = plan_scd1(
        store, star_path(lake, "dim_section"), snapshot, key=hk, surrogate="section_key",
        attributes=[c for c in snapshot.columns if c != hk], app_id=star_app_id("dim_section", batch_id),
        metadata={"batch_id": batch_id})


def _activity(inputs: _Inputs) -> DataFrame | tuple[str, ...]:
    reports = [inputs.stage2p(CLEVER, table) for table in CLEVER_TABLES]
    found = [r for r in reports if not isinstance(r, tuple)]
    if not found:
        return _gaps(*reports)
    participation, usage = (None if isinstance(r, tuple) else r for r in reports)
    activity = facts.clever_activity(participation, usage)
    assert activity is not None  # at least one report exists
    return activity


def plan_star(store: DeltaStore, lake: LakePaths, batch_id: str, day: dt.date) -> StarPlan:
    """Every star table's pending write for one batch (dimensions, facts, then ``dim_date``).

    Raises GoldError when the vault was not built from stage2p tables that exist, or an input lacks a key column.
    """
    from pyspark.sql import functions as F

    inputs, plan = _Inputs(store, lake), StarPlan()
    _dimensions(plan, inputs, day, batch_id)
    student, school = (plan.pending[d].after if d in plan.pending else plan.missing[d]
                       for d in ("dim_student", "dim_school"))
    link, sat = inputs.vault(LINK_ENROLLMENT.table), inputs.vault(SAT_ENROLLMENT.table)
    events = inputs.stage2p(EDFI, "student_school_attendance_events")
    activity = _activity(inputs)
    needs = {"fact_enrollment": (link, sat, student, school), "fact_attendance": (events, student, school),
             "fact_digital_activity": (activity, link, sat, student, school)}
    built: dict[str, tuple[DataFrame, str, tuple[str, ...]]] = {}
    for name, tables in needs.items():
        gaps = _gaps(*tables)
        if gaps:
            plan.missing[name] = gaps
            continue
        dim_student, dim_school = cast("DataFrame", student), cast("DataFrame", school)
        spans = facts.enrollments(cast("DataFrame", link), cast("DataFrame", sat))
        if name == "fact_enrollment":
            built[name] = (facts.fact_enrollment(spans, dim_student, dim_school), "enrollment_hk", ())
        elif name == "fact_attendance":
            built[name] = (facts.fact_attendance(cast("DataFrame", events), dim_student, dim_school),
                           "attendance_event_id", facts.PARTITIONS)
        else:
            built[name] = (facts.fact_digital_activity(cast("DataFrame", activity), spans, dim_student, dim_school),
                           facts.ACTIVITY_KEY, facts.PARTITIONS)
    dates: list[dt.date | None] = []
    for name, column in (("fact_enrollment", "entryDate"), ("fact_enrollment", "exitWithdrawDate"),
                         ("fact_attendance", "eventDate"), ("fact_digital_activity", "date")):
        if name in built:
            dates += list(built[name][0].agg(F.min(column), F.max(column)).first() or ())
    plan.pending["dim_date"] = plan_dim_date(store, lake, dates, batch_id)
    for name, (rows, key, partitions) in built.items():
        metadata: dict[str, object] = {"batch_id": batch_id}
        if name == "fact_digital_activity":
            rows = rows.localCheckpoint(eager=True)
            plan.unknown_students = rows.where(F.col(facts.STUDENT_KEY) == UNKNOWN_KEY).count()
            metadata["unknown_students"] = plan.unknown_students
            if plan.unknown_students:
                log.warning("fact_digital_activity: %d Clever rows have no matching student in dim_student; they "
                            "are kept under student_key %d", plan.unknown_students, UNKNOWN_KEY)
        plan.pending[name] = _sync(store, lake, name, rows, key, batch_id, metadata, partitions)
    for name, gaps in plan.missing.items():
        log.warning("star %s: not built, its source %s does not exist", name, ", ".join(gaps))
    return plan


def _sync(store: DeltaStore, lake: LakePaths, name: str, rows: DataFrame, key: str, batch_id: str,
          metadata: dict[str, object], partitions: tuple[str, ...]) -> Pending:
    return plan_sync(store, star_path(lake, name), rows, (key,), app_id=star_app_id(name, batch_id),
                     metadata=metadata, partition_by=partitions)
