"""``oea watch INBOX``: process every bundle dropped into a folder, local or on the lake's account.

An inbox is a folder (``/srv/inbox``) or ``abfss://<container>@<account>.dfs.core.windows.net/<folder>``.
Every ``*.tar``, ``*.tar.gz`` and ``*.tgz`` directly in it is a bundle (names starting with ``.`` or
ending ``.part`` are being written, and left alone). A bundle is taken once its size and modification
time (a blob's ETag) were the same at two polls in a row, so a file still being copied waits. Each is
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
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import LakePathError, OEAError, SubmissionError
from ..extras import require
from ..lock import lake_lock
from ..paths import parse_abfss
from ..spark_paths import shown
from ..storage import resolve_credentials, storage_errors
from .submit import LOCK_NAME, Submission, submit_bundle

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..paths import LakePaths
    from .bundle import SubmissionLimits

log = logging.getLogger("oea")
SUFFIXES = (".tar", ".tar.gz", ".tgz")
OUTCOME_FOLDERS = {"accepted": "processed", "rejected": "rejected"}
DEFAULT_INTERVAL = 5.0


def is_bundle_name(name: str) -> bool:
    """Whether a file in the inbox is a bundle to take (not hidden, not a ``.part`` still being written)."""
    lower = name.lower()
    return not name.startswith(".") and not lower.endswith(".part") and lower.endswith(SUFFIXES)


def _moved_name(name: str, taken: bool) -> str:
    return f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{name}" if taken else name


class Inbox(Protocol):
    """Where bundles arrive: list them with a signature that changes while one is written, fetch, move."""

    shown: str

    def signatures(self) -> dict[str, Any]: ...

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

    def signatures(self) -> dict[str, Any]:
        found = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_bundle_name(entry.name) and entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    found[entry.name] = (info.st_size, info.st_mtime_ns)
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

    def signatures(self) -> dict[str, Any]:
        with storage_errors(self.credentials):
            try:
                entries = self.fs.ls(self.prefix, detail=True, refresh=True)
            except FileNotFoundError:
                return {}
        return {os.path.basename(e["name"].rstrip("/")): (e.get("size"), str(e.get("etag")))
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
    """Submit one bundle of the inbox and move it; None when it is gone or was left where it is (logged)."""
    try:
        with lake_lock(lake, LOCK_NAME, f"watch {inbox.shown}"):
            if not inbox.exists(name):  # another watcher took it
                return None
            with inbox.fetch(name) as local:
                submission = submit_bundle(lake, local, limits=limits, name=name)
            moved = inbox.move(name, OUTCOME_FOLDERS[submission.status])
    except OEAError as exc:
        log.error("bundle %s left in %s for the next poll: %s", name, inbox.shown, exc)
        return None
    except Exception as exc:  # a watcher outlives one bundle's unexpected failure; logged, retried
        log.error("bundle %s left in %s for the next poll: unexpected %s: %s", name, inbox.shown,
                  type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return None
    log.info("%s; moved to %s", submission.line(), moved)
    return submission


def watch_inbox(lake: LakePaths, inbox: Inbox, *, limits: SubmissionLimits, interval: float = DEFAULT_INTERVAL,
          once: bool = False, stop: threading.Event | None = None) -> WatchSummary:
    """Poll ``inbox`` every ``interval`` seconds and process each bundle that stopped changing, until ``stop`` is
    set (or Ctrl-C); ``once``: two looks (``min(interval, 1)`` s apart), process what is ready, return."""
    stop = stop or threading.Event()
    summary = WatchSummary()
    log.info("watching %s for bundles (%s) every %.1f s%s", inbox.shown, ", ".join(SUFFIXES), interval,
             "" if once else "; Ctrl-C stops")
    seen: dict[str, Any] = {}
    first = True
    try:
        while True:
            current = inbox.signatures()
            ready = sorted(name for name, signature in current.items() if seen.get(name) == signature)
            for name in ready:
                if stop.is_set():
                    break
                result = process_one(lake, inbox, name, limits)
                if result is not None:
                    summary.submissions.append(result)
                    current.pop(name)
                elif once and inbox.exists(name):
                    summary.left.append(name)
            seen = current
            if once and not first:
                summary.left += sorted(set(current) - set(ready))
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

