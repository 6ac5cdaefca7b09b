"""A python or notebook step runs in a worker process of its own, so that a timeout can kill it.

The runner starts ``python -c <boot> RESULT_FILE`` in a new session, writes the step (pickled) to
its stdin and keeps that pipe open. The worker runs the step, writes ``{"rows": n}`` or
``{"error": "..."}`` to RESULT_FILE, and exits. If the pipe closes first, the runner is gone
(killed, even with kill -9): the worker kills everything it started and exits, so no step
outlives its run.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from ..errors import StepFailed, StepTimeout, WorkerFailed
from ..salt import redact
from .process import kill_tree, wait_gone

_BOOT = ("import os, sys; sys.path[:0] = os.environ.pop('OEA_FLOW_WORKER_PATH').split(os.pathsep); "
         "from oea_core.flow.worker import main; main(sys.argv[1])")


def run_in_worker(step: dict, *, timeout: float, folder: str, on_start: Callable[[subprocess.Popen], None],
                  timeout_message: str) -> int | None:
    """Run ``step`` (see ``_run``) in a worker; returns its rows. Raises StepTimeout or WorkerFailed."""
    fd, result = tempfile.mkstemp(prefix=".worker-", suffix=".json", dir=folder)
    os.close(fd)
    env = {**os.environ, "OEA_FLOW_WORKER_PATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        with subprocess.Popen([sys.executable, "-c", _BOOT, result], stdin=subprocess.PIPE, env=env,
                              start_new_session=True) as proc:
            on_start(proc)
            try:
                proc.stdin.write(pickle.dumps({**step, "log_level": logging.getLogger("oea").getEffectiveLevel()}))
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it died at once; its exit code says so below
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                wait_gone(kill_tree(proc.pid), 10.0)
                proc.wait()
                raise StepTimeout(timeout_message) from None
        with open(result, encoding="utf-8") as handle:
            text = handle.read()
    finally:
        for path in (result, f"{result}.tmp"):
            if os.path.exists(path):
                os.unlink(path)
    if not text:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise WorkerFailed(f"the step's worker process ended ({how}) without a result")
    outcome = json.loads(text)
    if "error" in outcome:
        raise WorkerFailed(outcome["error"])
    return outcome["rows"]


def main(result: str) -> None:
    """The worker's entry point (see the module docstring)."""
    pipe = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the step's own code must not read the runner's pipe
    step = pickle.load(pipe)
    threading.Thread(target=_watch_runner, args=(pipe,), daemon=True).start()
    logging.basicConfig(level=logging.WARNING, format="oea: %(message)s", stream=sys.stderr)
    logging.getLogger("oea").setLevel(step["log_level"])
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact())
    try:
        outcome: dict = {"rows": _run(step)}
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - every failure goes back to the runner
        text = str(exc) if isinstance(exc, StepFailed) and not exc.prefix else f"{type(exc).__name__}: {exc}"
        outcome = {"error": redact(text)[:4000]}
    temp = f"{result}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(outcome, handle)
    os.replace(temp, result)  # from here on, a crash at interpreter exit does not change the outcome
    exit_anyway = threading.Timer(30.0, os._exit, args=(0,))  # threads the step left must not hold the exit
    exit_anyway.daemon = True
    exit_anyway.start()


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def _watch_runner(pipe) -> None:
    while pipe.read(65536):
        pass
    kill_tree(os.getpid(), include_root=False)  # the runner is gone: so is this step
    time.sleep(0.1)
    os._exit(70)


def _run(step: dict) -> int | None:
    if step["kind"] == "python":
        module, _, name = step["target"].partition(":")
        function = getattr(importlib.import_module(module), name)
        kwargs = dict(step["kwargs"])
        if step.get("context") is not None:
            kwargs["context"] = step["context"]
        return _rows(function(**kwargs))
    return _notebook(step)


def _notebook(step: dict) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    source, target = step["source"], step["target"]
    try:
        pm.execute_notebook(source, target, parameters=step["parameters"], progress_bar=False,
                            kernel_name="python3", cwd=os.path.dirname(source))
    except PapermillExecutionError as exc:
        raise StepFailed(f"notebook {os.path.basename(source)} failed in cell {exc.exec_count}: {exc.ename}: "
                         f"{exc.evalue} (executed copy: {target})") from None


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
