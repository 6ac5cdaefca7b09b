"""Entry points: ``build_vault`` then ``build_star``, per batch, callable as flow ``python`` steps.

Run both for each batch in the order the batches are loaded: the star reads the vault as the batch
left it (the latest satellite rows are the batch's snapshot). ``effective_date`` is the business date
the batch describes (``valid_from`` of the versions it opens); a batch dated before earlier ones is a
late change (see :mod:`.scd`). Each table's commit carries ``oea.gold/<vault|star>/<table>/<batch>``,
so rerunning a batch writes nothing, and a batch that changed nothing writes nothing either.

Each build computes every table's new state first, runs its checks on that, and commits only when no
check failed: a failed check leaves every table at its version. A table whose source tables do not
exist is not built and is named in ``GoldResult.missing``. After every star build (checks passed or
failed) ``oea-framework/gold/star_checks.json`` records the outcome, which publishing reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..delta import delta_store
from ..delta.rs import table_version
from ..errors import DataQualityError, GoldError
from ..lake.cloud import open_cloud
from ..lake.lock import lake_lock
from ..lake.paths import FRAMEWORK_CONTAINER, LakePaths
from ..spark import get_spark
from .dq import STAR_CHECKS, VAULT_CHECKS, raise_on_failures, run_checks
from .model import CLEVER, EDFI, GOLD_STAGE, STAR, VAULT, VAULT_LOADS, VAULT_TABLES
from .star_plan import plan_star
from .vault import commit_all, plan_vault

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..delta import DeltaStore, WriteResult

log = logging.getLogger("oea")


@dataclass(frozen=True)
class GoldResult:
    """What a build wrote (per table), its data-quality counts, and the Clever rows kept under student ``-1``."""

    tables: dict[str, WriteResult]
    checks: dict[str, int] = field(default_factory=dict)
    unknown_students: int = 0
    up_to_date: bool = False  # skipped: no input table changed since the last successful build
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)  # not built: its missing source tables

    def __str__(self) -> str:
        """One line for a flow's output: what was written, and each table not built with what it lacks."""
        if self.up_to_date:
            return "up to date: no input table changed since the last build"
        written = sum(1 for result in self.tables.values() if result.rows or result.inserted or result.updated)
        line = f"{written} tables written, {self.rows:,} rows"
        if self.missing:
            line += "; not built (source table missing): " + ", ".join(
                f"{table} ({', '.join(sources)})" for table, sources in sorted(self.missing.items()))
        return line

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
    account first, and its own folder pushed once the build succeeded (see :mod:`oea_core.lake.cloud`)."""
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
        record = cloud.folder(FRAMEWORK_CONTAINER, "gold", (CHECKS_FILE,)) if area == STAR else None
        if record is not None:
            record.pull()
        try:
            yield
        except DataQualityError:
            if record is not None:  # the failed build's record goes to the account: publishing reads it there
                record.push()
            raise
        own.push()
        if record is not None:
            record.push()


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


CHECKS_FILE = "star_checks.json"


def _record_checks(lake: LakePaths, batch_id: str, counts: dict[str, int], checked: bool) -> None:
    """``oea-framework/gold/star_checks.json``: the last star build's checks, ``{"batch_id", "passed", "failed"}``
    (``failed``: each failed check's count of offending rows). Publishing refuses a star that did not pass."""
    if lake.root is None:  # Spark reaching the account (Synapse): no local bookkeeping to write
        return
    path = lake.state_path("gold", CHECKS_FILE)
    failed = {name: count for name, count in sorted(counts.items()) if count}
    text = json.dumps({"batch_id": batch_id, "passed": not failed, "failed": failed, "checked": checked}, indent=1)
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        if f.read() == text:  # the same outcome again: leave the file (and a cloud lake's copy) as it is
            return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
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
        pending, missing = plan_vault(store, lake, VAULT_LOADS, batch_id, load_ts or dt.datetime.now(dt.timezone.utc))
        counts = run_checks(store, lake, VAULT_CHECKS, {t: w.after for t, w in pending.items()}) if checks else {}
        raise_on_failures(counts, f"vault batch {batch_id}")
        results = commit_all(pending, "vault")
        _record_inputs(lake, VAULT, batch_id, inputs if checks else None)
        return GoldResult(results, counts, missing=missing)


def build_star(lake: LakePaths | str | None = None, batch_id: str | None = None, *,
               effective_date: dt.date | str | None = None, store: DeltaStore | None = None,
               engine: str | None = None, checks: bool = True, context: dict[str, Any] | None = None) -> GoldResult:
    """Build the star schema (``stage3p/star``) from the vault, ``stage2p/edfi`` and ``stage2p/clever``.

    ``effective_date`` (a date or ``YYYY-MM-DD``; None or empty: today, UTC) dates the batch's dimension
    changes. Raises GoldError for a missing setting or input, DataQualityError when a check fails (nothing
    is then committed). Either way after the checks ran, ``star_checks.json`` records their outcome.
    """
    lake, batch_id = _settings(lake, batch_id, context, "build_star")
    day = _as_date(effective_date)
    with _synced(lake, STAR):
        current, inputs = up_to_date(lake, STAR)
        if current:
            log.info("star: up to date, no input table changed since its last build; nothing to do")
            return GoldResult({}, up_to_date=True)
        store = _store(store, engine)
        plan = plan_star(store, lake, batch_id, day)
        counts = run_checks(store, lake, STAR_CHECKS, plan.after()) if checks else {}
        _record_checks(lake, batch_id, counts, checks)
        raise_on_failures(counts, f"star batch {batch_id}")
        results = commit_all(plan.pending, "star")
        _record_inputs(lake, STAR, batch_id, inputs if checks else None)
        return GoldResult(results, counts, plan.unknown_students, missing=plan.missing)


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
