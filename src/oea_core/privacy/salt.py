"""The pseudonymization salt: required, long enough, the same for the whole life of a lake, never printed.

Looked up in order: ``OEA_SALT``; Azure Key Vault secret ``oeaSalt`` when ``OEA_KEYVAULT_URL``
is set; the lake's secret file (``<lake>/.oea/salt``), created on first use with mode 0600, but
only in a lake that has neither a salt fingerprint nor stage 2 data.

A salt shorter than 16 characters is refused unless ``OEA_ALLOW_SHORT_SALT=1``. On first use the
lake records a fingerprint of its salt (PBKDF2-HMAC-SHA256 with a random nonce, never the salt);
every later :func:`get_salt` checks it, so a run under another salt fails before writing anything.
"""

from __future__ import annotations

import base64
import datetime
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, TypedDict

from ..errors import KeyVaultError, SaltError
from ..lake.diskspace import disk_full_message, is_disk_full
from ..lake.paths import FINGERPRINT_FILE, STAGES, LakePaths
from . import keyvault
from .redaction import remember_salt

if TYPE_CHECKING:
    from collections.abc import Mapping

KEYVAULT_SECRET_NAME = keyvault.SALT
MIN_SALT_LENGTH = 16
ALLOW_SHORT_ENV = "OEA_ALLOW_SHORT_SALT"
_ALGORITHM, _VERSION, _ITERATIONS = "pbkdf2-hmac-sha256", 1, 200_000
_LABEL = b"oea-core salt fingerprint v1:"
_MAKE_ONE = ('python -c "import secrets,base64;'
             'print(base64.b64encode(secrets.token_bytes(16)).decode())"')
log = logging.getLogger("oea")


class _FingerprintCheck(TypedDict):
    """What a salt fingerprint file must hold to check a salt against it."""

    algorithm: str
    version: int
    iterations: int
    nonce: str  # hex
    fingerprint: str  # hex


class _Fingerprint(_FingerprintCheck, total=False):
    """A salt fingerprint file: the check, and where it came from (for error messages only)."""

    recorded_at: str
    recorded_from: str
    host: str
    pid: int


class Salt:
    """Holds the salt; its repr and str never show the value. Length rules apply in :func:`get_salt`."""

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise SaltError(f"the salt from {origin} is empty: set a non-empty salt there")
        self._value = value
        self.origin = origin
        remember_salt(value)

    def reveal(self) -> str:
        """The salt's text, for hashing only."""
        return self._value

    def __repr__(self) -> str:
        return f"Salt(origin={self.origin!r}, value=<hidden>)"

    __str__ = __repr__


def _how_to_supply(lake: LakePaths) -> str:
    file_part = f", or the lake's salt file {lake.secret_file} (used when neither is set)" if lake.is_local else ""
    return (f"supply the lake's salt through OEA_SALT, or Azure Key Vault secret {KEYVAULT_SECRET_NAME!r} "
            f"(set OEA_KEYVAULT_URL){file_part}")


_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV, errno.EMLINK})


