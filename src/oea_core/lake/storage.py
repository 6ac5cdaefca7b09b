"""ADLS Gen2 lakes: the credential that reaches the storage account, its fsspec file system, delta-rs options.

An ``abfss://<stage>@<account>.dfs.core.windows.net`` lake keeps each stage in a container of one
storage account (:mod:`oea_core.lake.paths` builds the URLs). Files go through adlfs (fsspec over the Blob
API, which every account serves, hierarchical namespace or not, and the Azurite emulator too); Delta
tables go through delta-rs, given :meth:`StorageCredentials.delta_storage_options`. Both use the one
credential :func:`resolve_credentials` finds in the environment, in this order:

1. ``AZURE_STORAGE_CONNECTION_STRING``: an account key or SAS, and the endpoints (this is how the
   Azurite emulator is addressed: ``BlobEndpoint=http://127.0.0.1:<port>/devstoreaccount1``);
2. ``AZURE_STORAGE_ACCOUNT_KEY``;
3. ``AZURE_STORAGE_SAS_TOKEN``;
4. a service principal: ``AZURE_CLIENT_SECRET`` with ``AZURE_TENANT_ID`` and ``AZURE_CLIENT_ID``;
5. ``DefaultAzureCredential`` (managed identity, workload identity, ``az login``, ...).

Guarantees: a secret never appears in a repr, a log line or a message (messages name the variable a
credential came from, never its value); an incomplete credential, one the account refuses, or none at
all, is one :class:`~oea_core.errors.StorageCredentialError` line naming the account and what to set.
adlfs and delta-rs also read some of these variables themselves; the order above is theirs too
(measured, deltalake 1.6.6 and adlfs 2026.8.0), and the one case where delta-rs would pick another
credential than this module (a connection string holding a SAS while ``AZURE_STORAGE_ACCOUNT_KEY`` is
set) is refused.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import LakeStorageError, StorageCredentialError
from ..extras import require
from .paths import FRAMEWORK_CONTAINER, STAGES, LakePaths

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from fsspec import AbstractFileSystem

log = logging.getLogger("oea")

CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_KEY = "AZURE_STORAGE_ACCOUNT_KEY"
SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
SERVICE_PRINCIPAL = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
CONTAINERS = (*STAGES, FRAMEWORK_CONTAINER)
# Every variable resolve_credentials reads (a change of any is a new credential).
CREDENTIAL_SETTINGS = (CONNECTION_STRING, ACCOUNT_KEY, SAS_TOKEN, *SERVICE_PRINCIPAL)
STORAGE_SCOPE = "https://storage.azure.com/.default"
# Azurite's documented account and key (``UseDevelopmentStorage=true``); public, not a secret.
EMULATOR_ACCOUNT = "devstoreaccount1"
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

CredentialKind = Literal["connection-string", "account-key", "sas", "service-principal", "default"]
_WHAT = {"connection-string": "the credential in", "account-key": "the account key in", "sas": "the SAS token in",
         "service-principal": "the service principal in", "default": "the identity found by"}
TO_SET = (f"set {CONNECTION_STRING} (also for the Azurite emulator), {ACCOUNT_KEY}, {SAS_TOKEN}, or "
          f"{', '.join(SERVICE_PRINCIPAL[:2])} and {SERVICE_PRINCIPAL[2]}; or sign in for DefaultAzureCredential "
          "(az login, a managed identity)")


@dataclass(frozen=True)
class StorageCredentials:
    """How to reach one storage account. ``source`` says where it came from; secrets are kept out of repr()."""

    account: str
    kind: CredentialKind
    source: str
    blob_endpoint: str | None = None  # None: Azure's https://<account>.blob.core.windows.net
    connection_string: str | None = field(default=None, repr=False)
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)

    def adlfs_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``adlfs.AzureBlobFileSystem`` (anonymous access is never chosen)."""
        if self.kind == "connection-string":
            return {"connection_string": self.connection_string, "anon": False}
        kwargs: dict[str, Any] = {"account_name": self.account, "anon": False}
        if self.kind == "account-key":
            kwargs["account_key"] = self.account_key
        elif self.kind == "sas":
            kwargs["sas_token"] = self.sas_token
        elif self.kind == "service-principal":
            kwargs.update(tenant_id=self.tenant_id, client_id=self.client_id, client_secret=self.client_secret)
        return kwargs  # "default": adlfs builds its own DefaultAzureCredential from account_name

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs ``storage_options``; for ``default``, a bearer token fetched now (call it per operation)."""
        options = {"azure_storage_account_name": self.account}
        if self.account_key:
            options["azure_storage_account_key"] = self.account_key
        elif self.sas_token:
            options["azure_storage_sas_token"] = self.sas_token
        elif self.kind == "service-principal":
            options.update(azure_storage_tenant_id=str(self.tenant_id), azure_storage_client_id=str(self.client_id),
                           azure_storage_client_secret=str(self.client_secret))
        elif self.kind == "default":
            with storage_errors(self):
                options["azure_storage_token"] = _default_credential().get_token(STORAGE_SCOPE).token
        if self.blob_endpoint:
            # delta-rs (object_store) ignores the URL's host once an endpoint is set; the emulator's endpoint
            # must carry the account (http://host:port/devstoreaccount1) or every request is a 404.
            options["azure_storage_endpoint"] = self.blob_endpoint
            if self.blob_endpoint.startswith("http://"):
                options["allow_http"] = "true"
        return options


def resolve_credentials(account: str, environ: Mapping[str, str] | None = None) -> StorageCredentials:
    """The first credential set for ``account`` in the documented order; StorageCredentialError if one is bad."""
    env = os.environ if environ is None else environ
    if env.get(CONNECTION_STRING):
        creds = _from_connection_string(account, env[CONNECTION_STRING])
        if creds.sas_token and env.get(ACCOUNT_KEY):
            raise StorageCredentialError(
                f"{CONNECTION_STRING} holds a SAS token for storage account {account!r}, but {ACCOUNT_KEY} is set "
                f"too and delta-rs would use that key instead: unset one of them", account=account,
                source=CONNECTION_STRING)
    elif env.get(ACCOUNT_KEY):
        creds = StorageCredentials(account, "account-key", ACCOUNT_KEY, account_key=env[ACCOUNT_KEY])
    elif env.get(SAS_TOKEN):
        creds = StorageCredentials(account, "sas", SAS_TOKEN, sas_token=env[SAS_TOKEN].lstrip("?"))
    elif env.get(SERVICE_PRINCIPAL[2]):
        # AZURE_CLIENT_ID alone is not a service principal: DefaultAzureCredential reads it as a managed identity.
        missing = [name for name in SERVICE_PRINCIPAL if not env.get(name)]
        if missing:
            raise StorageCredentialError(
                f"{SERVICE_PRINCIPAL[2]} is set for storage account {account!r}, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not: set {', '.join(SERVICE_PRINCIPAL)} together",
                account=account, source=", ".join(SERVICE_PRINCIPAL))
        tenant, client, secret = (env[name] for name in SERVICE_PRINCIPAL)
        creds = StorageCredentials(account, "service-principal", ", ".join(SERVICE_PRINCIPAL),
                                   tenant_id=tenant, client_id=client, client_secret=secret)
    else:
        creds = StorageCredentials(account, "default", "DefaultAzureCredential")
    log.debug("storage account %s: credential from %s", account, creds.source)
    return creds


def _from_connection_string(account: str, value: str) -> StorageCredentials:
    parts = dict(p.split("=", 1) for p in value.strip().split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        parts = {"AccountName": EMULATOR_ACCOUNT, "AccountKey": EMULATOR_KEY,
                 "BlobEndpoint": f"http://127.0.0.1:10000/{EMULATOR_ACCOUNT}"}
    named = parts.get("AccountName", account)
    if named != account:
        raise StorageCredentialError(
            f"{CONNECTION_STRING} is for storage account {named!r}, but the lake is on {account!r}: "
            "give the lake's connection string, or the lake URL of that account", account=account,
            source=CONNECTION_STRING)
    if not parts.get("AccountKey") and not parts.get("SharedAccessSignature"):
        raise StorageCredentialError(
            f"{CONNECTION_STRING} has neither AccountKey nor SharedAccessSignature for storage account {account!r}: "
            "copy the whole connection string from the portal (Access keys) or Azurite's documentation",
            account=account, source=CONNECTION_STRING)
    endpoint = parts.get("BlobEndpoint")
    protocol, suffix = parts.get("DefaultEndpointsProtocol", "https"), parts.get("EndpointSuffix", "core.windows.net")
    if not endpoint and (protocol, suffix) != ("https", "core.windows.net"):
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    return StorageCredentials(account, "connection-string", CONNECTION_STRING,
                              blob_endpoint=endpoint.rstrip("/") if endpoint else None,
                              connection_string=value, account_key=parts.get("AccountKey") or None,
                              sas_token=(parts.get("SharedAccessSignature") or "").lstrip("?") or None)


def lake_credentials(lake: LakePaths, environ: Mapping[str, str] | None = None) -> StorageCredentials:
    """:func:`resolve_credentials` for an ``abfss://`` lake's account; LakeStorageError for a local lake."""
    if lake.account is None:
        raise LakeStorageError(f"the lake {lake.root} is a local folder, not an ADLS Gen2 account")
    return resolve_credentials(lake.account, environ)


