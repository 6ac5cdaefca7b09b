"""The pseudonymization salt: required, never empty, never printed.

Looked up in order: ``OEA_SALT``; Azure Key Vault secret ``oeaSalt`` when ``OEA_KEYVAULT_URL``
is set; the lake's secret file (``<lake>/.oea/salt``), created on first use with mode 0600.
"""

from __future__ import annotations

import base64
import os
import secrets

from .errors import SaltError
from .paths import LakePaths

KEYVAULT_SECRET_NAME = "oeaSalt"
_SEEN: set[str] = set()  # salts created in this process, so error text can be scrubbed of them


class Salt:
    """Holds the salt; its repr and str never show the value."""

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise SaltError(f"the salt from {origin} is empty: set a non-empty salt there")
        self._value = value
        self.origin = origin
        _SEEN.add(value)

    def reveal(self) -> str:
        """The salt's text, for hashing only."""
        return self._value

    def __repr__(self) -> str:
        return f"Salt(origin={self.origin!r}, value=<hidden>)"

    __str__ = __repr__


_SECRETS: set[str] = set()


def remember_secret(value: str | None) -> None:
    """Have :func:`redact` hide ``value`` (an API secret or token) from now on."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every salt (``<salt>``) and remembered secret (``<secret>``) replaced, for errors and logs."""
    for value in sorted(_SEEN, key=len, reverse=True):
        text = text.replace(value, "<salt>")
    for value in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(value, "<secret>")
    return text


def _from_keyvault(url: str) -> str:
    try:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient
    except ImportError as exc:
        raise SaltError(
            "OEA_KEYVAULT_URL is set but the Key Vault client is missing: "
            "pip install azure-identity azure-keyvault-secrets"
        ) from exc
    try:
        return SecretClient(vault_url=url, credential=DefaultAzureCredential()).get_secret(
            KEYVAULT_SECRET_NAME
        ).value
    except Exception as exc:  # the SDK raises many types; keep the cause, not the value
        raise SaltError(
            f"could not read secret {KEYVAULT_SECRET_NAME!r} from Key Vault {url}: {type(exc).__name__}; "
            "check the vault URL and your access"
        ) from exc


def _from_file(path: str) -> str:
    if os.path.exists(path):
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise SaltError(
                f"salt file {path} is readable by others (mode {mode:o}): run chmod 600 {path}"
            )
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    value = base64.b64encode(secrets.token_bytes(16)).decode("ascii")  # OEA's setup: 16 random bytes
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def get_salt(lake: LakePaths, environ: dict[str, str] | None = None) -> Salt:
    """Return the salt for ``lake``; raises SaltError when none can be had or it is empty."""
    env = os.environ if environ is None else environ
    if "OEA_SALT" in env:
        return Salt(env["OEA_SALT"], "environment variable OEA_SALT")
    if env.get("OEA_KEYVAULT_URL"):
        url = env["OEA_KEYVAULT_URL"]
        return Salt(_from_keyvault(url), f"Key Vault {url} secret {KEYVAULT_SECRET_NAME}")
    if not lake.is_local:
        raise SaltError(
            "no salt for an ADLS lake: set OEA_SALT or OEA_KEYVAULT_URL (secret 'oeaSalt')"
        )
    path = lake.secret_file
    return Salt(_from_file(path), f"salt file {path}")
