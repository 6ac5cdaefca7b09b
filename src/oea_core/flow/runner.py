"""Running a flow: one batch id for the whole run, parallel where allowed, retries, checkpoints, checks.

A step that still fails after its attempts fails the run, its dependents are skipped (never
run), and independent branches finish. Every attempt has the step's ``timeout``: a python or
notebook step runs in a worker process that is killed with everything it started (see
``worker.py``); a sql step's Spark jobs, and every step's checks, are cancelled. A timed-out
attempt is retried like any failed one.

The run log ``<runs>/<batch_id>/run_log.json`` is written when the run starts and as each step
starts and ends (see ``runlog.py``). It is also the checkpoint: running the same batch id again
skips the steps that succeeded and reruns the others. A notification that cannot be sent is
recorded in it and does not change the run's outcome.

The runner holds the run's state; the rest is beside it: ``schedule.py`` (dependency order),
``templates.py`` (what ``{{ ... }}`` sees), ``step_checks.py`` (data-quality checks) and
``spark_jobs.py`` (cancelling Spark work at a deadline). Steps see the run only as a
``context.StepRun``, which ``FlowRun`` satisfies: the runner imports the steps, never the reverse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .. import errors
from ..delta import delta_store
from ..errors import FlowError, StepFailed, StepTimeout, WorkerFailed
from ..intake.landing import new_batch_id
from ..lake.cloud import runs_synced
from ..lake.lock import lake_lock, pull_source
from ..lake.paths import check_name
from ..privacy.redaction import redact
from ..spark import get_spark
from .notify import notify
from .process import hostname, kill_tree, start_ticks
from .runlog import RUN_LOG, StepRecord, checkpoint_steps, runs_dir, utc_now, write_run_log
from .schedule import run_in_order
from .spark_jobs import job_group_until
from .step_checks import run_checks
from .steps import step_kinds
from .templates import Templates
from .worker import run_in_worker

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from concurrent.futures import Future

    from pyspark.sql import SparkSession

    from ..lake.paths import LakePaths
    from .model import Flow, Step

log = logging.getLogger("oea")
DONE = ("success", "cached")


class FlowRun:
    """One run of a flow over a lake. ``sleep`` can be replaced (tests retry without waiting)."""

    def __init__(self, flow: Flow, lake: LakePaths, *, batch_id: str | None = None,
                 sleep: Callable[[float], object] | None = None, max_parallel: int | None = None,
                 spark: SparkSession | None = None) -> None:
        self.flow = flow
        self.lake = lake
        self.batch_id = check_name(batch_id or flow.batch_id or new_batch_id(), "batch id")
        self._aborted = threading.Event()
        self.sleep: Callable[[float], object] = self._aborted.wait if sleep is None else sleep  # ends on Ctrl-C
        self.max_parallel = max_parallel or flow.max_parallel
        self._spark = spark
        self.folder = os.path.join(runs_dir(lake, flow.checkpoint_path), self.batch_id)
        self.templates = Templates(flow, lake, self.batch_id, self.folder)
        self.records: dict[str, StepRecord] = {n: StepRecord(depends_on=sorted(s.depends_on))
                                               for n, s in flow.steps.items()}
        self.started = utc_now()
        self.status = "running"
        self.error: str | None = None
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._workers: dict[str, subprocess.Popen[bytes]] = {}

    # public ------------------------------------------------------------------------------------
    def run(self, from_step: str | None = None, only: str | None = None) -> dict[str, Any]:
        """Run the flow, holding its lake lock; returns the run log. Raises FlowError naming the failed
        steps at the end, LakeLockError when another run of this flow holds the lock (``--wait``)."""
        lock_name = "flow-" + re.sub(r"[^A-Za-z0-9_.=-]", "_", self.flow.name)
        with lake_lock(self.lake, lock_name, f"flow {self.flow.name}"), runs_synced(self.lake):
            return self._run(from_step, only)

    def _run(self, from_step: str | None, only: str | None) -> dict[str, Any]:
        for name in (from_step, only):
            if name is not None and name not in self.flow.steps:
                raise FlowError(f"no step {name!r} in {self.flow.path}; steps: {', '.join(self.flow.steps)}")
        previous = checkpoint_steps(self.folder, self.flow.name, self.batch_id) if self.flow.checkpoint else {}
        rerun = self.flow.downstream(from_step) if from_step else set()
        todo = {only} if only else set(self.flow.steps)
        for name, record in self.records.items():
            done_before = previous.get(name, {}).get("status") in DONE
            if name not in todo or (done_before and name not in rerun and name != only):
                record.status = "cached" if done_before else "not_selected"
                if done_before:
                    old = previous[name]
                    record.rows, record.note, record.checks = old.get("rows"), old.get("note"), old.get("checks", [])
        self._write_log()  # from now on `flow status` sees this run
        log.info("flow %s, batch %s: %d steps to run, %d done before", self.flow.name, self.batch_id,
                 sum(r.status == "pending" for r in self.records.values()),
                 sum(r.status == "cached" for r in self.records.values()))
        try:
            self._execute(only)
        except BaseException as exc:
            self.status = "interrupted"
            self.error = redact(f"{type(exc).__name__}: {exc}")[:2000]
            self._write_log()
            raise
        failed = [n for n, r in self.records.items() if r.status == "failed"]
        self.status = "failed" if failed else "success"
        summary = self._write_log()
        self.notifications = self._notify(summary)
        if self.notifications:
            summary = self._write_log()
        if failed:
            skipped = [n for n, r in self.records.items() if r.status == "skipped"]
            causes = "; ".join(f"{n}: {self.records[n].error}" for n in failed)
            raise FlowError(f"flow {self.flow.name} batch {self.batch_id} failed: {causes}"
                            + (f"; skipped: {', '.join(skipped)}" if skipped else "")
                            + f". Fix it and rerun with --batch-id {self.batch_id} to resume "
                            f"(run log: {os.path.join(self.folder, RUN_LOG)})")
        return summary

    # scheduling --------------------------------------------------------------------------------
    def _execute(self, only: str | None) -> None:
        """Run the steps in dependency order, up to ``max_parallel`` at once (see ``schedule.py``).

        A step whose dependency did not succeed (failed, skipped, interrupted, or not selected) is
        skipped, which in turn skips its own dependents. ``only`` runs that one step, whatever it
        depends on. Cached and not selected steps are settled without running.
        """
        graph = {only: set()} if only else self.flow.graph()
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:

            def start(name: str) -> Future[None]:
                self.records[name].status = "running"
                return pool.submit(self._run_step, self.flow.steps[name])

            try:
                run_in_order(graph, list(self.flow.steps), self.max_parallel,
                             settle=lambda name: self._settle(name, graph[name]), start=start)
            except BaseException:
                self._abort()  # Ctrl-C or a bug: stop the running steps before the pool waits for them
                raise

    def _settle(self, name: str, depends_on: set[str]) -> bool:
        """Settle a step without running it when it is cached, not selected, or blocked; True if settled."""
        record = self.records[name]
        if record.status != "pending":
            return True
        blocked = sorted(d for d in depends_on if self.records[d].status not in DONE)
        if not blocked:
            return False
        record.status = "skipped"
        record.error = f"not run: {', '.join(blocked)} did not succeed"
        log.warning("%s: skipped (%s)", name, record.error)
        self._write_log()
        return True

    def _abort(self) -> None:
        self._aborted.set()
        with self._lock:
            workers = list(self._workers.values())
        for proc in workers:
            kill_tree(proc.pid)
        if self._spark is not None:
            self._spark.sparkContext.cancelAllJobs()

    def _run_step(self, step: Step) -> None:
        record = self.records[step.name]
        record.started, record.timeout = utc_now(), step.timeout
        begin = time.perf_counter()
        outcome = "failed"  # the record stays 'running' until the last attempt, so dependents wait
        for attempt in range(1, step.retry.attempts + 1):
            if self._aborted.is_set():
                outcome = "interrupted"
                break
            record.attempts = attempt
            record.host, record.pid = hostname(), os.getpid()  # a worker's pid replaces the runner's
            self._write_log()
            deadline = time.monotonic() + step.timeout
            try:
                log.info("%s: running (attempt %d of %d, timeout %s)", step.name, attempt, step.retry.attempts,
                         _seconds(step.timeout))
                record.rows = step_kinds.get(step.kind).run(self, step, deadline)
                record.checks = run_checks(self, step, deadline)
                failing = [c for c in record.checks if not c["passed"] and c["severity"] == "error"]
                if failing:
                    names = ", ".join(f"{c['name']} ({c['value']} offending)" for c in failing)
                    record.error = f"data-quality check failed: {names}"
                    break  # the data will not change by retrying
                outcome, record.error = "success", None
                break
            except Exception as exc:  # noqa: BLE001 - a step failure must not stop independent branches
                text = str(exc) if isinstance(exc, StepFailed) and not exc.prefix else f"{type(exc).__name__}: {exc}"
                record.error = redact(text)[:2000]
                if self._aborted.is_set():
                    outcome, record.error = "interrupted", f"the run was interrupted ({record.error})"
                    break
                if not _retryable(exc):
                    break  # the data will not change by retrying
                if attempt < step.retry.attempts:
                    log.warning("%s: attempt %d failed (%s); retrying in %.0f s", step.name, attempt,
                                record.error.splitlines()[0], step.retry.delay)
                    self.sleep(step.retry.delay)
        record.ended = utc_now()
        record.duration = round(time.perf_counter() - begin, 3)
        record.status = outcome
        record.host = record.pid = None
        if record.status in ("failed", "interrupted"):
            log.error("%s: %s after %d attempt(s): %s", step.name, record.status, record.attempts,
                      (record.error or "").splitlines()[0])
        else:
            log.info("%s: done in %.1f s%s", step.name, record.duration, f": {record.note}" if record.note else "")
        self._write_log()

    # steps -------------------------------------------------------------------------------------
    @property
    def spark(self) -> SparkSession:
        """The Spark session sql steps and checks run in (started on first use, unless one was given)."""
        if self._spark is None:
            self._spark = get_spark()
        return self._spark

    def context(self, step: Step) -> dict[str, Any]:
        """What templates see (see ``templates.py``); raises FlowError for a flow variable that is not defined."""
        return self.templates.context(step)

    def render(self, step: Step, value: Any, extra: dict[str, Any] | None = None) -> Any:
        """``value`` with every ``{{ template }}`` rendered; a missing variable names the step and variable."""
        return self.templates.render(step, value, extra)

    def _timed_out(self, step: Step, what: str) -> str:
        return (f"step {step.name} timed out after {_seconds(step.timeout)} (attempt {self.records[step.name].attempts}"
                f" of {step.retry.attempts}); {what}")

    def in_worker(self, step: Step, payload: dict[str, Any], deadline: float) -> int | None:
        """Run ``payload`` (see ``worker.py``) in a worker process that is killed, with all it started, at
        ``deadline``; returns its rows. Raises StepTimeout, or WorkerFailed with the step's error."""
        record = self.records[step.name]

        def started(proc: subprocess.Popen[bytes]) -> None:
            with self._lock:
                self._workers[step.name] = proc
            record.pid = proc.pid
            if self._aborted.is_set():
                kill_tree(proc.pid)
            self._write_log()

        try:
            done = run_in_worker(payload, timeout=max(deadline - time.monotonic(), 0.0), folder=self.folder,
                                 on_start=started,
                                 timeout_message=self._timed_out(step, "its process and all it started were killed"))
            record.note = done.note
            return done.rows
        finally:
            with self._lock:
                self._workers.pop(step.name, None)
            record.pid = os.getpid()

    @contextlib.contextmanager
    def spark_deadline(self, step: Step, deadline: float) -> Iterator[None]:
        """Run Spark work in this thread under a job group that is cancelled at ``deadline``; raises StepTimeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StepTimeout(self._timed_out(step, "nothing was left of it for its checks"))
        with job_group_until(self.spark.sparkContext, f"oea-flow-{self.batch_id}-{step.name}-{uuid.uuid4().hex[:8]}",
                             f"flow {self.flow.name} step {step.name}", seconds=remaining,
                             watchdog=f"timeout-{step.name}",
                             timeout_message=self._timed_out(step, "its Spark jobs were cancelled")):
            yield

    def lake_view(self, stage: str, source: str, table: str, view: str | None = None, *,
                  session: SparkSession | None = None) -> str:
        """Register the lake table as a temporary view (``view``, else a name built from the checked lake
        names) in ``session``, else the run's Spark session; returns the view's name."""
        view = view or re.sub(r"[^A-Za-z0-9_]", "_", f"{stage}__{source}__{table}")
        pull_source(self.lake, source, f"flow {self.flow.name} checks")  # a cloud lake: read the account's state
        delta_store(session or self.spark).read(self.lake.table(stage, source, table)).createOrReplaceTempView(view)
        return view

    # log, notifications ------------------------------------------------------------------------
    def _write_log(self) -> dict[str, Any]:
        """Write the run log as it is now (atomically); returns it."""
        with self._lock:
            doc = {"pipeline": self.flow.name, "flow_file": os.path.abspath(self.flow.path),
                   "batch_id": self.batch_id, "status": self.status, "started": self.started,
                   "ended": None if self.status == "running" else utc_now(), "updated": utc_now(),
                   "lake": self.lake.setting, "host": hostname(), "pid": os.getpid(),
                   "pid_start": start_ticks(os.getpid()), "error": self.error,
                   "steps": {n: asdict(r) for n, r in self.records.items()}, "notifications": self.notifications}
            write_run_log(self.folder, doc)
            return doc

    def _notify(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        event = "on_failure" if summary["status"] == "failed" else "on_success"
        target = self.flow.notifications.get(event)
        return notify(target, summary, os.path.join(self.folder, RUN_LOG), event=event) if target else []


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _retryable(exc: Exception) -> bool:
    """False for a failure retrying cannot change (an error class with ``retryable = False``, such as
    DataQualityError), also when it came back from a worker process as ``<class>: <message>``."""
    if isinstance(exc, WorkerFailed):
        name = str(exc).split(":", 1)[0].strip()
        return bool(getattr(getattr(errors, name, None), "retryable", True))
    return bool(getattr(exc, "retryable", True))
