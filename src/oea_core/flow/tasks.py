"""Callables for ``python`` flow steps."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import FlowError
from ..sources import sources
from ..sql_views import views_script, write_views_script

log = logging.getLogger("oea")


def write_views(modules: list[str], out: str = "sql_views", account: str | None = None, workspace: str = "dev",
                context: dict[str, Any] | None = None) -> int:
    """Write ``<out>/<module>_views.sql`` for each module over the run's lake; returns the number of views.

    Raises FlowError without ``context`` (a flow step passes it).
    """
    if context is None:
        raise FlowError("write_views runs as a flow python step, which passes it the run's context (the lake)")
    lake = context["lake"]
    account = account or os.environ.get("OEA_STORAGE_ACCOUNT") or lake.account or "yourstorageaccount"
    views = 0
    for name in modules:
        tables = sources.create(name, lake=lake).outputs()
        path = write_views_script(views_script(lake, name, tables, account=account, workspace=workspace), out, name)
        log.info("wrote %s (%d views)", path, len(tables))
        views += len(tables)
    return views
