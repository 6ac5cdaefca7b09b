"""The lake lock: one land, ingest, refine or flow at a time per lake and source (or flow).

A run holds ``<lake>/oea-framework/locks/<name>.lock`` for its whole length: an exclusive
``flock`` on the file, which the operating system releases when the process ends however it
ends, so a lock left by a killed run is taken over by the next one (which says so). The file
holds who has it (operation, host, pid, since), for the message a second run prints::

    clever ingest already running since 2026-11-24T01:02:03Z (host lab-3, pid 4242)

A second run waits up to ``wait`` seconds (``--wait``, ``$OEA_LOCK_WAIT``; default 0) before it
gives up. The lock is re-entrant within a process (an Ed-Fi ingest that refines holds it once).

Cloud lakes (``abfss://`` with a working copy): the ``flock`` is taken on the working copy (one run
per machine touches it), then a blob lease on ``oea-framework/locks/<name>.lock`` in the account
(:mod:`oea_core.lake.lease`), which keeps runs on other machines out and lapses within a minute of a
holder's death. A source's run then pulls its folders, works, and pushes them
(:mod:`oea_core.lake.cloud`). On Synapse (a cloud lake without a working copy) no lock is taken:
every commit still checks its app transaction inside the commit, so two runs cannot write one
batch twice (see :mod:`oea_core.delta.base`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import LakeLockError
from .cloud import SyncedFolder, open_cloud
from .diskspace import disk_full_message, is_disk_full
from .lease import blob_lease
from .leftovers import clean_source
from .paths import STAGES, LakePaths, check_name

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger("oea")
LANDING = ("stage1np",)  # the stages a landing touches (a cloud lake's working copy pulls only these)
WAIT_SETTING = "OEA_LOCK_WAIT"
_POLL_SECONDS = 0.5
_HELD: dict[str, list[Any]] = {}  # path -> [file descriptor, depth, holder]
_REGISTRY = threading.RLock()


def lock_path(lake: LakePaths, name: str) -> str:
    """Where the lock of ``name`` (a source such as ``clever``, or ``flow-<name>``) lives."""
    return lake.state_path("locks", check_name(name, "lock name") + ".lock")


def default_wait() -> float:
    """Seconds to wait for a busy lock: ``$OEA_LOCK_WAIT``, else 0."""
    value = os.environ.get(WAIT_SETTING, "") or "0"
    try:
        seconds = float(value)
    except ValueError:
        raise LakeLockError(f"{WAIT_SETTING}={value!r} is not a number of seconds: set it to e.g. 600") from None
    if seconds < 0:
        raise LakeLockError(f"{WAIT_SETTING}={value!r} is negative: set it to 0 or more seconds")
    return seconds


def holder(lake: LakePaths, name: str) -> dict[str, Any] | None:
    """Who holds the lock now (operation, host, pid, since), or None when nobody does."""
    if lake.root is None:
        return None
    path = lock_path(lake, name)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {"operation": "a run", "host": "?", "pid": "?", "since": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def lake_lock(lake: LakePaths, name: str, operation: str, *, wait: float | None = None) -> Iterator[dict[str, Any]]:
    """Hold the lock of ``name`` for ``operation`` (e.g. ``"clever ingest"``); raises LakeLockError when
    another run holds it for longer than ``wait`` seconds (default :func:`default_wait`)."""
    if lake.root is None:
        log.info("%s: a cloud lake without a working copy (Synapse), so no lake lock is taken (two runs of one "
                 "batch are still refused by the Delta commits' app transactions)", operation)
        yield {"operation": operation, "host": socket.gethostname(), "pid": os.getpid()}
        return
    path = lock_path(lake, name)
    with _REGISTRY:
        held = _HELD.get(path)
        if held is not None:  # re-entrant within this process
            held[1] += 1
    if held is not None:
        try:
            yield held[2]
        finally:
            with _REGISTRY:
                held[1] -= 1
        return
    seconds = default_wait() if wait is None else wait
    started = time.monotonic()
    fd, me = _acquire(path, operation, seconds)
    with _REGISTRY:
        _HELD[path] = [fd, 1, me]
    try:
        if lake.account is None:
            yield me
        else:  # the account's lease too, for the time left of the wait
            with blob_lease(open_cloud(lake).credentials, name, operation,
                            wait=max(0.0, seconds - (time.monotonic() - started))):
                yield me
    finally:
        with _REGISTRY:
            del _HELD[path]
        try:
            os.ftruncate(fd, 0)  # an empty file: released cleanly
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _acquire(path: str, operation: str, wait: float) -> tuple[int, dict[str, Any]]:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise _unwritable(path, exc, "open") from exc
    deadline = time.monotonic() + wait
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                other = _read(fd) or {}
                if time.monotonic() >= deadline:
                    raise LakeLockError(
                        f"{other.get('operation', 'another run')} already running since {other.get('since', '?')} "
                        f"(host {other.get('host', '?')}, pid {other.get('pid', '?')}); wait for it to finish, or "
                        f"rerun with --wait SECONDS to queue behind it (lock: {path})",
                        path=path, holder=other) from None
                if not told:
                    log.info("%s: waiting up to %.0f s for %s (host %s, pid %s) to finish", operation, wait,
                             other.get("operation", "another run"), other.get("host", "?"), other.get("pid", "?"))
                    told = True
                time.sleep(_POLL_SECONDS)
        left = _read(fd)
        if left:
            log.warning("%s: took over the lock left by %s (host %s, pid %s, since %s), which ended without "
                        "releasing it; its unfinished work is redone or cleaned up now", operation,
                        left.get("operation"), left.get("host"), left.get("pid"), left.get("since"))
        me = {"operation": operation, "host": socket.gethostname(), "pid": os.getpid(),
              "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # an empty file, as a released lock is: never half a holder
            raise _unwritable(path, exc, "write") from None
        return fd, me
    except BaseException:
        os.close(fd)
        raise


def _unwritable(path: str, exc: OSError, verb: str) -> LakeLockError:
    if is_disk_full(exc):
        return LakeLockError(disk_full_message("the lake lock", path) + "; nothing was run", path=path)
    return LakeLockError(f"cannot {verb} the lake lock {path}: {exc.strerror or exc}; check that the lake folder "
                         "is writable", path=path)


def _read(fd: int) -> dict[str, Any] | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def pull_source(lake: LakePaths, source: str, operation: str, *, wait: float | None = None) -> list[SyncedFolder]:
    """Bring a cloud lake's working copy of ``source`` up to the account's state (under its lock), for readers
    such as ``oea sql`` and ``oea lake check``; nothing to do on a local lake. Returns the folders pulled."""
    if lake.account is None or lake.root is None:
        return []
    with lake_lock(lake, source, operation, wait=wait):
        folders = open_cloud(lake).source_folders(source)
        for folder in folders:
            folder.pull()
        return folders


@contextmanager
def source_run(lake: LakePaths, source: str, operation: str, *, wait: float | None = None,
               stages: tuple[str, ...] = STAGES) -> Iterator[dict[str, Any]]:
    """Hold ``source``'s lock for ``operation``; the outermost holder removes the source's leftovers
    (:mod:`oea_core.lake.leftovers`) before the work and after it, so no run leaves uncommitted files."""
    with _REGISTRY:
        outer = lake.root is None or lock_path(lake, source) not in _HELD
    with lake_lock(lake, source, operation, wait=wait) as me:
        folders = open_cloud(lake).source_folders(source, stages) if outer and lake.account and lake.root else []
        for folder in folders:  # a cloud lake: the working copy becomes what the account holds
            folder.pull()
            folder.remove_half_batches()
        if outer:
            clean_source(lake, source, "before")
        try:
            yield me
        finally:
            if outer:
                try:
                    clean_source(lake, source, "after")
                except OSError as exc:  # never hide the run's own outcome; the next run cleans up
                    log.warning("%s: could not remove leftovers: %s; `oea lake check --repair` will", operation, exc)
        for folder in folders:  # only after the work succeeded
            folder.push()
