"""One folder of a cloud lake, in the account and in the working copy, synced: pulled before a run of a source,
pushed after it in commit order (:mod:`oea_core.lake.cloud` tells the steps); what each sync moved; which files of
``stage1np`` are committed batches."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import LakeStorageError, StorageCredentialError
from .paths import FINGERPRINT_FILE, FRAMEWORK_CONTAINER, MANIFEST, STAGES
from .storage import storage_errors

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec import AbstractFileSystem

    from .paths import LakePaths
    from .storage import StorageCredentials

log = logging.getLogger("oea")
_LOG_ENTRY = re.compile(r"(^|/)_delta_log/(\d{20})\.json$")
SYNC_FOLDER = os.path.join(".oea", "sync")
WRITE_ONCE = (MANIFEST, FINGERPRINT_FILE)  # uploaded only when absent: a batch's, a lake's salt's commit marker


@dataclass(frozen=True)
class SyncResult:
    """What one pull or push moved."""

    folder: str
    files: int = 0
    bytes: int = 0
    removed: int = 0


class Account(Protocol):
    """What a synced folder needs of the account behind it (:class:`oea_core.lake.cloud.CloudLake`)."""

    lake: LakePaths
    credentials: StorageCredentials
    fs: AbstractFileSystem

    def ensure_containers(self) -> None: ...


class SyncedFolder:
    """``<container>/<prefix>`` of the account and of the working copy, with the versions last synced."""

    def __init__(self, cloud: Account, container: str, prefix: str, names: tuple[str, ...] = (), *,
                 additive: bool = False) -> None:
        if container not in STAGES and container != FRAMEWORK_CONTAINER:
            raise LakeStorageError(f"unknown container {container!r} in the lake on {cloud.lake.shown}")
        self.cloud, self.container, self.prefix, self.names = cloud, container, prefix, names
        self.additive = additive
        self.remote_root = f"{container}/{prefix}" if prefix else container
        self.local_root = os.path.join(str(cloud.lake.root), container, *prefix.split("/")) if prefix else \
            os.path.join(str(cloud.lake.root), container)
        name = self.remote_root.replace("/", "__") + "".join(f"__{n}" for n in names)
        self.state_file = os.path.join(str(cloud.lake.root), SYNC_FOLDER, f"{name}.json")
        self.half_batches: dict[str, int] = {}  # stage1np files outside committed batches, at the last listing

    def __repr__(self) -> str:
        return f"SyncedFolder({self.remote_root!r})"

    # the account ----------------------------------------------------------------------------
    def remote_files(self) -> dict[str, dict[str, Any]]:
        """``relative path -> {etag, size}`` of what the account holds under the folder (committed batches only)."""
        fs, creds = self.cloud.fs, self.cloud.credentials
        found: dict[str, dict[str, Any]] = {}
        with storage_errors(creds):
            if self.names:  # a few known files: one request each, not a listing of the whole folder
                for name in self.names:
                    with contextlib.suppress(FileNotFoundError):
                        found[self._remote(name)] = fs.info(self._remote(name), refresh=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    found = fs.find(self.remote_root, detail=True)
        files: dict[str, dict[str, Any]] = {}
        for path, info in found.items():
            if info.get("type") != "file":
                continue
            relative = path[len(self.remote_root):].lstrip("/")
            if relative:
                files[relative] = {"etag": str(info.get("etag")), "size": int(info.get("size") or 0)}
        if self.container != "stage1np":
            return files
        committed = committed_batches(files)
        self.half_batches = {r: int(info["size"]) for r, info in files.items() if r not in committed}
        return committed

    def remove_half_batches(self) -> int:
        """Remove from the account the files of batches whose landing stopped before the manifest (found by the
        last listing; call it holding the source's lock, so no landing is under way); returns the bytes freed."""
        if not self.half_batches:
            return 0
        with storage_errors(self.cloud.credentials), contextlib.suppress(FileNotFoundError):
            self.cloud.fs.rm([self._remote(r) for r in sorted(self.half_batches)])
        freed = sum(self.half_batches.values())
        log.info("%s: removed %d files (%s) of a landing cut short before its manifest", self.remote_root,
                 len(self.half_batches), _size(freed))
        self.half_batches = {}
        return freed

    # the working copy ------------------------------------------------------------------------
    def local_files(self) -> dict[str, tuple[int, int]]:
        """``relative path -> (size, mtime_ns)`` of the working copy's files under the folder."""
        found: dict[str, tuple[int, int]] = {}
        for parent, dirs, names in os.walk(self.local_root):
            if self.names:
                dirs[:] = []
                names = [n for n in names if n in self.names]
            for name in names:
                path = os.path.join(parent, name)
                info = os.lstat(path)
                found[os.path.relpath(path, self.local_root).replace(os.sep, "/")] = (info.st_size, info.st_mtime_ns)
        return found

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.state_file, encoding="utf-8") as handle:
                state: dict[str, dict[str, Any]] = json.load(handle)["files"]
                return state
        except (FileNotFoundError, ValueError, KeyError):
            return {}

    def _save(self, files: dict[str, dict[str, Any]]) -> None:
        os.makedirs(os.path.dirname(self.state_file), exist_ok=True)
        temp = f"{self.state_file}.{os.getpid()}.tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"folder": self.remote_root, "files": files}, handle, sort_keys=True)
        os.replace(temp, self.state_file)

    # pull ---------------------------------------------------------------------------------------
    def pull(self) -> SyncResult:
        """Make the working copy's folder what the account holds (see :mod:`oea_core.lake.cloud`)."""
        started = time.monotonic()
        remote = self.remote_files()
        local = self.local_files()
        synced = self._load()
        state: dict[str, dict[str, Any]] = {}
        wanted: list[str] = []
        for relative, info in remote.items():
            known = synced.get(relative)
            have = local.get(relative)
            unchanged_here = bool(known and have and (known.get("size"), known.get("mtime_ns")) == (have[0], have[1]))
            if unchanged_here and known and known.get("etag") == info["etag"]:
                state[relative] = known
            elif self.additive and have and not unchanged_here:
                continue  # changed here since the last sync: this machine's version stays, and is pushed
            else:
                wanted.append(relative)
        if self.additive:
            state.update({r: v for r, v in synced.items() if r not in state and r in local})
        removed = 0
        for relative in [] if self.additive else sorted(set(local) - set(remote)):
            os.remove(os.path.join(self.local_root, relative))
            removed += 1
        if not self.names and not self.additive:
            _remove_empty_dirs(self.local_root)
        if wanted:
            self._download(wanted)
        for relative in wanted:
            size, mtime = _stat(os.path.join(self.local_root, relative))
            state[relative] = {"etag": remote[relative]["etag"], "size": size, "mtime_ns": mtime}
        self._save(state)
        result = SyncResult(self.remote_root, len(wanted), sum(remote[r]["size"] for r in wanted), removed)
        if wanted or removed:
            log.info("%s: pulled %d files (%s) from %s, removed %d stale local files (%.1f s)", self.remote_root,
                     result.files, _size(result.bytes), self.cloud.lake.shown, removed, time.monotonic() - started)
        return result

    def _download(self, relatives: list[str]) -> None:
        temps = []
        for relative in relatives:
            target = os.path.join(self.local_root, *relative.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            temps.append(f"{target}.oea-download")
        with storage_errors(self.cloud.credentials):
            try:
                self.cloud.fs.get([f"{self.remote_root}/{r}" for r in relatives], temps)
            except BaseException:
                for temp in temps:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(temp)
                raise
        for relative, temp in zip(relatives, temps):
            os.replace(temp, os.path.join(self.local_root, *relative.split("/")))

    # push ---------------------------------------------------------------------------------------
    def push(self) -> SyncResult:
        """Upload what the work changed in the working copy, in commit order; remove what it removed."""
        started = time.monotonic()
        synced = self._load()
        local = self.local_files()
        changed = sorted(r for r, (size, mtime) in local.items()
                         if r not in synced or (synced[r].get("size"), synced[r].get("mtime_ns")) != (size, mtime))
        removed = [] if self.additive else sorted(set(synced) - set(local))
        if not changed and not removed:
            return SyncResult(self.remote_root)
        self.cloud.ensure_containers()
        plain, markers, commits, after = _commit_order(changed)
        with storage_errors(self.cloud.credentials), self._upload_errors():
            if plain:
                self.cloud.fs.put([self._local(r) for r in plain], [self._remote(r) for r in plain], overwrite=True)
            for relative in markers + commits:
                self._put_once(relative)
            for relative in after:
                self.cloud.fs.put_file(self._local(relative), self._remote(relative), overwrite=True)
            if removed:
                with contextlib.suppress(FileNotFoundError):
                    self.cloud.fs.rm([self._remote(r) for r in removed])
        remote = self.remote_files()
        state = {r: v for r, v in synced.items() if r in local and r not in changed}
        for relative in changed:
            if relative in remote:
                size, mtime = local[relative]
                state[relative] = {"etag": remote[relative]["etag"], "size": size, "mtime_ns": mtime}
        self._save(state)
        result = SyncResult(self.remote_root, len(changed), sum(local[r][0] for r in changed), len(removed))
        log.info("%s: pushed %d files (%s) to %s, removed %d (%.1f s)", self.remote_root, result.files,
                 _size(result.bytes), self.cloud.lake.shown, result.removed, time.monotonic() - started)
        return result

    @contextlib.contextmanager
    def _upload_errors(self) -> Iterator[None]:
        """A failed upload (a dropped connection, say) as one LakeStorageError line: nothing it did is a commit."""
        try:
            yield
        except (LakeStorageError, StorageCredentialError):
            raise
        except Exception as exc:
            raise LakeStorageError(
                f"uploading {self.remote_root} to {self.cloud.lake.shown} failed ({type(exc).__name__}: {exc}); "
                "files that reached it with no manifest or Delta log entry naming them are no commit, and the "
                "next run of the source removes them: rerun", account=self.cloud.lake.account) from exc

    def _put_once(self, relative: str) -> None:
        try:
            self.cloud.fs.put_file(self._local(relative), self._remote(relative), overwrite=False)
        except FileExistsError:
            what = ("another writer committed this version of the Delta table first"
                    if _LOG_ENTRY.search(relative) else "another run wrote it first")
            raise LakeStorageError(
                f"{self.container}/{self.prefix}/{relative} already exists on {self.cloud.lake.shown}: {what}; "
                "nothing after it was uploaded: rerun, and the run starts from the account's state",
                account=self.cloud.lake.account) from None

    def _local(self, relative: str) -> str:
        return os.path.join(self.local_root, *relative.split("/"))

    def _remote(self, relative: str) -> str:
        return f"{self.remote_root}/{relative}"


def committed_batches(files: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The files of ``stage1np`` that lie in a batch folder holding its ``_manifest.json``."""
    batches = {path[: -len(MANIFEST)] for path in files if path == MANIFEST or path.endswith("/" + MANIFEST)}
    return {path: info for path, info in files.items()
            if any(path.startswith(batch) for batch in _prefixes(path) if batch in batches)}


def _prefixes(path: str) -> Iterator[str]:
    parts = path.split("/")
    for end in range(len(parts)):
        yield "/".join(parts[:end]) + ("/" if end else "")


def _commit_order(changed: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Split changed files into: data, write-once batch manifests, Delta log entries (by version), the rest of
    the logs (checkpoints, ``_last_checkpoint``), which go after the entries they describe."""
    plain, markers, commits, after = [], [], [], []
    for relative in changed:
        if relative.rsplit("/", 1)[-1] in WRITE_ONCE:
            markers.append(relative)
        elif _LOG_ENTRY.search(relative):
            commits.append(relative)
        elif "/_delta_log/" in f"/{relative}":
            after.append(relative)
        else:
            plain.append(relative)
    commits.sort(key=lambda r: (r.rsplit("_delta_log/", 1)[0], r))
    return plain, markers, commits, after


def _remove_empty_dirs(root: str) -> None:
    for parent, _dirs, _files in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if parent != root:
            with contextlib.suppress(OSError):
                os.rmdir(parent)


def _stat(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size, unit = float(count), "B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024:
            break
    return f"{size:.1f} {unit}"
