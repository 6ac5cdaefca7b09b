"""Callables for ``python`` flow steps."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import FlowError
from ..gold_views import GOLD_AREAS, view_set_script, view_tables
from ..sql_views import views_script_path, write_views_script

log = logging.getLogger("oea")


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
