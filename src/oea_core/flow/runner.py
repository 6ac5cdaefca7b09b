"""Running a flow: one batch id for the whole run, parallel where allowed, retries, checkpoints, checks.

A step that still fails after its attempts fails the run, its dependents are skipped (never
run), and independent branches finish. The run log ``<runs>/<batch_id>/run_log.json`` is
rewritten after every step, so it is also the checkpoint: running the same batch id again
skips the steps that succeeded and reruns the failed and skipped ones.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from ..landing import new_batch_id
from ..paths import LakePaths, check_name
from ..salt import redact
from .spec import Check, Flow, FlowError, Step

log = logging.getLogger("oea")
RUN_LOG = "run_log.json"
DONE = ("success", "cached")


@dataclass
class StepRecord:
    status: str = "pending"
    attempts: int = 0
    started: str | None = None
    ended: str | None = None
    duration: float | None = None
    rows: int | None = None
    checks: list[dict] = field(default_factory=list)
    error: str | None = None
    depends_on: list[str] = field(default_factory=list)


class StepFailed(Exception):
    """A step's own failure (an error check, a failed notebook), with a message for the run log."""


def runs_dir(lake: LakePaths) -> str:
    return lake.state_path("runs") if lake.is_local else os.path.abspath("runs")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class FlowRun:
    """One run of a flow over a lake. ``sleep`` can be replaced (tests retry without waiting)."""

    def __init__(self, flow: Flow, lake: LakePaths, *, batch_id: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, max_parallel: int | None = None,
                 spark=None) -> None:
        self.flow = flow
        self.lake = lake
        self.batch_id = check_name(batch_id or flow.batch_id or new_batch_id(), "batch id")
        self.sleep = sleep
        self.max_parallel = max_parallel or flow.max_parallel
        self._spark = spark
        self.folder = os.path.join(runs_dir(lake), self.batch_id)
        self.records: dict[str, StepRecord] = {n: StepRecord(depends_on=sorted(s.depends_on))
                                               for n, s in flow.steps.items()}
        self.started = _now()
        self._lock = threading.Lock()

    # public ------------------------------------------------------------------------------------
    def run(self, from_step: str | None = None, only: str | None = None) -> dict:
        """Run the flow; returns the run log. Raises FlowError naming the failed steps at the end."""
        for name in (from_step, only):
            if name is not None and name not in self.flow.steps:
                raise FlowError(f"no step {name!r} in {self.flow.path}; steps: {', '.join(self.flow.steps)}")
        previous = self._checkpoint()
        rerun = self.flow.downstream(from_step) if from_step else set()
        todo = {only} if only else set(self.flow.steps)
        for name, record in self.records.items():
            done_before = previous.get(name, {}).get("status") in DONE
            if name not in todo or (done_before and name not in rerun and name != only):
                record.status = "cached" if done_before else "not_selected"
                if done_before:
                    old = previous[name]
                    record.rows, record.checks = old.get("rows"), old.get("checks", [])
        os.makedirs(self.folder, exist_ok=True)
        log.info("flow %s, batch %s: %d steps to run, %d done before", self.flow.name, self.batch_id,
                 sum(r.status == "pending" for r in self.records.values()),
                 sum(r.status == "cached" for r in self.records.values()))
        self._execute(only)
        summary = self._write_log()
        self._notify(summary)
        failed = [n for n, r in self.records.items() if r.status == "failed"]
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
        steps = self.flow.steps
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            while True:
                for name, record in self.records.items():
                    if record.status != "pending":
                        continue
                    deps = [] if name == only else [self.records[d] for d in steps[name].depends_on]
                    blocked = [d for d in steps[name].depends_on if name != only
                               and self.records[d].status in ("failed", "skipped", "not_selected")]
                    if blocked:
                        record.status = "skipped"
                        record.error = f"not run: {', '.join(sorted(blocked))} did not succeed"
                        log.warning("%s: skipped (%s)", name, record.error)
                        self._write_log()
                    elif all(d.status in DONE for d in deps) and len(running) < self.max_parallel:
                        record.status = "running"
                        running[pool.submit(self._run_step, steps[name])] = name
                if not running:
                    if any(r.status == "pending" for r in self.records.values()):
                        continue  # newly unblocked or skipped steps: look again
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
                    future.result()

    def _run_step(self, step: Step) -> None:
        record = self.records[step.name]
        record.started = _now()
        begin = time.perf_counter()
        outcome = "failed"  # the record stays 'running' until the last attempt, so dependents wait
        for attempt in range(1, step.retry.attempts + 1):
            record.attempts = attempt
            try:
                log.info("%s: running (attempt %d of %d)", step.name, attempt, step.retry.attempts)
                record.rows = self._dispatch(step)
                record.checks = self._checks(step)
                failing = [c for c in record.checks if not c["passed"] and c["severity"] == "error"]
                if failing:
                    names = ", ".join(f"{c['name']} ({c['value']} offending)" for c in failing)
                    record.error = f"data-quality check failed: {names}"
                    break  # the data will not change by retrying
                outcome, record.error = "success", None
                break
            except Exception as exc:  # noqa: BLE001 - a step failure must not stop independent branches
                record.error = redact(f"{type(exc).__name__}: {exc}")[:2000]
                if attempt < step.retry.attempts:
                    log.warning("%s: attempt %d failed (%s); retrying in %.0f s", step.name, attempt,
                                record.error.splitlines()[0], step.retry.delay)
                    self.sleep(step.retry.delay)
        record.ended = _now()
        record.duration = round(time.perf_counter() - begin, 3)
        record.status = outcome
        if record.status == "failed":
            log.error("%s: failed after %d attempt(s): %s", step.name, record.attempts,
                      (record.error or "").splitlines()[0])
        else:
            log.info("%s: done in %.1f s", step.name, record.duration)
        self._write_log()

    # steps -------------------------------------------------------------------------------------
    @property
    def spark(self):
        if self._spark is None:
            from ..spark import get_spark

            self._spark = get_spark()
        return self._spark

    def context(self, step: Step) -> dict:
        """What templates see: the run's values, then the flow's ``variables`` (rendered with those values)."""
        import jinja2

        base = {"base_path": self.lake.root or self.lake.account, "batch_id": self.batch_id,
                "pipeline": {"name": self.flow.name}, "stage": {"name": step.stage},
                "group": {"name": step.group}, "name": step.name, "inputs": sorted(step.inputs),
                "run_dir": self.folder, "flow_dir": self.flow.folder}
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        variables = {}
        for key, value in self.flow.variables.items():
            try:
                variables[key] = env.from_string(value).render(base) if isinstance(value, str) else value
            except jinja2.UndefinedError as exc:
                raise FlowError(f"flow variable {key!r}: {exc}; variables may use {', '.join(sorted(base))}") from None
        return {**variables, **base}

    def render(self, step: Step, value, extra: dict | None = None):
        """``value`` with every ``{{ template }}`` rendered; a missing variable names the step and variable."""
        import jinja2

        if isinstance(value, dict):
            return {k: self.render(step, v, extra) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(step, v, extra) for v in value]
        if not isinstance(value, str) or "{{" not in value and "{%" not in value:
            return value
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            return env.from_string(value).render({**self.context(step), **(extra or {})})
        except jinja2.UndefinedError as exc:
            match = re.search(r"'([^']+)' is undefined", str(exc))
            variable = match.group(1) if match else str(exc)
            raise FlowError(f"step {step.name}: template variable {variable!r} is not defined (in {value[:80]!r}); "
                            f"known: {', '.join(sorted({**self.context(step), **(extra or {})}))}") from None

    def _dispatch(self, step: Step) -> int | None:
        if step.kind == "python":
            return self._python(step)
        if step.kind == "notebook":
            return self._notebook(step)
        return self._sql(step)

    def _python(self, step: Step) -> int | None:
        module, _, name = step.target.partition(":")
        function = getattr(importlib.import_module(module), name)
        kwargs = self.render(step, step.parameters)
        if "context" in inspect.signature(function).parameters:
            kwargs["context"] = {**self.context(step), "lake": self.lake, "run": self}
        return _rows(function(**kwargs))

    def _notebook(self, step: Step) -> None:
        import papermill as pm
        from papermill.exceptions import PapermillExecutionError

        source = self.render(step, step.target)
        target = os.path.join(self.folder, "notebooks", f"{step.name}.ipynb")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        params = self.render(step, step.parameters)
        declared = pm.inspect_notebook(source)
        if "batch_id" in declared:
            params.setdefault("batch_id", self.batch_id)  # the run's batch id reaches every notebook that takes one
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise FlowError(f"step {step.name}: notebook {source} has no parameters {unknown}; "
                            f"it declares {sorted(declared)}")
        try:
            pm.execute_notebook(source, target, parameters=params, progress_bar=False, kernel_name="python3",
                                cwd=os.path.dirname(source))
        except PapermillExecutionError as exc:
            raise StepFailed(f"notebook {os.path.basename(source)} failed in cell {exc.exec_count}: {exc.ename}: "
                             f"{exc.evalue} (executed copy: {target})") from None

    def _table_function(self, step: Step):
        from ..delta import delta_store

        def table(stage: str, source: str, name: str) -> str:
            view = re.sub(r"[^A-Za-z0-9_]", "_", f"{stage}__{source}__{name}")
            delta_store(self.spark).read(self.lake.table(stage, source, name)).createOrReplaceTempView(view)
            return view

        return table

    def _sql(self, step: Step) -> int:
        from ..delta import delta_store

        store = delta_store(self.spark)
        table = self._table_function(step)
        for view, ref in self.render(step, step.inputs).items():
            stage, source, name = _ref(step, ref)
            store.read(self.lake.table(stage, source, name)).createOrReplaceTempView(view)
        with open(step.target, encoding="utf-8") as handle:
            text = self.render(step, handle.read(), {"delta": table})
        output = self.render(step, step.output)
        path = self.lake.table(output["stage"], output["source"], output["table"])
        app_id = f"oea.flow/{self.flow.name}/{step.name}/{self.batch_id}"
        if store.applied(path, app_id):
            log.info("%s: batch %s already written to %s", step.name, self.batch_id, path)
            return 0
        result = store.write(self.spark.sql(text), path, mode=output.get("mode", "overwrite"), app_id=app_id,
                             metadata={"flow": self.flow.name, "step": step.name, "batch_id": self.batch_id})
        return result.rows

    def _checks(self, step: Step) -> list[dict]:
        results = []
        for check in step.checks:
            results.append(self._check(step, check))
            if not results[-1]["passed"]:
                level = logging.ERROR if check.severity == "error" else logging.WARNING
                log.log(level, "%s: check %s (%s) found %s offending", step.name, check.name, check.severity,
                        results[-1]["value"])
        return results

    def _check(self, step: Step, check: Check) -> dict:
        params = self.render(step, check.params)
        extra = {**params, "delta": self._table_function(step), "params": params}
        if step.output:
            output = self.render(step, step.output)
            extra["output"] = self._table_function(step)(output["stage"], output["source"], output["table"])
        with open(self.render(step, check.sql), encoding="utf-8") as handle:
            text = self.render(step, handle.read(), extra)
        frame = self.spark.sql(text)
        if frame.columns == ["count"]:
            value = int(frame.collect()[0][0] or 0)
        else:
            value = frame.count()
        # only the count is kept: offending rows may hold identifiers, which do not belong in a run log
        return {"name": check.name, "severity": check.severity, "value": value, "max": check.max,
                "passed": value <= check.max}

    # log, checkpoint, notifications ------------------------------------------------------------
    def _checkpoint(self) -> dict:
        path = os.path.join(self.folder, RUN_LOG)
        if not self.flow.checkpoint or not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous.get("pipeline") != self.flow.name:
            raise FlowError(f"batch {self.batch_id} belongs to pipeline {previous.get('pipeline')!r}, not "
                            f"{self.flow.name!r}: use another --batch-id")
        return previous.get("steps", {})

    def _write_log(self) -> dict:
        with self._lock:
            statuses = [r.status for r in self.records.values()]
            status = ("failed" if "failed" in statuses else "running" if {"pending", "running"} & set(statuses)
                      else "success")
            doc = {"pipeline": self.flow.name, "flow_file": os.path.abspath(self.flow.path),
                   "batch_id": self.batch_id, "status": status, "started": self.started, "ended": _now(),
                   "lake": self.lake.root or self.lake.account,
                   "steps": {n: asdict(r) for n, r in self.records.items()}}
            os.makedirs(self.folder, exist_ok=True)
            temp = os.path.join(self.folder, f".{RUN_LOG}.tmp")
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write(redact(json.dumps(doc, indent=1)))
            os.replace(temp, os.path.join(self.folder, RUN_LOG))
            return doc

    def _notify(self, summary: dict) -> None:
        from .notify import notify

        event = "on_failure" if summary["status"] == "failed" else "on_success"
        target = self.flow.notifications.get(event)
        if target:
            notify(target, summary, os.path.join(self.folder, RUN_LOG))


def _ref(step: Step, ref: str) -> tuple[str, str, str]:
    parts = str(ref).strip("/").split("/")
    if len(parts) != 3:
        raise FlowError(f"step {step.name}: input {ref!r} must be <stage>/<source>/<table>")
    return parts[0], parts[1], parts[2]


def _rows(result) -> int | None:
    if isinstance(result, bool):
        return None
    if isinstance(result, int):
        return result
    if isinstance(result, (list, tuple)):
        rows = [getattr(r, "rows", None) for r in result]
        return sum(r for r in rows if isinstance(r, int)) if any(isinstance(r, int) for r in rows) else None
    rows = getattr(result, "rows", None)
    return rows if isinstance(rows, int) else None
