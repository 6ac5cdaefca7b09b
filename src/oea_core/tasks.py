"""The callables that flow files name in ``python`` steps: the nightly production run's steps
(``flows/production_flow.yaml``) and :func:`write_views`.

Each step does its part only when there is something new for it, and decides that before Spark starts:

- :func:`land_clever_sftp` pulls Clever's reports from the SFTP drop (``OEA_CLEVER_SFTP_URL``), downloading
  only files not landed before; :func:`land_edfi_api` lands the Ed-Fi API's changes since the last
  landed change version (``OEA_EDFI_API_URL``). A source whose setting is empty is skipped, logged.
- :func:`ingest_new` ingests (and for Ed-Fi refines) a source only when ``stage1np/<source>`` holds batches
  it has not ingested since its last successful ingest (recorded in ``oea-framework/production/``).
- the gold builds skip themselves when no input table changed (:func:`oea_core.gold.up_to_date`).

So a night with nothing new downloads nothing, starts no Spark session and writes no table. A failed
night records nothing, so the next run (or a rerun of its batch id) picks the work up again.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from . import sources
from .clever import CleverModule
from .edfi import EdFiModule
from .errors import FlowError
from .intake.sftp import land_sftp
from .lake.paths import LakePaths
from .source_module import DEFAULT_MAX_REJECT_SHARE
from .sql.view_sets import GOLD_AREAS, view_set_script, view_tables
from .sql.views import views_script_path, write_views_script

log = logging.getLogger("oea")
CLEVER_SFTP_ENV = "OEA_CLEVER_SFTP_URL"
EDFI_API_ENV = "OEA_EDFI_API_URL"


def _lake(context: dict[str, Any] | None, what: str) -> LakePaths:
    if not context or context.get("lake") is None:
        raise FlowError(f"{what} runs as a flow python step, which passes it the run's context (the lake)")
    lake = context["lake"]
    return lake if isinstance(lake, LakePaths) else LakePaths.from_setting(lake)


def land_clever_sftp(url: str = "", context: dict[str, Any] | None = None) -> int:
    """Land Clever's new reports from ``url`` (default ``$OEA_CLEVER_SFTP_URL``); returns the files landed."""
    lake = _lake(context, "land_clever_sftp")
    url = url or os.environ.get(CLEVER_SFTP_ENV, "")
    if not url:
        log.info("Clever SFTP: no URL (set %s or the step's url); nothing to land", CLEVER_SFTP_ENV)
        return 0
    result = land_sftp(CleverModule(lake), url, batch_id=(context or {}).get("batch_id"))
    log.info("%s", result.summary())
    return len(result.land.landed) if result.land is not None else 0


def land_edfi_api(api_url: str = "", resources: list[str] | None = None,
                  context: dict[str, Any] | None = None) -> int:
    """Land the Ed-Fi API's changes (``api_url``, default ``$OEA_EDFI_API_URL``); returns the batches landed.

    Credentials: ``OEA_EDFI_CLIENT_ID``/``OEA_EDFI_CLIENT_SECRET``, or Key Vault (``OEA_KEYVAULT_URL``).
    """
    lake = _lake(context, "land_edfi_api")
    api_url = api_url or os.environ.get(EDFI_API_ENV, "")
    if not api_url:
        log.info("Ed-Fi API: no URL (set %s or the step's api_url); nothing to land", EDFI_API_ENV)
        return 0
    result = EdFiModule(lake=lake).land(api=api_url, resources=resources, batch_id=(context or {}).get("batch_id"))
    log.info("%s", result.summary())
    return len(result.batches)


def _record(lake: LakePaths, source: str) -> str:
    return lake.state_path("production", f"{source}_ingested.json")


def landed_batches(lake: LakePaths, source: str) -> list[str]:
    """Every landed batch of ``source`` (the folders holding a ``_manifest.json``), relative to its stage1np folder."""
    root = lake.path("stage1np", source)
    found = []
    for folder, _dirs, files in os.walk(root):
        if "_manifest.json" in files:
            found.append(os.path.relpath(folder, root).replace(os.sep, "/"))
    return sorted(found)


def pending(lake: LakePaths, source: str) -> bool:
    """Whether ``source`` has landed batches its last successful :func:`ingest_new` did not see (always
    true on a cloud lake, whose working copy is brought up to date by the ingest itself)."""
    if lake.root is None or lake.account is not None:
        return True
    try:
        with open(_record(lake, source), encoding="utf-8") as f:
            seen = json.load(f).get("batches")
    except (OSError, ValueError):
        return bool(landed_batches(lake, source))
    return seen != landed_batches(lake, source)


def ingest_new(module: str, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
               context: dict[str, Any] | None = None) -> int:
    """Ingest (and refine) ``module``'s new batches; returns the rows written. Does nothing, without starting
    Spark, when nothing was landed since its last successful run."""
    lake = _lake(context, "ingest_new")
    if not pending(lake, module):
        log.info("%s: nothing landed since its last ingest; nothing to do", module)
        return 0
    batches = landed_batches(lake, module) if lake.root is not None else []
    with sources.create(module, lake=lake) as source:
        results = source.ingest(max_reject_share=max_reject_share)
    for result in results:
        log.info("%s", result.describe())
    if lake.root is not None and lake.account is None:
        path = _record(lake, module)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"batch_id": (context or {}).get("batch_id"), "batches": batches}, f, indent=1)
        os.replace(path + ".tmp", path)
    return sum(result.rows for result in results)

def write_views(modules: list[str] | None = None, out: str = "sql_views", account: str | None = None,
                workspace: str = "dev", gold: bool = False, context: dict[str, Any] | None = None) -> int:
    """Write ``<out>/<name>_views.sql`` for each module over the run's lake, and with ``gold`` also
    ``vault_views.sql`` and ``star_views.sql`` (the gold layer's databases); returns the number of views in
    the scripts it wrote (a script that already holds the same text is left alone and counts none).

    ``modules`` may name the gold areas (``vault``, ``star``) too. Raises FlowError without ``context``
    (a flow step passes it) or with nothing to write.
    """
    if context is None:
        raise FlowError("write_views runs as a flow python step, which passes it the run's context (the lake)")
    names = list(modules or []) + [area for area in GOLD_AREAS if gold and area not in (modules or [])]
    if not names:
        raise FlowError("write_views has nothing to write: give the step parameters modules: [clever, ...] "
                        "and/or gold: true")
    lake = context["lake"]
    account = account or os.environ.get("OEA_STORAGE_ACCOUNT") or lake.account or "yourstorageaccount"
    views = 0
    for name in names:
        tables = view_tables(lake, name)
        script = view_set_script(lake, name, account=account, workspace=workspace)
        before = _text(views_script_path(out, name))
        path = write_views_script(script, out, name)
        if before == script:
            log.info("%s is up to date (%d views)", path, len(tables))
            continue
        log.info("wrote %s (%d views)", path, len(tables))
        views += len(tables)
    return views


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
