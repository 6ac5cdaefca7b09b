"""Callables for ``python`` flow steps."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("oea")


def write_views(modules: list[str], out: str = "sql_views", account: str | None = None, workspace: str = "dev",
                context: dict | None = None) -> int:
    """Write ``<out>/<module>_views.sql`` for each module over the run's lake; returns the number of views."""
    from ..sources import sources
    from ..sql_views import views_script, write_views_script

    lake = context["lake"]
    account = account or os.environ.get("OEA_STORAGE_ACCOUNT") or lake.account or "yourstorageaccount"
    views = 0
    for name in modules:
        tables = sources.get(name)(lake=lake).output_tables()
        path = write_views_script(views_script(lake, name, tables, account=account, workspace=workspace), out, name)
        log.info("wrote %s (%d views)", path, len(tables))
        views += len(tables)
    return views
