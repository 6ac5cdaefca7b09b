"""The run log ``<runs>/<batch_id>/run_log.json``: written atomically, read back, and judged alive or dead.

The runner writes it when the run starts (status ``running``, steps ``pending``), as each step
starts and ends, and when the run ends. Each write goes to a temporary file that replaces the log
(``os.replace``), so a reader, or a run killed mid-write, never sees half a log. A log still
``running`` whose runner (host and pid) is no longer alive on this host is shown as ``died``.
"""

from __future__ import annotations

import json
import os
import tempfile

from ..salt import redact
from .process import hostname, pid_alive

RUN_LOG = "run_log.json"


def write_run_log(folder: str, doc: dict) -> None:
    """Replace ``<folder>/run_log.json`` with ``doc`` (secrets redacted) in one atomic step."""
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{RUN_LOG}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(redact(json.dumps(doc, indent=1, default=str)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, os.path.join(folder, RUN_LOG))
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def read_run_logs(runs: str) -> list[dict]:
    """Every run log under ``runs``, newest first; an unreadable log is listed with status ``unreadable``."""
    logs = []
    for batch in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        path = os.path.join(runs, batch, RUN_LOG)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except (OSError, ValueError) as exc:
            doc = f"{path}: {exc}"
        if not isinstance(doc, dict):
            doc = {"batch_id": batch, "pipeline": "?", "status": "unreadable", "started": "", "steps": {},
                   "error": doc if isinstance(doc, str) else f"{path}: not a JSON object"}
        logs.append(doc)
    logs.sort(key=lambda d: d.get("started") or "", reverse=True)
    return logs


def run_state(doc: dict) -> str:
    """The run's status, with ``died`` for a ``running`` log whose runner is gone (checked on its own host)."""
    status = str(doc.get("status", "?"))
    if status != "running":
        return status
    pid, host = doc.get("pid"), doc.get("host")
    if isinstance(pid, int) and host == hostname() and not pid_alive(pid, doc.get("pid_start")):
        return "died"
    return status
