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

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import KeyVaultError, SftpError
from ..extras import require
from ..lake.lock import LANDING, source_run
from ..lake.paths import check_name
from ..privacy import keyvault
from ..privacy.redaction import redact, remember_secret
from .landing import MANIFEST, LandResult, list_batches, new_batch_id, sha256_file

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..lake.paths import LakePaths

log = logging.getLogger("oea")
PASSWORD_SETTING = "OEA_SFTP_PASSWORD"
KEY_FILE_SETTING = "OEA_SFTP_KEY_FILE"
KNOWN_HOSTS_SETTING = "OEA_SFTP_KNOWN_HOSTS"
LEDGER = "_sftp"  # stage1np/<source>/_sftp/<batch>/_manifest.json: files downloaded but not landed
_URL = re.compile(r"^sftp://(?P<user>[^@/:]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\[\]]+)"
                  r"(?::(?P<port>[0-9]{1,5}))?(?P<path>/.*)$")
# user:password@ - up to the URL's last "@", so a password holding "/" or "@" is never shown either
_PASSWORD = re.compile(r"^sftp://(?P<user>[^@/:]*):(?P<password>.*)@(?P<rest>[^@]*)$", re.DOTALL)
_PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class SftpSource:
    """A folder on an SFTP server, from ``sftp://USER@HOST[:PORT]/PATH``."""

    user: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> SftpSource:
        """Split an ``sftp://`` URL; SftpError naming the URL (a password in it is refused, not shown)."""
        with_password = _PASSWORD.match(url)
        if with_password:
            remember_secret(with_password.group("password"))
            shown = f"sftp://{with_password.group('user')}:***@{with_password.group('rest')}"
            raise SftpError(f"{shown} holds a password: give the URL without it and set {PASSWORD_SETTING} "
                            f"(or {KEY_FILE_SETTING}) instead", url=shown)
        match = _URL.match(url)
        port = int(match.group("port") or 22) if match else 0
        if not match or not 0 < port < 65536:
            raise SftpError(f"{url!r} is not an SFTP folder URL: use sftp://USER@HOST[:PORT]/PATH, for example "
                            "sftp://clever@sftp.example.org/reports", url=url)
        return cls(match.group("user"), match.group("host").strip("[]"), port, match.group("path"))

    @property
    def url(self) -> str:
        """The URL as shown in messages (it never holds a secret)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sftp://{self.user}@{host}{'' if self.port == 22 else f':{self.port}'}{self.path}"

    @property
    def origin(self) -> str:
        """The folder's identity in the lake's records: the URL without the user (another account, same files)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sftp://{host}:{self.port}{self.path}"

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this server: ``host``, or ``[host]:port`` for another port than 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often a dropped connection is retried: ``attempts`` in all per step (a listing, a file), waiting
    ``backoff`` seconds after the first failure, doubling up to ``max_backoff``; ``sleep`` is injectable."""

    attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 60.0
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failures: int) -> float:
        return float(min(self.backoff * 2 ** (failures - 1), self.max_backoff))


@dataclass(frozen=True)
class RemoteFile:
    """A regular file of the remote folder: its path under the folder (``/``-separated), size and mtime."""

    relative: str
    size: int
    mtime: int


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


# credentials and host keys ------------------------------------------------------------------------
def _credentials(source: SftpSource, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    key_file, password = environ.get(KEY_FILE_SETTING) or None, environ.get(PASSWORD_SETTING) or None
    if not key_file and not password and environ.get(keyvault.VAULT_URL_ENV):
        try:  # the password as the Synapse templates read it: Key Vault secret oeaSftpPassword
            password = keyvault.read_secret(environ[keyvault.VAULT_URL_ENV], keyvault.SFTP_PASSWORD)
        except KeyVaultError as exc:
            raise SftpError(f"no credential for {source.url}: {PASSWORD_SETTING} and {KEY_FILE_SETTING} are not set, "
                            f"and {exc}", url=source.url) from exc
    remember_secret(password)
    if not key_file and not password:
        raise SftpError(f"no credential for {source.url}: set {PASSWORD_SETTING} (the account's password) or "
                        f"{KEY_FILE_SETTING} (a private key file the server accepts), or put the password in Key "
                        f"Vault secret {keyvault.SFTP_PASSWORD} ({keyvault.VAULT_URL_ENV})", url=source.url)
    if key_file and not os.path.isfile(os.path.expanduser(key_file)):
        raise SftpError(f"{KEY_FILE_SETTING} names {key_file!r}, which is not a file: give the private key file "
                        f"for {source.url}", url=source.url)
    return (os.path.expanduser(key_file) if key_file else None), (None if key_file else password)


def fingerprint(key: Any) -> str:
    """A host key's fingerprint as OpenSSH shows it: ``SHA256:<base64 without padding>``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode("ascii").rstrip("=")


