"""The lake lock on an ADLS Gen2 lake: an Azure blob lease on ``oea-framework/locks/<name>.lock``.

The local lake's lock (:mod:`oea_core.lake.lock`) is an ``flock``; an ``abfss://`` lake has no file system to
lock, so a run there holds a lease on the blob ``locks/<name>.lock`` of the ``oea-framework`` container
instead (both created when missing). The lease is finite (15 to 60 s) and renewed in the background
every third of that, so a run killed however it dies frees the lock within one lease length; the next
run then takes it over and says whose it was. The blob holds who has the lock (operation, host, pid,
since), written with the lease id, and is emptied on a clean release, so what a new holder finds in it
is a run that ended without releasing. A second run waits up to ``wait`` seconds before it gives up
with the same message as the local lock, naming the storage account::

    clever ingest already running since 2026-11-24T01:02:03Z (host lab-3, pid 4242) on storage account ...

Guarantees: the lease is released and the blob emptied when the block ends, however it ends (a failure
to release is an error after a block that succeeded, a warning after one that raised, so the block's own
error is never hidden); a renewal that fails is a warning naming the lock and the account; a credential
the account refuses is one :class:`~oea_core.errors.StorageCredentialError` line
(:func:`oea_core.lake.storage.storage_errors`). Unlike the local lock, a lease is not re-entrant: a second
:func:`blob_lease` on the same name in the same process is refused like any other run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import LakeLockError, MissingExtraError, OEAError
from ..extras import require
from .paths import LakePaths, check_name, parse_abfss
from .storage import StorageCredentials, _default_credential, storage_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType

    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient, ContainerClient

log = logging.getLogger("oea")
LEASE_SECONDS = (15, 60)  # Azure's range for a finite lease
_POLL_SECONDS = 0.5


def lock_url(account: str, name: str) -> str:
    """The abfss:// URL of the blob that :func:`blob_lease` leases for the lock ``name`` on ``account``."""
    return LakePaths(account=account).state_path("locks", check_name(name, "lock name") + ".lock")


def blob_service(credentials: StorageCredentials) -> BlobServiceClient:
    """An azure-storage-blob client for the storage account of ``credentials``, of whatever kind they are."""
    sdk = _blob_sdk()
    with storage_errors(credentials):
        if credentials.kind == "connection-string":
            client: BlobServiceClient = sdk.BlobServiceClient.from_connection_string(credentials.connection_string)
            return client
        url = credentials.blob_endpoint or f"https://{credentials.account}.blob.core.windows.net"
        secret: Any
        if credentials.kind == "account-key":
            secret = {"account_name": credentials.account, "account_key": credentials.account_key}
        elif credentials.kind == "sas":
            secret = credentials.sas_token
        elif credentials.kind == "service-principal":
            secret = require("azure.identity").ClientSecretCredential(
                credentials.tenant_id, credentials.client_id, credentials.client_secret)
        else:
            secret = _default_credential()
        client = sdk.BlobServiceClient(url, credential=secret)
        return client


@contextlib.contextmanager
def blob_lease(credentials: StorageCredentials, name: str, operation: str, *, wait: float = 0.0,
               lease_seconds: int = 60) -> Iterator[dict[str, object]]:
    """Hold the lake lock ``name`` for ``operation`` as a blob lease; yields the holder record written in the blob.

    Raises LakeLockError when another run holds it for longer than ``wait`` seconds, or when ``wait`` or
    ``lease_seconds`` (15 to 60) is out of range; StorageCredentialError when the account refuses the credential.
    """
    if not LEASE_SECONDS[0] <= lease_seconds <= LEASE_SECONDS[1]:
        raise LakeLockError(f"lease_seconds={lease_seconds!r} is outside Azure's range for a blob lease: give "
                            f"{LEASE_SECONDS[0]} to {LEASE_SECONDS[1]} seconds")
    if wait < 0:
        raise LakeLockError(f"wait={wait!r} is negative: give 0 or more seconds")
    url = lock_url(credentials.account, name)
    where = parse_abfss(url)
    container = blob_service(credentials).get_container_client(where.container)
    blob = container.get_blob_client(where.path)
    with storage_errors(credentials):
        lease, me = _acquire(container, blob, credentials.account, url, operation, wait, lease_seconds)
    stop = threading.Event()
    renewer = threading.Thread(target=_keep_renewing, args=(lease, stop, lease_seconds / 3, credentials.account, url),
                               name=f"oea-lease-{name}", daemon=True)
    renewer.start()
    try:
        yield me
    except BaseException:
        _release(blob, lease, stop, renewer, credentials, url, operation, body_failed=True)
        raise
    _release(blob, lease, stop, renewer, credentials, url, operation, body_failed=False)


