"""Landing from an SFTP server: ``oea land clever sftp://USER@HOST[:PORT]/PATH``.

Guarantees:

- **Credentials come from the environment only**: ``OEA_SFTP_PASSWORD`` or ``OEA_SFTP_KEY_FILE`` (a private
  key file; it wins when both are set). A password in the URL is refused. The password is remembered as a
  secret (:func:`oea_core.privacy.salt.remember_secret`), so no message or log of oea_core shows it.
- **The server is who known_hosts says**: its host key is checked against ``OEA_SFTP_KNOWN_HOSTS`` (default
  ``~/.ssh/known_hosts``; ``[host]:port`` entries for other ports). An unknown or changed key is refused,
  never added; the error shows the key's ``SHA256:`` fingerprint to check and add.
- **Incremental**: the remote folder is listed recursively (regular files; links and special files are left
  out with a warning). A file whose ``(path, size, mtime)`` was recorded when it was landed is not
  downloaded. Any other file is downloaded and handed to the module's ``land``, which lands it only when its
  SHA-256 is new (``landed_hashes``).
- **Nothing half-landed**: downloads go to ``<lake working copy>/.oea/sftp/<source>/<key>/files`` as
  ``<name>.part`` and are renamed when complete; only complete downloads are landed, through the module's
  ``land`` (its classify and naming rules, its atomic batch rename). The download folder is emptied after a
  successful land.
- **Resume and retry**: a dropped connection (socket error, EOF, SSH error) is retried with exponential
  backoff (:class:`RetryPolicy`), reconnecting and resuming the ``.part`` from its size. A ``.part`` left by
  an earlier run is resumed too, unless the remote file's size or mtime changed since it was started.

Where the record of what was downloaded lives: in the lake, beside what it describes, so it is committed
in the same step and travels with a cloud lake (whose working copy pulls and pushes ``stage1np`` whole
batches, a batch counting once its ``_manifest.json`` exists). A landed file's remote facts (``origin``,
``path``, ``size``, ``mtime``) are a ``"remote"`` field of its entry in the batch's ``_manifest.json``:
written in the batch's own atomic rename, so a batch and its record can never disagree. Files downloaded but
not landed (the same bytes were landed before, or not a file of the source) have no batch; their facts go in
a ledger batch ``stage1np/<source>/_sftp/<batch id>/_manifest.json`` (``"files": []``, so ``landed_hashes``
and ingestion ignore it, and ``"skipped": [...]``), written once by rename, never rewritten, so two
machines never overwrite each other's records. The download folder's resume state is local to the working
copy, as partial downloads are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SftpError
from ..lake.lock import LANDING, source_run
from ..lake.paths import check_name
from .landing import MANIFEST, LandResult, list_batches, new_batch_id, sha256_file
from .sftp_connection import (
    KEY_FILE_SETTING,
    KNOWN_HOSTS_SETTING,
    PASSWORD_SETTING,
    RemoteFile,
    RetryPolicy,
    Session,
    SftpSource,
    fingerprint,
    list_folder,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..lake.paths import LakePaths

log = logging.getLogger("oea")
LEDGER = "_sftp"  # stage1np/<source>/_sftp/<batch>/_manifest.json: files downloaded but not landed
_PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class SftpLandResult:
    """What one ``land_sftp`` did: the module's land (None when nothing was downloaded) and the downloads."""

    url: str
    land: LandResult | None
    downloaded: tuple[str, ...] = ()
    downloaded_bytes: int = 0
    unchanged: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    connections: int = 0
    retries: int = 0

    def summary(self) -> str:
        """The module's land summary, then what was downloaded and what was not."""
        head = self.land.summary() if self.land else f"nothing new on {self.url}"
        return (f"{head}; downloaded {len(self.downloaded)} files ({self.downloaded_bytes} bytes), "
                f"{len(self.unchanged)} unchanged since landed (not downloaded), "
                f"{len(self.skipped)} downloaded but skipped (landed before or not a report)"
                + (f", {len(self.left_out)} links or special files left out" if self.left_out else ""))


class LandingModule(Protocol):
    """What ``land_sftp`` needs of a source module (``CleverModule``)."""

    lake: LakePaths
    source: str

    def land(self, src: str | os.PathLike[str] | None = None, *, batch_id: str | None = None,
             file_facts: Mapping[str, Mapping[str, Any]] | None = None) -> LandResult: ...