def _known_host_keys(known_hosts: str, source: SftpSource, paramiko: Any) -> dict[str, Any]:
    """``key type -> key`` that known_hosts holds for the server (empty when it names none)."""
    hosts = paramiko.HostKeys()
    if os.path.isfile(known_hosts):
        hosts.load(known_hosts)
    return dict(hosts.lookup(source.known_hosts_name) or {})


def _check_host_key(source: SftpSource, key: Any, known: Mapping[str, Any], known_hosts: str) -> None:
    if known.get(key.get_name()) == key:
        return
    what = "has changed" if known else "is not known"
    scan = f"ssh-keyscan {'' if source.port == 22 else f'-p {source.port} '}{source.host}"
    raise SftpError(f"the host key of {source.host}:{source.port} ({key.get_name()} {fingerprint(key)}) {what} "
                    f"in {known_hosts}, so {source.url} was not contacted further: check the fingerprint with the "
                    f"server's owner, then add it ({scan} >> {known_hosts}; set {KNOWN_HOSTS_SETTING} for another "
                    "file)", url=source.url)


def _load_key(source: SftpSource, key_file: str, paramiko: Any) -> Any:
    try:
        return paramiko.PKey.from_path(key_file)
    except paramiko.PasswordRequiredException as exc:
        raise SftpError(f"the key file {key_file} ({KEY_FILE_SETTING}) is encrypted: give an unencrypted key for "
                        f"{source.url}", url=source.url) from exc
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise SftpError(f"the key file {key_file} ({KEY_FILE_SETTING}) cannot be read as a private key ({exc}): "
                        f"give the OpenSSH private key for {source.url}", url=source.url) from exc