def lake_filesystem(lake: LakePaths, credentials: StorageCredentials | None = None, *,
                    check: bool = True) -> AbstractFileSystem:
    """An adlfs file system on the lake's account (paths ``<container>/<path>`` or full abfss:// URLs).

    With ``check``, one listing of ``stage1np`` proves the credential first: StorageCredentialError
    when the account refuses it or none is found, LakeStorageError when the account cannot be reached.
    """
    creds = credentials or lake_credentials(lake)
    adlfs = require("adlfs")
    with storage_errors(creds):
        fs: AbstractFileSystem = adlfs.AzureBlobFileSystem(**creds.adlfs_kwargs())
    if check:
        check_access(fs, creds)
    return fs


def check_access(fs: AbstractFileSystem, credentials: StorageCredentials, container: str = STAGES[0]) -> None:
    """List ``container`` once (a missing container is fine); raise as :func:`storage_errors` does."""
    with storage_errors(credentials), contextlib.suppress(FileNotFoundError):
        fs.ls(container, detail=False, refresh=True)


def create_containers(fs: AbstractFileSystem, credentials: StorageCredentials,
                      containers: tuple[str, ...] = CONTAINERS) -> None:
    """Create the lake's containers (the stages and ``oea-framework``) that do not exist yet.

    The existing ones are listed first: adlfs' ``makedirs`` does nothing, and its ``mkdir`` takes a
    container whose properties it cannot read (a refused key, say) for an existing one, with a warning.
    """
    with storage_errors(credentials):
        existing = set(fs.ls("", detail=False, refresh=True))
        for container in containers:
            if container not in existing:
                fs.mkdir(container)


