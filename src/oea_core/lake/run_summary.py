"""What a run wrote, read from the Delta logs: tables written, rows, rows set aside, time.

``oea run`` and ``oea flow run`` end with this line. It reads the commits made since the run
started in every ``stage2np``/``stage2p`` table of the sources and every ``stage3np``/``stage3p`` table
(the gold layer's ``vault`` and ``star``, and any other area there), whichever engine (or notebook
kernel) made them: rows are the ``numRecords`` of the files the commits added (a MERGE counts
the files it rewrote), and rows set aside are those added to ``_rejected`` and ``_not_refined`` tables.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .paths import LakePaths

SET_ASIDE = ("_rejected", "_not_refined")


@dataclass(frozen=True)
class RunSummary:
    tables: int
    rows: int
    set_aside: int
    seconds: float

    def line(self) -> str:
        return (f"{self.tables} tables written, {self.rows:,} rows, {self.set_aside:,} set aside, "
                f"in {self.seconds:.0f} s")


def summarize(lake: LakePaths, sources: Iterable[str], started: float) -> RunSummary:
    """The commits since ``started`` (a ``time.time()``) in the sources' stage 2 tables and every stage 3
    table of a local lake or a cloud lake's working copy."""
    tables = rows = set_aside = 0
    folders = [lake.path(stage, source) for stage in ("stage2np", "stage2p") for source in sources]
    for stage in ("stage3np", "stage3p"):  # the gold layer's areas (vault, star), whichever exist
        root = lake.stage_root(stage)
        folders += [os.path.join(root, area) for area in sorted(os.listdir(root))] if os.path.isdir(root) else []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for table in sorted(os.listdir(folder)):
            added = _rows_added(os.path.join(folder, table, "_delta_log"), started)
            if added is None:
                continue
            tables += 1
            rows += added
            if table.endswith(SET_ASIDE):
                set_aside += added
    return RunSummary(tables, rows, set_aside, time.time() - started)


def _rows_added(log_dir: str, started: float) -> int | None:
    """Rows in the files added by commits made since ``started``; None when there were none."""
    if not os.path.isdir(log_dir):
        return None
    found, rows = False, 0
    for name in os.listdir(log_dir):
        path = os.path.join(log_dir, name)
        if not name.endswith(".json") or os.path.getmtime(path) < started - 1:
            continue
        with open(path, encoding="utf-8") as handle:
            actions = [json.loads(line) for line in handle if line.strip()]
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        if int(info.get("timestamp", 0)) < started * 1000 - 1000:
            continue  # an older commit, pulled from a cloud lake since
        found = True
        for action in actions:
            add = action.get("add")
            if add and add.get("dataChange", True) and add.get("stats"):
                rows += int(json.loads(add["stats"]).get("numRecords", 0))
    return rows if found else None
