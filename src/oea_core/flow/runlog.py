"""The run log ``<runs>/<batch_id>/run_log.json``: written atomically, read back as a ``RunLog``, judged alive or dead.

The runner writes it when the run starts (status ``running``, steps ``pending``), as each step
starts and ends, and when the run ends. Each write goes to a temporary file that replaces the log
(``os.replace``), so a reader, or a run killed mid-write, never sees half a log. A log still
``running`` whose runner (host and pid) is no longer alive on this host is shown as ``died``.
A log that cannot be read is listed with status ``unreadable`` and the reason in ``error``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import FlowError
from ..privacy.redaction import redact
from .process import hostname, pid_alive

if TYPE_CHECKING:
    from ..lake.paths import LakePaths

RUN_LOG = "run_log.json"


@dataclass
class StepRecord:
    """A step's entry under ``steps`` in the run log, as the runner updates it."""

    status: str = "pending"
    attempts: int = 0
    started: str | None = None
    ended: str | None = None
    duration: float | None = None
    rows: int | None = None
    note: str | None = None  # the one line the step's result gave, e.g. the gold tables not built and why
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    depends_on: list[str] = field(default_factory=list)
    timeout: float | None = None
    host: str | None = None  # where the running attempt runs: the worker's pid, or the runner's
    pid: int | None = None


def runs_dir(lake: LakePaths, path: str | None = None) -> str:
    """The folder of the run logs (one folder per batch): in the lake's state when it is local, else ``./runs``.

    ``path`` (a flow's ``checkpoint.path``) replaces it: absolute, or relative to a local lake's folder.
    Raises FlowError for a ``path`` on a cloud lake, whose run logs are synced from ``oea-framework/runs`` only."""
    if path is None:
        return lake.state_path("runs") if lake.root else os.path.abspath("runs")
    if lake.is_cloud or lake.root is None:
        raise FlowError(f"checkpoint.path {path!r} is for a local lake; {lake.shown} keeps its run logs in "
                        "oea-framework/runs, synced with the account: remove checkpoint.path from the flow file")
    return os.path.normpath(os.path.join(lake.root, path))  # an absolute path stays as it is


def utc_now() -> str:
    """The time now, as the run log writes it (UTC, ISO 8601, whole seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_run_log(folder: str, doc: dict[str, Any]) -> None:
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


def checkpoint_steps(folder: str, pipeline: str, batch_id: str) -> dict[str, Any]:
    """The steps of the run log in ``folder``, to resume from (empty when there is none).

    Raises FlowError when that batch is a run of another pipeline."""
    path = os.path.join(folder, RUN_LOG)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        previous = json.load(handle)
    if previous.get("pipeline") != pipeline:
        raise FlowError(f"batch {batch_id} belongs to pipeline {previous.get('pipeline')!r}, not "
                        f"{pipeline!r}: use another --batch-id")
    steps: dict[str, Any] = previous.get("steps", {})
    return steps


@dataclass(frozen=True)
class RunLog:
    """One run's log as read from ``path``: ``doc`` is its JSON object (written by ``FlowRun``; a step's keys are
    a ``StepRecord``'s)."""

    doc: dict[str, Any]
    path: str

    @classmethod
    def load(cls, path: str) -> RunLog:
        """The run log at ``path``; one that cannot be read, or is not a JSON object, has status ``unreadable``."""
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except (OSError, ValueError) as exc:
            doc = f"{path}: {exc}"
        if not isinstance(doc, dict):
            batch = os.path.basename(os.path.dirname(os.path.abspath(path)))
            doc = {"batch_id": batch, "pipeline": "?", "status": "unreadable", "started": "", "steps": {},
                   "error": doc if isinstance(doc, str) else f"{path}: not a JSON object"}
        return cls(doc, path)

    @classmethod
    def read_all(cls, runs: str) -> list[RunLog]:
        """Every run log under ``runs`` (one folder per batch), newest first."""
        logs = [cls.load(os.path.join(runs, batch, RUN_LOG)) for batch in sorted(os.listdir(runs))
                if os.path.isfile(os.path.join(runs, batch, RUN_LOG))] if os.path.isdir(runs) else []
        return sorted(logs, key=lambda log: str(log.doc.get("started") or ""), reverse=True)

    @classmethod
    def latest(cls, runs: str, pipeline: str) -> RunLog | None:
        """The newest run of the flow called ``pipeline`` under ``runs``; None when it never ran there."""
        return next((log for log in cls.read_all(runs) if log.doc.get("pipeline") == pipeline), None)

    @property
    def state(self) -> str:
        """The run's status, with ``died`` for a ``running`` log whose runner is gone (checked on its own host)."""
        status = str(self.doc.get("status", "?"))
        if status != "running":
            return status
        pid, host = self.doc.get("pid"), self.doc.get("host")
        if isinstance(pid, int) and host == hostname() and not pid_alive(pid, self.doc.get("pid_start")):
            return "died"
        return status

    def step_statuses(self) -> dict[str, str]:
        """Each step's status, with ``interrupted`` for a step still ``running`` in a run that ``died``."""
        return _step_statuses(self.doc, self.state)

    def status_lines(self) -> list[str]:
        """What ``oea flow status`` prints for this run: a line with its step counts, then what needs attention."""
        doc, state = self.doc, self.state
        steps: dict[str, dict[str, Any]] = doc.get("steps") or {}
        counts: dict[str, int] = {}
        for status in _step_statuses(doc, state).values():
            counts[status] = counts.get(status, 0) + 1
        batch = str(doc.get("batch_id", "?"))
        lines = [f"{doc.get('started') or '?':<25} {doc.get('pipeline', '?')!s:<16} {batch:<28} {state:<11} "
                 + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
        if state == "died":
            lines.append(f"  its runner (pid {doc.get('pid')} on {doc.get('host')}) is gone; last written "
                         f"{doc.get('updated')}. Rerun with --batch-id {batch} to resume")
        elif state == "unreadable":
            lines.append(f"  {doc.get('error')}")
        elif state == "running":
            lines += [f"  {name}: running since {step.get('started')}, attempt {step.get('attempts')} "
                      f"(pid {step.get('pid')} on {step.get('host')}, timeout {step.get('timeout')} s)"
                      for name, step in steps.items() if step.get("status") == "running"]
        lines += [f"  {note.get('event')} notification ({note.get('kind')} {note.get('target')}) failed: "
                  f"{note.get('error')}" for note in doc.get("notifications") or () if not note.get("ok")]
        return lines


def _step_statuses(doc: dict[str, Any], state: str) -> dict[str, str]:
    steps: dict[str, dict[str, Any]] = doc.get("steps") or {}
    return {name: "interrupted" if state == "died" and step.get("status") == "running" else str(step.get("status"))
            for name, step in steps.items()}
