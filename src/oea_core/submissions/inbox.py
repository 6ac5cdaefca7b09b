"""``oea watch INBOX``: process every bundle dropped into a folder, local or on the lake's account.

An inbox is a folder (``/srv/inbox``) or ``abfss://<container>@<account>.dfs.core.windows.net/<folder>``.
Every ``*.tar``, ``*.tar.gz`` and ``*.tgz`` directly in it is a bundle (names starting with ``.`` or
ending ``.part`` are being written, and left alone). A bundle is taken once it has been still for the
settle time (``$OEA_WATCH_SETTLE`` seconds, default 30): its size and modification time (a blob's ETag)
the same at two polls in a row, and either last modified that long ago or seen unchanged that long. One
that still looks incomplete (:class:`~oea_core.errors.IncompleteBundleError`: a tar without its end
blocks, a gzip stream cut short) stays where it is, untouched and unrecorded, until it changes. Each is
processed by :func:`~oea_core.submissions.submit.submit_bundle`, then moved to ``processed/`` (accepted,
or processed before) or ``rejected/`` under the inbox (a name already there gets a UTC time prefix). A
bundle from the account is downloaded to a private temporary file first.

The ``submissions`` lake lock is held from the check that the bundle is still there to its move, so two
watchers of one inbox (and lake) never process one bundle twice. A failure that is not the bundle's fault
(the lock busy, storage down) leaves the bundle where it is, for the next poll.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..errors import IncompleteBundleError, LakePathError, OEAError, SubmissionError
from ..extras import require
from ..intake.spark_paths import shown
from ..lake.lock import lake_lock
from ..lake.paths import parse_abfss
from ..lake.storage import resolve_credentials, storage_errors
from .submit import LOCK_NAME, Submission, submit_bundle

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ..lake.paths import LakePaths
    from .bundle import SubmissionLimits

log = logging.getLogger("oea")
SUFFIXES = (".tar", ".tar.gz", ".tgz")
OUTCOME_FOLDERS = {"accepted": "processed", "rejected": "rejected"}
DEFAULT_INTERVAL = 5.0
SETTLE_SETTING = "OEA_WATCH_SETTLE"
DEFAULT_SETTLE = 30.0


def settle_seconds(environ: Mapping[str, str] | None = None) -> float:
    """How long a bundle must be still before it is taken: ``$OEA_WATCH_SETTLE`` seconds, else 30;
    SubmissionError for a value that is not a number of 0 or more."""
    value = (os.environ if environ is None else environ).get(SETTLE_SETTING, "").strip()
    if not value:
        return DEFAULT_SETTLE
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        raise SubmissionError(f"{SETTLE_SETTING}={value[:40]!r} is not a number of seconds of 0 or more: set it to "
                              f"e.g. {DEFAULT_SETTLE:g}, or unset it")
    return seconds


@dataclass(frozen=True)
class Signature:
    """What a poll sees of a file: it changes while the file is written. ``modified``: epoch seconds, if known."""

    size: int | None
    version: object  # a file's mtime in nanoseconds, a blob's ETag
    modified: float | None


def is_bundle_name(name: str) -> bool:
    """Whether a file in the inbox is a bundle to take (not hidden, not a ``.part`` still being written)."""
    lower = name.lower()
    return not name.startswith(".") and not lower.endswith(".part") and lower.endswith(SUFFIXES)


def _moved_name(name: str, taken: bool) -> str:
    return f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{name}" if taken else name


class Inbox(Protocol):
    """Where bundles arrive: list them with a signature that changes while one is written, fetch, move."""

    shown: str

    def signatures(self) -> dict[str, Signature]: ...

    def exists(self, name: str) -> bool: ...

    def fetch(self, name: str) -> contextlib.AbstractContextManager[str]: ...

    def move(self, name: str, folder: str) -> str: ...


class LocalInbox:
    """A local folder."""

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise SubmissionError(f"inbox {shown(folder)} is not a folder: create it, or give another")
        self.folder = folder
        self.shown = shown(folder)

    def signatures(self) -> dict[str, Signature]:
        found = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_bundle_name(entry.name) and entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    found[entry.name] = Signature(info.st_size, info.st_mtime_ns, info.st_mtime)
        return found

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.folder, name))

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[str]:
        yield os.path.join(self.folder, name)

    def move(self, name: str, folder: str) -> str:
        target_dir = os.path.join(self.folder, folder)
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, _moved_name(name, os.path.exists(os.path.join(target_dir, name))))
        os.replace(os.path.join(self.folder, name), target)
        return target


class CloudInbox:
    """A folder of an ADLS Gen2 (or Blob) account, through adlfs and the lake's credential settings."""

    def __init__(self, url: str) -> None:
        try:
            where = parse_abfss(url)
        except LakePathError as exc:
            raise SubmissionError(f"inbox {url!r} is not of the form abfss://<container>@<account>.dfs.core."
                                  "windows.net/<folder>: fix the INBOX argument") from exc
        self.shown = url
        self.prefix = f"{where.container}/{where.path}".rstrip("/")
        self.credentials = resolve_credentials(where.account)
        with storage_errors(self.credentials):
            self.fs = require("adlfs").AzureBlobFileSystem(**self.credentials.adlfs_kwargs())

    def signatures(self) -> dict[str, Signature]:
        with storage_errors(self.credentials):
            try:
                entries = self.fs.ls(self.prefix, detail=True, refresh=True)
            except FileNotFoundError:
                return {}
        return {os.path.basename(e["name"].rstrip("/")): Signature(e.get("size"), str(e.get("etag")),
                                                                   _epoch(e.get("last_modified")))
                for e in entries if e.get("type") == "file" and is_bundle_name(os.path.basename(e["name"]))}

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache()
        with storage_errors(self.credentials):
            return bool(self.fs.exists(f"{self.prefix}/{name}"))

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="oea-inbox-") as private:
            local = os.path.join(private, name)
            with storage_errors(self.credentials):
                self.fs.get_file(f"{self.prefix}/{name}", local)
            yield local

    def move(self, name: str, folder: str) -> str:
        self.fs.invalidate_cache()
        with storage_errors(self.credentials):
            taken = self.fs.exists(f"{self.prefix}/{folder}/{name}")
            target = f"{self.prefix}/{folder}/{_moved_name(name, taken)}"
            self.fs.mv(f"{self.prefix}/{name}", target)
        return target