# downloading ------------------------------------------------------------------------------------
class _Downloads:
    """The download folder of one SFTP folder in the lake's working copy, and its resume state."""

    def __init__(self, lake: LakePaths, source_name: str, source: SftpSource) -> None:
        if lake.root is None:
            raise SftpError("landing from SFTP needs a lake folder or a cloud lake's working copy "
                            "(--lake abfss://...)", url=source.url)
        key = hashlib.sha256(source.origin.encode("utf-8")).hexdigest()[:16]
        self.root = os.path.join(lake.root, ".oea", "sftp", check_name(source_name, "source"), key)
        self.files = os.path.join(self.root, "files")
        self.state_file = os.path.join(self.root, "downloads.json")
        try:
            with open(self.state_file, encoding="utf-8") as handle:
                self.state: dict[str, list[int]] = json.load(handle)
        except (FileNotFoundError, ValueError):
            self.state = {}

    def local(self, relative: str) -> str:
        return os.path.join(self.files, *relative.split("/"))

    def save(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        with open(self.state_file + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(self.state, handle)
        os.replace(self.state_file + ".tmp", self.state_file)

    def keep_only(self, wanted: dict[str, RemoteFile]) -> None:
        """Remove what an earlier run left that is no longer wanted, or whose remote file changed since."""
        for relative, facts in list(self.state.items()):
            remote = wanted.get(relative)
            if remote is None or facts != [remote.size, remote.mtime]:
                del self.state[relative]
        for parent, _dirs, names in os.walk(self.files):
            for name in names:
                path = os.path.join(parent, name)
                relative = os.path.relpath(path, self.files).replace(os.sep, "/").removesuffix(".part")
                if relative not in self.state:
                    os.remove(path)
        self.save()

    def complete(self, remote: RemoteFile) -> bool:
        path = self.local(remote.relative)
        return (self.state.get(remote.relative) == [remote.size, remote.mtime] and os.path.isfile(path)
                and os.path.getsize(path) == remote.size)

    def fetch(self, sftp: Any, source: SftpSource, remote: RemoteFile, progress: list[int]) -> None:
        """Download one file into ``<name>.part`` from where an earlier attempt stopped, then rename it."""
        target = self.local(remote.relative)
        part = target + ".part"
        os.makedirs(os.path.dirname(part), exist_ok=True)
        if self.state.get(remote.relative) != [remote.size, remote.mtime]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(part)
            self.state[remote.relative] = [remote.size, remote.mtime]
            self.save()
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        if offset > remote.size:
            os.remove(part)
            offset = 0
        if offset:
            log.info("%s: resuming %s at byte %d of %d", source.url, remote.relative, offset, remote.size)
        last = time.monotonic()
        with sftp.open(source.path.rstrip("/") + "/" + remote.relative, "rb") as handle, open(part, "ab") as out:
            handle.seek(offset)
            handle.prefetch(remote.size)
            while offset < remote.size:
                block = handle.read(min(1 << 18, remote.size - offset))
                if not block:
                    raise EOFError(f"{remote.relative} ended at byte {offset} of {remote.size}")
                out.write(block)
                out.flush()
                offset += len(block)
                progress[0] += len(block)
                if time.monotonic() - last > _PROGRESS_SECONDS:
                    last = time.monotonic()
                    log.info("%s: %s: %d of %d bytes", source.url, remote.relative, offset, remote.size)
        os.replace(part, target)


# the record of what was landed --------------------------------------------------------------------
def landed_remote_files(lake: LakePaths, source_name: str, origin: str) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime)`` of the files of ``origin`` recorded in ``stage1np/<source>``'s manifests
    (landed ones, and the ledger's downloaded-but-skipped ones)."""
    root = lake.path("stage1np", source_name)
    known: dict[str, tuple[int, int]] = {}
    if not os.path.isdir(root):
        return known
    for table in sorted(os.listdir(root)):
        for batch in list_batches(lake, source_name, table):
            manifest = os.path.join(root, table, batch, MANIFEST)
            if not os.path.exists(manifest):
                continue
            with open(manifest, encoding="utf-8") as handle:
                content = json.load(handle)
            for entry in content.get("files", []) + content.get("skipped", []):
                remote = entry.get("remote")
                if remote and remote.get("origin") == origin:
                    known[remote["path"]] = (int(remote["size"]), int(remote["mtime"]))
    return known


def _write_ledger(lake: LakePaths, source_name: str, entries: list[dict[str, Any]]) -> None:
    batch_id = new_batch_id()
    folder = lake.path("stage1np", source_name, LEDGER, batch_id)
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{MANIFEST}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"batch_id": batch_id, "source": source_name, "table": LEDGER, "files": [], "skipped": entries},
                  handle, indent=1)
    os.replace(temp, os.path.join(folder, MANIFEST))