# one connection, retried ------------------------------------------------------------------------
class _Session:
    """An SFTP session that reconnects: ``call(what, fn)`` runs ``fn(sftp)``, retrying dropped connections."""

    def __init__(self, source: SftpSource, environ: Mapping[str, str], retry: RetryPolicy) -> None:
        self.paramiko = require("paramiko")
        self.source, self.retry = source, retry
        self.key_file, self.password = _credentials(source, environ)
        self.password_from = (PASSWORD_SETTING if environ.get(PASSWORD_SETTING)
                              else f"Key Vault secret {keyvault.SFTP_PASSWORD}")
        self.key = _load_key(source, self.key_file, self.paramiko) if self.key_file else None
        self.known_hosts = os.path.expanduser(environ.get(KNOWN_HOSTS_SETTING) or "~/.ssh/known_hosts")
        self.transport: Any = None
        self.sftp: Any = None
        self.connections = 0
        self.retries = 0

    def _connect(self) -> Any:
        if self.sftp is not None:
            return self.sftp
        paramiko = self.paramiko
        self.connections += 1
        sock = socket.create_connection((self.source.host, self.source.port), timeout=self.retry.timeout)
        self.transport = paramiko.Transport(sock)
        known = _known_host_keys(self.known_hosts, self.source, paramiko)
        options = self.transport.get_security_options()  # ask for a key type known_hosts holds, as ssh does
        options.key_types = [t for t in options.key_types if t in known] + [
            t for t in options.key_types if t not in known]
        self.transport.start_client(timeout=self.retry.timeout)
        _check_host_key(self.source, self.transport.get_remote_server_key(), known, self.known_hosts)
        try:
            if self.key is not None:
                self.transport.auth_publickey(self.source.user, self.key)
            else:
                self.transport.auth_password(self.source.user, self.password)
        except paramiko.AuthenticationException as exc:
            how = f"the key file in {KEY_FILE_SETTING}" if self.key_file else f"the password in {self.password_from}"
            raise SftpError(f"{self.source.url} refused {how} for user {self.source.user}: check it "
                            "with the server's owner", url=self.source.url, attempt=self.connections) from exc
        self.sftp = paramiko.SFTPClient.from_transport(self.transport)
        self.sftp.get_channel().settimeout(self.retry.timeout)  # a server that stops answering is a drop too
        return self.sftp

    def close(self) -> None:
        for closing in (self.sftp, self.transport):
            with contextlib.suppress(Exception):  # a dropped connection cannot close cleanly; it is gone
                if closing is not None:
                    closing.close()
        self.sftp = self.transport = None

    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        retryable = (OSError, EOFError, self.paramiko.SSHException)
        failures = 0
        while True:
            try:
                return fn(self._connect())
            except SftpError:
                self.close()
                raise
            except (FileNotFoundError, PermissionError) as exc:
                self.close()
                raise SftpError(f"{self.source.url}: {what} failed: {exc.strerror or exc} on the server; nothing "
                                "was landed. Check the folder's files and permissions with the server's owner",
                                url=self.source.url, attempt=self.connections) from exc
            except retryable as exc:
                self.close()
                failures += 1
                reason = redact(f"{type(exc).__name__}: {exc}")
                if failures >= self.retry.attempts:
                    raise SftpError(f"{self.source.url}: the connection failed {failures} times while {what} "
                                    f"({reason}); nothing was landed, and the next run resumes the download. Check "
                                    "the network and the server", url=self.source.url,
                                    attempt=self.connections) from exc
                delay = self.retry.delay(failures)
                self.retries += 1
                log.warning("%s: connection lost while %s (%s); retrying in %.1f s (attempt %d of %d)",
                            self.source.url, what, reason, delay, failures + 1, self.retry.attempts)
                self.retry.sleep(delay)


# listing and downloading ------------------------------------------------------------------------
def _list(sftp: Any, source: SftpSource) -> tuple[list[RemoteFile], list[str]]:
    try:
        if not stat.S_ISDIR(sftp.stat(source.path).st_mode or 0):
            raise SftpError(f"{source.url} is not a folder: give the folder the reports arrive in", url=source.url)
    except FileNotFoundError as exc:
        raise SftpError(f"{source.url}: the folder {source.path} does not exist on the server: check the path "
                        "(it is absolute, from the server's root)", url=source.url) from exc
    files: list[RemoteFile] = []
    left_out: list[str] = []
    folders = [""]
    while folders:
        folder = folders.pop()
        for entry in sorted(sftp.listdir_attr(source.path.rstrip("/") + "/" + folder), key=lambda e: e.filename):
            relative = f"{folder}{entry.filename}"
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                folders.append(relative + "/")
            elif stat.S_ISREG(mode):
                files.append(RemoteFile(relative, int(entry.st_size or 0), int(entry.st_mtime or 0)))
            else:
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                left_out.append(f"{relative}: {kind}")
    return sorted(files, key=lambda f: f.relative), left_out


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
    session = _Session(source, env, retry or RetryPolicy())
    lake, name = module.lake, module.source
    try:
        with source_run(lake, name, f"{name} land {source.url}", stages=LANDING):
            return _land(module, source, session, batch_id)
    finally:
        session.close()


def _land(module: LandingModule, source: SftpSource, session: _Session, batch_id: str | None) -> SftpLandResult:
    lake, name = module.lake, module.source
    downloads = _Downloads(lake, name, source)
    known = landed_remote_files(lake, name, source.origin)
    listing, left_out = session.call("listing the folder", lambda sftp: _list(sftp, source))
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


__all__ = ["RetryPolicy", "SftpLandResult", "SftpSource", "fingerprint", "is_sftp_url", "land_sftp",
           "landed_remote_files"]