def _acquire(container: ContainerClient, blob: BlobClient, account: str, url: str, operation: str, wait: float,
             lease_seconds: int) -> tuple[BlobLeaseClient, dict[str, object]]:
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            lease = blob.acquire_lease(lease_duration=lease_seconds)
            break
        except Exception as exc:  # the Azure SDK's errors, told apart by their code; others re-raised
            code = _error_code(exc)
            if code == "ContainerNotFound":
                _create(container.create_container)
            elif code == "BlobNotFound":
                _create(lambda: blob.upload_blob(b"", overwrite=False))
            elif code != "LeaseAlreadyPresent":
                raise
            elif time.monotonic() >= deadline:
                other = _record(blob.download_blob().readall()) or {}
                raise LakeLockError(
                    f"{other.get('operation', 'another run')} already running since {other.get('since', '?')} "
                    f"(host {other.get('host', '?')}, pid {other.get('pid', '?')}) on storage account {account!r}; "
                    f"wait for it to finish, or rerun with --wait SECONDS to queue behind it (lock: {url})",
                    path=url, holder=other) from None
            else:
                if not told:
                    other = _record(blob.download_blob().readall()) or {}
                    log.info("%s: waiting up to %.0f s for %s (host %s, pid %s) to finish", operation, wait,
                             other.get("operation", "another run"), other.get("host", "?"), other.get("pid", "?"))
                    told = True
                time.sleep(_POLL_SECONDS)
    try:
        left = blob.download_blob(lease=lease).readall()
        if left.strip():
            was = _record(left) or {}
            log.warning("%s: took over the lake lock %s on storage account %r left by %s (host %s, pid %s, since %s), "
                        "which ended without releasing it (its lease expired)", operation, url, account,
                        was.get("operation", "?"), was.get("host", "?"), was.get("pid", "?"), was.get("since", "?"))
        me: dict[str, object] = {
            "operation": operation, "host": socket.gethostname(), "pid": os.getpid(),
            "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        blob.upload_blob(json.dumps(me).encode("utf-8"), overwrite=True, lease=lease)
        return lease, me
    except BaseException:
        with contextlib.suppress(Exception):  # the error above is the one to report; the lease expires anyway
            lease.release()
        raise


def _create(create: Callable[[], object]) -> None:
    """Create a missing container or blob; another run creating it at the same moment is fine."""
    try:
        create()
    except Exception as exc:  # re-raised unless it is "already exists"
        if _error_code(exc) not in ("ContainerAlreadyExists", "ContainerBeingDeleted", "BlobAlreadyExists"):
            raise


def _keep_renewing(lease: BlobLeaseClient, stop: threading.Event, every: float, account: str, url: str) -> None:
    azure_error: type[AzureError] = importlib.import_module("azure.core.exceptions").AzureError
    failing = False
    while not stop.wait(every):
        try:
            lease.renew()
        except azure_error as exc:  # a lost lease or no connection; a thread has nobody to raise to but the log
            if not failing:
                log.warning("could not renew the lease on the lake lock %s on storage account %r (%s): once it "
                            "expires another run can take the lock while this one still runs", url, account,
                            _error_code(exc) or exc)
            failing = True
        else:
            if failing:
                log.info("renewed the lease on the lake lock %s on storage account %r again", url, account)
            failing = False


def _release(blob: BlobClient, lease: BlobLeaseClient, stop: threading.Event, renewer: threading.Thread,
             credentials: StorageCredentials, url: str, operation: str, *, body_failed: bool) -> None:
    stop.set()
    renewer.join()
    try:
        with storage_errors(credentials):
            try:
                blob.upload_blob(b"", overwrite=True, lease=lease)  # an empty blob: released cleanly
            finally:
                lease.release()
    except Exception as exc:  # never hide the block's own error; after a success, this is the error
        reason = f"{_error_code(exc) or type(exc).__name__}"
        if body_failed:
            log.warning("%s: could not release the lake lock %s on storage account %r (%s); it frees itself "
                        "when its lease expires", operation, url, credentials.account, reason)
            return
        if isinstance(exc, OEAError):
            raise
        raise LakeLockError(
            f"{operation}: could not release the lake lock {url} on storage account {credentials.account!r} "
            f"({reason}); it frees itself when its lease expires, but if the lease was lost during the run "
            "(see the warnings above) another run may have run alongside this one", path=url) from exc


def _record(content: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(content.decode("utf-8", "replace")) if content.strip() else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_code(exc: BaseException) -> str | None:
    """The storage error code of an Azure SDK error (``LeaseAlreadyPresent``, ...), or None."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code)) if code else None


def _blob_sdk() -> ModuleType:
    try:
        return importlib.import_module("azure.storage.blob")
    except ImportError:  # extras.EXTRAS has no entry for it yet; this is require()'s wording
        raise MissingExtraError("the lake lock on an ADLS Gen2 lake needs the azure-storage-blob package, which is "
                                "not installed: pip install 'oea-core[azure]' (or ./scripts/setup.sh, which "
                                "installs everything)") from None
