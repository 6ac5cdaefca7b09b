"""A python or notebook step runs in a worker process of its own, so that a timeout can kill it.

The runner starts ``python -c <boot> RESULT_FILE`` in a new session, writes the step's payload
(pickled) to its stdin and keeps that pipe open. The worker runs it with its kind's ``work`` (see
``steps.py``), writes ``{"rows": n}`` or ``{"error": "..."}`` to RESULT_FILE, and exits. If the
pipe closes first, the runner is gone (killed, even with kill -9): the worker kills everything it
started and exits, so no step outlives its run. The step's timeout starts when the worker has read
its step (it says so on a pipe of its own): loading Python and oea_core is not the step's time. A
step may also give one line saying what it did (``{"rows": n, "note": "..."}``), kept in the run log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import select
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from ..errors import FlowError, StepFailed, StepTimeout, WorkerFailed
from ..privacy.redaction import redact
from .process import kill_tree, wait_gone
from .steps import StepOutcome, WorkerStepKind, step_kinds

if TYPE_CHECKING:
    from collections.abc import Callable

READY_SETTING = "OEA_FLOW_WORKER_READY"
START_SECONDS = 120.0  # for a worker to load Python and oea_core and read its step (the timeout, if longer)
_BOOT = ("import os, sys; sys.path[:0] = os.environ.pop('OEA_FLOW_WORKER_PATH').split(os.pathsep); "
         "from oea_core.flow.worker import main; main(sys.argv[1])")


def run_in_worker(step: dict[str, Any], *, timeout: float, folder: str,
                  on_start: Callable[[subprocess.Popen[bytes]], None], timeout_message: str) -> StepOutcome:
    """Run ``step`` (a ``WorkerStepKind``'s payload with its ``kind``) in a worker; returns its rows and note.

    Raises StepTimeout when it runs past ``timeout`` seconds from when the worker has its step (after
    Python and oea_core loaded, which can take seconds on a busy machine; a worker that does not get
    that far within ``START_SECONDS``, or ``timeout`` if longer, is killed too), WorkerFailed when the
    step fails.
    """
    fd, result = tempfile.mkstemp(prefix=".worker-", suffix=".json", dir=folder)
    os.close(fd)
    ready, told = os.pipe()  # the worker writes a byte once it has its step: the timeout starts then
    env = {**os.environ, "OEA_FLOW_WORKER_PATH": os.pathsep.join(p for p in sys.path if p),
           READY_SETTING: str(told)}
    try:
        with subprocess.Popen([sys.executable, "-c", _BOOT, result], stdin=subprocess.PIPE, env=env,
                              start_new_session=True, pass_fds=(told,)) as proc:
            os.close(told)
            told = -1
            on_start(proc)
            assert proc.stdin is not None  # stdin=PIPE
            try:
                proc.stdin.write(pickle.dumps({**step, "log_level": logging.getLogger("oea").getEffectiveLevel()}))
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it died at once; its exit code says so below
            try:
                if not _readable(ready, max(timeout, START_SECONDS)):  # stuck before its step
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                wait_gone(kill_tree(proc.pid), 10.0)
                proc.wait()
                raise StepTimeout(timeout_message) from None
        with open(result, encoding="utf-8") as handle:
            text = handle.read()
    finally:
        for fd in (ready, told):
            if fd >= 0:
                os.close(fd)
        for path in (result, f"{result}.tmp"):
            if os.path.exists(path):
                os.unlink(path)
    if not text:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise WorkerFailed(f"the step's worker process ended ({how}) without a result")
    outcome = json.loads(text)
    if "error" in outcome:
        raise WorkerFailed(outcome["error"])
    return StepOutcome(outcome["rows"], outcome.get("note"))


def _readable(fd: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``fd`` to have data or be closed (poll: any descriptor number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(seconds * 1000))))


def main(result: str) -> None:
    """The worker's entry point (see the module docstring)."""
    pipe = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the step's own code must not read the runner's pipe
    step = pickle.load(pipe)
    told = int(os.environ.pop(READY_SETTING, "-1"))
    if told >= 0:  # the runner starts the step's timeout now (Python and oea_core took their time to load)
        os.write(told, b"1")
        os.close(told)  # nor do the step's own processes hold it
    threading.Thread(target=_watch_runner, args=(pipe,), daemon=True).start()
    logging.basicConfig(level=logging.WARNING, format="oea: %(message)s", stream=sys.stderr)
    logging.getLogger("oea").setLevel(step["log_level"])
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact())
    try:
        done = _run(step)
        outcome: dict[str, Any] = (
            {"rows": done.rows, "note": redact(done.note) if done.note else None} if isinstance(done, StepOutcome) else {"rows": done})
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


def _watch_runner(pipe: IO[bytes]) -> None:
    while pipe.read(65536):
        pass
    kill_tree(os.getpid(), include_root=False)  # the runner is gone: so is this step
    time.sleep(0.1)
    os._exit(70)


def _run(step: dict[str, Any]) -> int | StepOutcome | None:
    kind = step_kinds.get(step["kind"])
    if not isinstance(kind, WorkerStepKind):
        raise FlowError(f"step kind {kind.name!r} does not run in a worker process")
    return kind.work(step)
