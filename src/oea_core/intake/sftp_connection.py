"""The SFTP server side of landing from SFTP (:mod:`.sftp`): the folder's URL, the credentials (the environment,
else Key Vault), the host key checked against known_hosts, and a session that reconnects and retries a dropped
connection (:class:`RetryPolicy`)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import socket
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import KeyVaultError, SftpError
from ..extras import require
from ..privacy import keyvault
from ..privacy.redaction import redact, remember_secret

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger("oea")
PASSWORD_SETTING = "OEA_SFTP_PASSWORD"
KEY_FILE_SETTING = "OEA_SFTP_KEY_FILE"
KNOWN_HOSTS_SETTING = "OEA_SFTP_KNOWN_HOSTS"
_URL = re.compile(r"^sftp://(?P<user>[^@/:]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\[\]]+)"
                  r"(?::(?P<port>[0-9]{1,5}))?(?P<path>/.*)$")
# user:password@ - up to the URL's last "@", so a password holding "/" or "@" is never shown either
_PASSWORD = re.compile(r"^sftp://(?P<user>[^@/:]*):(?P<password>.*)@(?P<rest>[^@]*)$", re.DOTALL)


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
class Session:
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


# listing the folder -----------------------------------------------------------------------------
def list_folder(sftp: Any, source: SftpSource) -> tuple[list[RemoteFile], list[str]]:
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

