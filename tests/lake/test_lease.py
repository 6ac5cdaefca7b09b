"""The lake lock on an ADLS Gen2 lake, a blob lease, against a real Azurite: one holder per name, a second one
waits or says who holds it, a dead holder's lease lapses and is taken over, a live one's is renewed."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from oea_core import LakeLockError, StorageCredentialError
from oea_core.lake.lease import blob_lease, blob_service, lock_url
from oea_core.lake.paths import parse_abfss
from oea_core.lake.storage import CONNECTION_STRING, StorageCredentials, resolve_credentials

ACCOUNT = "devstoreaccount1"


@pytest.fixture
def creds(azurite, monkeypatch) -> StorageCredentials:
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)  # also for the subprocesses
    return resolve_credentials(azurite.account)


def lock_content(creds: StorageCredentials, name: str) -> bytes:
    where = parse_abfss(lock_url(creds.account, name))
    return blob_service(creds).get_blob_client(where.container, where.path).download_blob().readall()


def refusal(creds: StorageCredentials, name: str) -> LakeLockError:
    with pytest.raises(LakeLockError) as info, blob_lease(creds, name, "clever land", wait=0):
        pass
    return info.value


# --- no server ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", [14, 61, -1])
def test_a_lease_length_outside_azures_range_is_refused_before_any_request(seconds):
    creds = resolve_credentials("nosuchaccount1", {CONNECTION_STRING: "AccountName=nosuchaccount1;AccountKey=a2V5"})
    with pytest.raises(LakeLockError, match=rf"^lease_seconds={seconds} is outside Azure's range for a blob lease: "
                                            r"give 15 to 60 seconds$"), \
            blob_lease(creds, "clever", "clever ingest", lease_seconds=seconds):
        pass


class _SignedIn:  # what DefaultAzureCredential is to the SDK: something with get_token
    def get_token(self, *scopes, **kwargs):
        raise AssertionError("no request is made")


def test_each_kind_of_credential_reaches_the_accounts_blob_endpoint(monkeypatch):
    from azure.identity import ClientSecretCredential

    signed_in = _SignedIn()
    monkeypatch.setattr("oea_core.lake.lease._default_credential", lambda: signed_in)
    kinds = {"AZURE_STORAGE_ACCOUNT_KEY": "a2V5", "AZURE_STORAGE_SAS_TOKEN": "?sv=2024&sig=abc"}
    sp = {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s"}
    clients = {name: blob_service(resolve_credentials("lake01", {name: value})) for name, value in kinds.items()}
    clients["sp"] = blob_service(resolve_credentials("lake01", sp))
    clients["default"] = blob_service(resolve_credentials("lake01", {}))
    assert {client.url.split("?")[0] for client in clients.values()} == {"https://lake01.blob.core.windows.net/"}
    assert clients["AZURE_STORAGE_ACCOUNT_KEY"].credential.account_key == "a2V5"
    assert "sig=abc" in clients["AZURE_STORAGE_SAS_TOKEN"].url
    assert isinstance(clients["sp"].credential, ClientSecretCredential)
    assert clients["default"].credential is signed_in


# --- against Azurite ----------------------------------------------------------------------------------------
def test_a_held_lease_refuses_a_second_run_naming_the_holder_and_is_free_again_after_release(creds):
    with blob_lease(creds, "lease-one", "clever ingest") as me:
        assert me["operation"] == "clever ingest" and me["pid"] == os.getpid()
        assert json.loads(lock_content(creds, "lease-one")) == me
        error = refusal(creds, "lease-one")
    assert str(error) == (
        f"clever ingest already running since {me['since']} (host {socket.gethostname()}, pid {os.getpid()}) on "
        "storage account 'devstoreaccount1'; wait for it to finish, or rerun with --wait SECONDS to queue behind it "
        "(lock: abfss://oea-framework@devstoreaccount1.dfs.core.windows.net/locks/lease-one.lock)")
    assert error.holder == me and error.path == lock_url(ACCOUNT, "lease-one")
    assert lock_content(creds, "lease-one") == b""  # a clean release
    started = time.monotonic()
    with blob_lease(creds, "lease-one", "clever land"):
        assert time.monotonic() - started < 2
    assert lock_content(creds, "lease-one") == b""


def test_the_lease_is_released_when_the_block_raises(creds):
    with pytest.raises(KeyError, match="the run's own error"), blob_lease(creds, "lease-raise", "clever ingest"):
        raise KeyError("the run's own error")
    assert lock_content(creds, "lease-raise") == b""
    with blob_lease(creds, "lease-raise", "clever ingest"):
        pass


def test_different_names_do_not_block_each_other(creds):
    with blob_lease(creds, "lease-a", "clever ingest"), blob_lease(creds, "lease-b", "edfi ingest") as b:
        assert b["operation"] == "edfi ingest"
        refusal(creds, "lease-a")
        refusal(creds, "lease-b")


def test_a_second_run_waits_for_the_first_when_asked(creds, caplog):
    first = blob_lease(creds, "lease-wait", "clever ingest")
    first.__enter__()
    releaser = threading.Timer(1.0, first.__exit__, (None, None, None))
    started = time.monotonic()
    releaser.start()
    try:
        with caplog.at_level(logging.INFO, logger="oea"), blob_lease(creds, "lease-wait", "clever land", wait=10) as me:
            waited = time.monotonic() - started
            assert json.loads(lock_content(creds, "lease-wait")) == me
    finally:
        releaser.join()
    assert 0.9 < waited < 5
    assert "clever land: waiting up to 10 s for clever ingest" in caplog.text
    assert "took over" not in caplog.text  # the first one released cleanly


def test_a_lease_lost_during_the_run_is_an_error_at_its_end_and_the_new_holder_keeps_the_lock(creds, caplog):
    from azure.storage.blob import BlobLeaseClient

    where = parse_abfss(lock_url(ACCOUNT, "lease-lost"))
    blob = blob_service(creds).get_blob_client(where.container, where.path)
    for body_error in (None, ValueError("the run's own error")):
        second = blob_lease(creds, "lease-lost", "clever land")
        raised = LakeLockError if body_error is None else ValueError
        with caplog.at_level(logging.WARNING, logger="oea"), pytest.raises(raised) as info, \
                blob_lease(creds, "lease-lost", "clever ingest"):
            BlobLeaseClient(blob).break_lease(lease_break_period=0)  # as an operator would, or a lapse
            taken = second.__enter__()
            if body_error is not None:
                raise body_error
        try:
            assert json.loads(lock_content(creds, "lease-lost")) == taken  # not emptied by the loser
        finally:
            second.__exit__(None, None, None)
        lost = (f"could not release the lake lock {lock_url(ACCOUNT, 'lease-lost')} on storage account "
                "'devstoreaccount1' (LeaseIdMismatchWithLeaseOperation)")
        if body_error is None:
            assert str(info.value).startswith(f"clever ingest: {lost}; it frees itself when its lease expires")
        else:
            assert info.value is body_error and f"clever ingest: {lost}" in caplog.text


@pytest.mark.slow
def test_the_lease_of_a_killed_run_lapses_and_is_taken_over_with_a_warning(creds, caplog):
    code = textwrap.dedent("""
        import time
        from oea_core.lake.lease import blob_lease
        from oea_core.lake.storage import resolve_credentials
        with blob_lease(resolve_credentials("devstoreaccount1"), "lease-killed", "clever ingest", lease_seconds=15):
            print("held", flush=True)
            time.sleep(120)
    """)
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        dead = json.loads(lock_content(creds, "lease-killed"))
        assert dead["pid"] == other.pid
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    killed = time.monotonic()
    refusal(creds, "lease-killed")  # its lease has not lapsed yet
    with caplog.at_level(logging.WARNING, logger="oea"), \
            blob_lease(creds, "lease-killed", "clever land", wait=30) as me:
        lapsed = time.monotonic() - killed
        assert json.loads(lock_content(creds, "lease-killed")) == me
    assert 5 < lapsed < 20
    assert (f"clever land: took over the lake lock {lock_url(ACCOUNT, 'lease-killed')} on storage account "
            f"'devstoreaccount1' left by clever ingest (host {socket.gethostname()}, pid {other.pid}, since "
            f"{dead['since']}), which ended without releasing it (its lease expired)") in caplog.text
    assert lock_content(creds, "lease-killed") == b""


@pytest.mark.slow
def test_a_held_lease_is_renewed_past_its_length(creds, caplog):
    with caplog.at_level(logging.WARNING, logger="oea"), \
            blob_lease(creds, "lease-renewed", "clever ingest", lease_seconds=15) as me:
        time.sleep(18)
        assert refusal(creds, "lease-renewed").holder == me
        time.sleep(2)
    assert not caplog.records  # no renewal failed
    with blob_lease(creds, "lease-renewed", "clever land"):
        pass


def test_a_wrong_key_is_one_line_naming_the_account_not_the_key(creds, azurite, monkeypatch):
    wrong = "A" * 86 + "=="
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string.replace(azurite.account_key, wrong))
    with pytest.raises(StorageCredentialError, match=(
            r"^storage account 'devstoreaccount1' refused the credential in AZURE_STORAGE_CONNECTION_STRING "
            r"\(403 AuthorizationFailure\): check it")) as info, \
            blob_lease(resolve_credentials(azurite.account), "lease-wrong-key", "clever ingest"):
        pass
    assert wrong not in str(info.value) and "\n" not in str(info.value)
    assert info.value.account == ACCOUNT and info.value.source == CONNECTION_STRING
