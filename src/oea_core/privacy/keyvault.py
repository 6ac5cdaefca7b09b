"""Secrets from Azure Key Vault: the salt and the Ed-Fi API credentials, each with its environment variable.

:func:`secret` looks a named secret up in order: its environment variable (``OEA_SALT``,
``OEA_EDFI_CLIENT_ID``, ``OEA_EDFI_CLIENT_SECRET``); the Key Vault at ``OEA_KEYVAULT_URL``, read with
``DefaultAzureCredential``; otherwise None, and the caller says what to set. :func:`read_secret` reads
one secret from one vault (a flow datasource's password).

Guarantees: a failure is one line naming the vault URL and the secret (not found, forbidden,
authentication failed, unreachable), never a value; the SDK exception it is chained to is scrubbed
the same way; every value read is remembered for :func:`~oea_core.privacy.redaction.redact`. One
``SecretClient`` per vault URL is kept for the life of the process (making a credential is slow);
values are not cached.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import KeyVaultError
from ..extras import require
from .redaction import redact, remember_secret

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from azure.keyvault.secrets import SecretClient

# Secret names in Key Vault (also the names the Synapse templates read with getSecret).
SALT = "oeaSalt"
EDFI_CLIENT_ID = "oeaEdFiClientId"
EDFI_CLIENT_SECRET = "oeaEdFiClientSecret"
SFTP_PASSWORD = "oeaSftpPassword"
# Synapse only: the SFTP server's known_hosts lines, written to a file for OEA_SFTP_KNOWN_HOSTS (locally a file).
SFTP_KNOWN_HOSTS = "oeaSftpKnownHosts"
# The environment variable that, when set, is used instead of each secret.
SALT_ENV = "OEA_SALT"
EDFI_CLIENT_ID_ENV = "OEA_EDFI_CLIENT_ID"
EDFI_CLIENT_SECRET_ENV = "OEA_EDFI_CLIENT_SECRET"
SFTP_PASSWORD_ENV = "OEA_SFTP_PASSWORD"
ENV_VARIABLES: Mapping[str, str] = {SALT: SALT_ENV, EDFI_CLIENT_ID: EDFI_CLIENT_ID_ENV,
                                    EDFI_CLIENT_SECRET: EDFI_CLIENT_SECRET_ENV, SFTP_PASSWORD: SFTP_PASSWORD_ENV}
VAULT_URL_ENV = "OEA_KEYVAULT_URL"


@dataclass(frozen=True)
class SecretValue:
    """A secret's value and where it came from (for messages); the repr never shows the value."""

    value: str = field(repr=False)
    origin: str


def vault_url(vault: str) -> str:
    """The URL of ``vault``: a vault name (``oea-kv``) or already a URL (``https://oea-kv.vault.azure.net``)."""
    return vault if vault.startswith("https://") else f"https://{vault}.vault.azure.net"


def secret(name: str, *, env: str | None = None, environ: Mapping[str, str] | None = None) -> SecretValue | None:
    """Secret ``name``: environment variable ``env`` (by default the one in ENV_VARIABLES) if set, else Key Vault
    ``OEA_KEYVAULT_URL`` if set, else None.

    Raises KeyVaultError when the vault is set but cannot give the secret.
    """
    source = os.environ if environ is None else environ
    variable = env or ENV_VARIABLES.get(name)
    if variable and variable in source:
        remember_secret(source[variable])
        return SecretValue(source[variable], f"environment variable {variable}")
    url = source.get(VAULT_URL_ENV)
    if not url:
        return None
    return SecretValue(read_secret(url, name), f"Key Vault {url} secret {name}")


def read_secret(url: str, name: str) -> str:
    """The value of secret ``name`` in the vault at ``url``, remembered for redaction.

    Raises KeyVaultError (one line, naming the vault and the secret) when it is missing, empty, forbidden,
    the sign-in fails or the vault cannot be reached.
    """
    client = _client(url)  # no network yet; a missing SDK is a MissingExtraError, not a vault error
    try:
        value = client.get_secret(name).value
    except Exception as exc:  # the SDK raises many types; map them, and keep the cause without its text
        _scrub(exc)
        raise _error(exc, url, name) from exc
    if not value:
        raise KeyVaultError(f"secret {name!r} in Key Vault {url} is empty: set a value with "
                            f"{_set_command(url, name)}", vault=url, secret=name, reason="empty")
    remember_secret(value)
    return str(value)