# landing ------------------------------------------------------------------------------------------
def land_sftp(module: LandingModule, url: str, *, batch_id: str | None = None, retry: RetryPolicy | None = None,
              environ: Mapping[str, str] | None = None) -> SftpLandResult:
    """Download the new and changed files of an SFTP folder and land them with ``module.land`` (see the module
    docstring). Raises SftpError (a LandingError) for a bad URL, no credential, an unknown or changed host key,
    a refused login, a missing folder, or a connection that failed ``retry.attempts`` times in a row."""
    source = SftpSource.parse(url)
    env = os.environ if environ is None else environ
    session = Session(source, env, retry or RetryPolicy())
    lake, name = module.lake, module.source
    try:
        with source_run(lake, name, f"{name} land {source.url}", stages=LANDING):
            return _land(module, source, session, batch_id)
    finally:
        session.close()


def _land(module: LandingModule, source: SftpSource, session: Session, batch_id: str | None) -> SftpLandResult:
    lake, name = module.lake, module.source
    downloads = _Downloads(lake, name, source)
    known = landed_remote_files(lake, name, source.origin)
    listing, left_out = session.call("listing the folder", lambda sftp: list_folder(sftp, source))
    for reason in left_out:
        log.warning("%s: %s; left out (only regular files are landed)", source.url, reason)
    wanted = {f.relative: f for f in listing if known.get(f.relative) != (f.size, f.mtime)}
    unchanged = tuple(f.relative for f in listing if f.relative not in wanted)
    downloads.keep_only(wanted)
    progress = [0]
    for number, remote in enumerate(wanted.values(), 1):
        if downloads.complete(remote):
            continue
        session.call(f"downloading {remote.relative}", _fetcher(downloads, source, remote, progress))
        log.info("%s: downloaded %s (%d bytes; file %d of %d, %d bytes in all)", source.url, remote.relative,
                 remote.size, number, len(wanted), progress[0])
    facts = {relative: {"origin": source.origin, "path": relative, "size": remote.size, "mtime": remote.mtime}
             for relative, remote in wanted.items()}
    result = None
    if any(relative.lower().endswith(".csv") for relative in wanted):
        result = module.land(downloads.files, batch_id=batch_id, file_facts=facts)
    landed = {os.path.relpath(f.source_path, downloads.files).replace(os.sep, "/")
              for f in (result.landed if result else ())}
    skipped = [relative for relative in wanted if relative not in landed]
    if skipped:
        _write_ledger(lake, name, [{"remote": facts[r], "sha256": sha256_file(downloads.local(r))} for r in skipped])
    shutil.rmtree(downloads.root, ignore_errors=True)
    return SftpLandResult(source.url, result, tuple(wanted), progress[0], unchanged, tuple(skipped),
                          tuple(left_out), session.connections, session.retries)


def _fetcher(downloads: _Downloads, source: SftpSource, remote: RemoteFile,
             progress: list[int]) -> Callable[[Any], None]:
    return lambda sftp: downloads.fetch(sftp, source, remote, progress)


def is_sftp_url(value: str | None) -> bool:
    """Whether a land source is an ``sftp://`` URL rather than a folder."""
    return bool(value) and str(value).lower().startswith("sftp://")


# the server side (URL, credentials, host keys, retried session) is .sftp_connection; its names stay here too
__all__ = ["KEY_FILE_SETTING", "KNOWN_HOSTS_SETTING", "LEDGER", "PASSWORD_SETTING", "RemoteFile", "RetryPolicy",
           "SftpLandResult", "SftpSource", "fingerprint", "is_sftp_url", "land_sftp", "landed_remote_files"]