def _epoch(value: object) -> float | None:
    return value.timestamp() if isinstance(value, dt.datetime) else None


def open_inbox(setting: str) -> Inbox:
    """The inbox at ``setting``: an ``abfss://`` URL or a local folder."""
    return CloudInbox(setting) if setting.startswith("abfss://") else LocalInbox(os.path.abspath(setting))


@dataclass
class WatchSummary:
    """What a watch did: the submissions processed, and the bundles left for later (not the bundle's fault)."""

    submissions: list[Submission] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def line(self) -> str:
        counts: dict[str, int] = {}
        for sub in self.submissions:
            key = "already processed" if sub.duplicate else sub.status
            counts[key] = counts.get(key, 0) + 1
        done = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no bundles"
        return done + (f"; {len(self.left)} left for a later run: {', '.join(self.left)}" if self.left else "")


def process_one(lake: LakePaths, inbox: Inbox, name: str, limits: SubmissionLimits) -> Submission | None:
    """Submit one bundle of the inbox and move it; None when it is gone or was left where it is (logged).
    Raises IncompleteBundleError, leaving it where it is, when it looks incomplete."""
    try:
        with lake_lock(lake, LOCK_NAME, f"watch {inbox.shown}"):
            if not inbox.exists(name):  # another watcher took it
                return None
            with inbox.fetch(name) as local:
                submission = submit_bundle(lake, local, limits=limits, name=name)
            moved = inbox.move(name, OUTCOME_FOLDERS[submission.status])
    except IncompleteBundleError:
        raise
    except OEAError as exc:
        log.error("bundle %s left in %s for the next poll: %s", name, inbox.shown, exc)
        return None
    except Exception as exc:  # a watcher outlives one bundle's unexpected failure; logged, retried
        log.error("bundle %s left in %s for the next poll: unexpected %s: %s", name, inbox.shown,
                  type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return None
    log.info("%s; moved to %s", submission.line(), moved)
    return submission


@dataclass
class _Polls:
    """What the polls saw: each bundle's signature, since when (monotonic), and those found incomplete."""

    settle: float
    seen: dict[str, Signature] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    incomplete: dict[str, Signature] = field(default_factory=dict)

    def look(self, current: dict[str, Signature]) -> list[str]:
        """The bundles ready now: the same as at the last poll, still for the settle time, not known incomplete."""
        now, wall = time.monotonic(), time.time()
        self.since = {name: self.since[name] if self.seen.get(name) == sig and name in self.since else now
                      for name, sig in current.items()}
        self.incomplete = {name: sig for name, sig in self.incomplete.items() if current.get(name) == sig}
        ready = [name for name, sig in current.items() if self.seen.get(name) == sig and name not in self.incomplete
                 and max(now - self.since[name], wall - (sig.modified or wall)) >= self.settle]
        self.seen = current
        return sorted(ready)


def watch_inbox(lake: LakePaths, inbox: Inbox, *, limits: SubmissionLimits, interval: float = DEFAULT_INTERVAL,
                once: bool = False, stop: threading.Event | None = None, settle: float | None = None
                ) -> WatchSummary:
    """Poll ``inbox`` every ``interval`` seconds and process each bundle that has been still for ``settle`` seconds
    (default: :func:`settle_seconds`), until ``stop`` is set (or Ctrl-C); ``once``: two looks (``min(interval, 1)`` s
    apart), process what is ready, return. A bundle that looks incomplete is left until it changes."""
    stop = stop or threading.Event()
    if settle is not None and not settle >= 0:
        raise SubmissionError(f"the watch's settle time is {settle}: give 0 or more seconds")
    polls = _Polls(settle_seconds() if settle is None else settle)
    summary = WatchSummary()
    log.info("watching %s for bundles (%s) every %.1f s, each taken once still for %g s%s", inbox.shown,
             ", ".join(SUFFIXES), interval, polls.settle, "" if once else "; Ctrl-C stops")
    first = True
    try:
        while True:
            current = inbox.signatures()
            ready = polls.look(current)
            for name in ready:
                if stop.is_set():
                    break
                result = _take(lake, inbox, name, limits, polls)
                if result is not None:
                    summary.submissions.append(result)
                    polls.seen.pop(name, None)
                elif once and inbox.exists(name):
                    summary.left.append(name)
            if once and not first:
                summary.left += sorted(set(polls.seen) - set(ready))
                break
            if stop.wait(min(interval, 1.0) if once else interval):
                break
            first = False
    except KeyboardInterrupt:
        log.info("watch of %s stopped (Ctrl-C); a bundle being processed, if any, is processed again next time",
                 inbox.shown)
    for name in summary.left:
        log.info("bundle %s is still being written (or was left); the next run takes it", name)
    return summary


def _take(lake: LakePaths, inbox: Inbox, name: str, limits: SubmissionLimits, polls: _Polls) -> Submission | None:
    try:
        return process_one(lake, inbox, name, limits)
    except IncompleteBundleError as exc:
        polls.incomplete[name] = polls.seen[name]
        log.warning("%s (left in %s; tried again once it changes)", exc, inbox.shown)
        return None