@functools.lru_cache(maxsize=1)
def _credential() -> Any:
    return require("azure.identity").DefaultAzureCredential()


@functools.cache
def _client(url: str) -> SecretClient:
    client: SecretClient = require("azure.keyvault.secrets").SecretClient(vault_url=url, credential=_credential())
    return client


def _forget_clients() -> None:
    """Drop the cached credential and clients (tests that change the identity environment)."""
    _client.cache_clear()
    _credential.cache_clear()


def _set_command(url: str, name: str) -> str:
    host = urlparse(url).hostname or ""
    vault = host.split(".")[0] if ".vault." in host else "<vault name>"
    return f"`az keyvault secret set --vault-name {vault} --name {name} --value ...`"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, the SDK's and urllib3's inner errors), once each."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, getattr(current, "inner_exception", None),
                 getattr(current, "exc_value", None), getattr(current, "reason", None), *current.args]
        todo.extend(e for e in inner if isinstance(e, BaseException))


def _scrub(exc: BaseException) -> None:
    """Rewrite the text of ``exc`` and what it wraps so no secret can be in it: a response body (where a value
    would be) is dropped, keeping the status and error code; other text is redacted and cut to its first line."""
    for current in list(_chain(exc)):
        status = getattr(current, "status_code", None)
        if status is not None:
            code = getattr(getattr(current, "error", None), "code", None)
            text = f"HTTP {status}" + (f" {code}" if isinstance(code, str) and code.isidentifier() else "")
            current.response = None  # type: ignore[attr-defined]  # its str() would show the body
            current.error = None  # type: ignore[attr-defined]
        else:
            text = redact(str(current).splitlines()[0] if str(current) else "")[:300]
        if isinstance(getattr(current, "doc", None), str):  # json's decode errors keep the whole body
            current.doc = ""  # type: ignore[attr-defined]
        try:
            current.args = (text,)
            for attribute in ("message", "exc_msg"):
                if hasattr(current, attribute):
                    setattr(current, attribute, text)
        except (AttributeError, TypeError):  # an exception type with read-only text: leave it
            pass


def _unreachable_kind(exc: BaseException) -> str:
    names = {type(e).__name__ for e in _chain(exc)}
    if any(isinstance(e, ssl.SSLError) for e in _chain(exc)) or "SSLError" in names:
        return "TLS failed: the vault's certificate is not trusted or the handshake failed"
    if "NameResolutionError" in names or "gaierror" in names:
        return "its host name does not resolve"
    if "ConnectionRefusedError" in names:
        return "connection refused"
    if names & {"ConnectTimeoutError", "ReadTimeoutError", "TimeoutError", "ServiceRequestTimeoutError"}:
        return "timed out"
    return "connection failed"


def _error(exc: BaseException, url: str, name: str) -> KeyVaultError:
    azure = require("azure.core.exceptions")
    where = f"secret {name!r} in Key Vault {url}"
    if isinstance(exc, azure.ResourceNotFoundError):
        reason, message = "not_found", (f"secret {name!r} not found in Key Vault {url}: add it with "
                                        f"{_set_command(url, name)}")
    elif isinstance(exc, azure.HttpResponseError) and exc.status_code == 403:
        reason, message = "forbidden", (f"{where}: forbidden, this identity lacks get permission on secrets: "
                                        "grant it the 'Key Vault Secrets User' role (or a get access policy)")
    elif isinstance(exc, azure.ClientAuthenticationError):
        refused = ("the vault refused the token (expired, revoked or from another tenant)"
                   if exc.status_code == 401 else f"no Azure credential could get a token ({type(exc).__name__})")
        reason, message = "authentication", (f"{where}: authentication failed, {refused}: sign in again "
                                             "(az login), or check the managed identity or AZURE_* variables")
    elif isinstance(exc, (azure.ServiceRequestError, azure.ServiceResponseError)):
        reason, message = "unreachable", (f"{where}: the vault cannot be reached, {_unreachable_kind(exc)}: check "
                                          "the vault URL, DNS, the network and TLS")
    elif isinstance(exc, azure.HttpResponseError):
        reason, message = "failed", f"{where}: the vault answered HTTP {exc.status_code} ({type(exc).__name__})"
    else:
        reason, message = "failed", (f"could not read {where}: {type(exc).__name__}; check the vault URL, the "
                                     "secret's name and your access")
    return KeyVaultError(message, vault=url, secret=name, reason=reason)