def _write_new(path: str, text: str, mode: int) -> None:
    """Create ``path`` (it must not exist) holding ``text``, on disk; removed again when a write fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _remove(path)
        raise


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _publish(path: str, text: str, mode: int, what: str, folder_mode: int = 0o777) -> bool:
    """Create ``path`` holding ``text``, complete or not at all; False if it already exists (a race lost).

    Raises SaltError naming ``what`` and ``path`` when it cannot be written (a full disk: one line
    saying to free space); nothing is left behind then.
    """
    folder = os.path.dirname(path)
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.makedirs(folder, mode=folder_mode, exist_ok=True)
        _write_new(temp, text, mode)
        try:
            os.link(temp, path)  # like an O_EXCL create, but readers never see a half-written file
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            try:
                _write_new(path, text, mode)  # a file system without hard links: a plain O_EXCL create
            except FileExistsError:
                return False
        return True
    except OSError as exc:
        if is_disk_full(exc):
            raise SaltError(disk_full_message(what, path) + "; nothing was written") from None
        raise SaltError(f"cannot write {what} {path}: {exc.strerror or exc}; check that the lake folder is "
                        "writable, then rerun") from None
    finally:
        _remove(temp)


def _has_stage2_data(lake: LakePaths) -> bool:
    for stage in (s for s in STAGES if s.startswith("stage2")):
        for _, _, files in os.walk(lake.stage_root(stage)):
            if files:
                return True
    return False


def _from_file(lake: LakePaths) -> str:
    path = lake.secret_file
    if not os.path.exists(path):
        fingerprint = lake.state_path(FINGERPRINT_FILE)
        held = (f"records a salt fingerprint in {fingerprint}" if os.path.exists(fingerprint)
                else "already holds stage 2 data" if _has_stage2_data(lake) else None)
        if held:
            raise SaltError(
                f"salt file {path} is missing, but lake {lake.shown} {held}: a new salt would give every "
                f"identity a second pseudonym, so none was made and nothing was written; {_how_to_supply(lake)}")
        value = base64.b64encode(secrets.token_bytes(16)).decode("ascii")  # OEA's setup: 16 random bytes
        _publish(path, value + "\n", 0o600, "the salt file", 0o700)  # lost a race: read the winner's salt below
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise SaltError(f"salt file {path} is readable by others (mode {mode:o}): run chmod 600 {path}")
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def _short_salt_allowed(env: Mapping[str, str]) -> bool:
    value = env.get(ALLOW_SHORT_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise SaltError(f"{ALLOW_SHORT_ENV}={env[ALLOW_SHORT_ENV]!r} is not understood: set it to 1 or unset it")


def _check_length(salt: Salt, env: Mapping[str, str]) -> None:
    length = len(salt.reveal())
    if length >= MIN_SALT_LENGTH:
        return
    if not _short_salt_allowed(env):
        raise SaltError(
            f"the salt from {salt.origin} has {length} characters; at least {MIN_SALT_LENGTH} are needed, because "
            f"short identifiers hashed with a short salt can be brute-forced. Make one with {_MAKE_ONE} "
            f"(a new lake only: a new salt gives new pseudonyms), or keep an existing OEA salt by setting "
            f"{ALLOW_SHORT_ENV}=1")
    log.warning("using a %d-character salt from %s because %s is set", length, salt.origin, ALLOW_SHORT_ENV)


def _digest(salt: Salt, nonce: bytes, iterations: int) -> str:
    return hashlib.pbkdf2_hmac("sha256", salt.reveal().encode("utf-8"), _LABEL + nonce, iterations).hex()


def _read_fingerprint(path: str) -> _Fingerprint:
    damaged = (f"salt fingerprint file {path} is damaged or was written by a newer oea_core: restore it, or "
               "upgrade oea_core; delete it only if you are sure which salt made this lake's pseudonyms")
    try:
        with open(path, encoding="utf-8") as handle:
            record: _Fingerprint = json.load(handle)
        ok = (record["algorithm"] == _ALGORITHM and record["version"] == _VERSION
              and isinstance(record["iterations"], int) and 1_000 <= record["iterations"] <= 10_000_000
              and len(bytes.fromhex(record["nonce"])) >= 16 and len(bytes.fromhex(record["fingerprint"])) == 32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SaltError(damaged) from exc
    if not ok:
        raise SaltError(damaged)
    return record


def check_salt_fingerprint(lake: LakePaths, salt: Salt) -> None:
    """Check ``salt`` against the fingerprint ``lake`` recorded; record it if there is none yet.

    Raises SaltError, having written nothing, when the lake was pseudonymized with another salt.
    """
    if lake.root is None:
        # Synapse (a cloud lake without a working copy): the fingerprint is not read there (Key Vault's
        # oeaSalt is the one source of truth); through a working copy it is, pulled with each run.
        return
    path = lake.state_path(FINGERPRINT_FILE)
    if not os.path.exists(path):
        if _has_stage2_data(lake):
            log.warning("lake %s has stage 2 data but no salt fingerprint: recording the salt from %s as the "
                        "lake's salt", lake.shown, salt.origin)
        nonce = secrets.token_bytes(16)
        record: _Fingerprint = {
            "algorithm": _ALGORITHM, "version": _VERSION, "iterations": _ITERATIONS, "nonce": nonce.hex(),
            "fingerprint": _digest(salt, nonce, _ITERATIONS),
            "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "recorded_from": salt.origin, "host": socket.gethostname(), "pid": os.getpid()}
        if _publish(path, json.dumps(record, indent=1) + "\n", 0o644, "the salt fingerprint"):
            return
    record = _read_fingerprint(path)  # recorded before, or by a run that won the race
    if not hmac.compare_digest(_digest(salt, bytes.fromhex(record["nonce"]), record["iterations"]),
                               record["fingerprint"]):
        raise SaltError(
            f"the salt from {salt.origin} is not the salt of lake {lake.shown}, whose pseudonyms were made with "
            f"the salt first recorded {record.get('recorded_at', '?')} from {record.get('recorded_from', '?')} "
            f"(fingerprint in {path}); nothing was written: {_how_to_supply(lake)}")


def get_salt(lake: LakePaths, environ: Mapping[str, str] | None = None) -> Salt:
    """Return the salt for ``lake``, checked against (or recorded as) its fingerprint.

    Raises SaltError when none can be had, it is empty or too short, or it is not the lake's salt.
    """
    env = os.environ if environ is None else environ
    try:
        found = keyvault.secret(keyvault.SALT, environ=env)
    except KeyVaultError as exc:
        raise SaltError(str(exc)) from exc
    if found is not None:
        salt = Salt(found.value, found.origin)
    elif not lake.is_local:
        raise SaltError(f"no salt for an ADLS lake: set {keyvault.SALT_ENV} or {keyvault.VAULT_URL_ENV} "
                        f"(secret {keyvault.SALT!r})")
    else:
        salt = Salt(_from_file(lake), f"salt file {lake.secret_file}")
    _check_length(salt, env)
    check_salt_fingerprint(lake, salt)
    return salt