@contextlib.contextmanager
def storage_errors(credentials: StorageCredentials) -> Iterator[None]:
    """Turn an authentication failure (adlfs, the Azure SDK or delta-rs) into one StorageCredentialError line.

    A refused or missing credential, and an unreachable account, become one line naming the account and the
    credential's source; every other error passes unchanged.
    """
    account, source = credentials.account, credentials.source
    try:
        yield
    except Exception as exc:  # re-raised unchanged below unless it is an authentication failure
        reason = _auth_failure(exc)
        if reason is None:
            if type(exc).__name__ == "ServiceRequestError":  # azure.core: no connection at all
                endpoint = credentials.blob_endpoint or f"https://{account}.blob.core.windows.net"
                raise LakeStorageError(f"cannot reach storage account {account!r} at {endpoint}: check the "
                                       f"network, or the endpoint in {source}", account=account) from exc
            raise
        if credentials.kind == "default" and reason == "no credential":
            raise StorageCredentialError(f"no credential for storage account {account!r}: {TO_SET}",
                                         account=account, source=source) from exc
        raise StorageCredentialError(
            f"storage account {account!r} refused {_WHAT[credentials.kind]} {source} ({reason}): check it, "
            f"or {TO_SET}", account=account, source=source) from exc


def _auth_failure(error: BaseException) -> str | None:
    """``"<status> <code>"`` when ``error`` or its cause is an authentication failure, ``"no credential"``, or None.

    adlfs reports some failures as a ValueError whose cause is the Azure SDK's error.
    """
    seen: BaseException | None = error
    while seen is not None:
        reason = _auth_reason(seen)
        if reason is not None:
            return reason
        seen = seen.__cause__
    return None


def _auth_reason(exc: BaseException) -> str | None:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "CredentialUnavailableError" in names:
        return "no credential"
    status = getattr(exc, "status_code", None)
    if "ClientAuthenticationError" in names and status is None:  # a token request failed
        return "no credential" if "DefaultAzureCredential" in str(exc) else "sign-in failed"
    if status in (401, 403) and "HttpResponseError" in names:
        code = getattr(exc, "error_code", None)  # a StorageErrorCode enum or a string
        return f"{status} {getattr(code, 'value', code) or ''}".strip()
    if type(exc) is OSError or "DeltaError" in names:  # delta-rs: a plain OSError with object_store's text
        text = str(exc)  # (object_store writes REDACTED for a URL that carries a SAS)
        if "Invalid Access Key" in text:
            return "the key is not valid base64"
        found = re.search(r"\b(401 Unauthorized|403 Forbidden)\b", text)
        if found:
            code = re.search(r"<Code>(\w+)</Code>", text)
            return f"{found.group(1).split()[0]} {code.group(1) if code else ''}".strip()
    return None


@functools.cache  # one credential per process: azure-identity caches and refreshes its tokens
def _default_credential() -> Any:
    """DefaultAzureCredential from azure-identity (a seam the unit tests replace)."""
    return require("azure.identity").DefaultAzureCredential()
