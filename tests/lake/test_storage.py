"""ADLS Gen2 storage: credentials in the documented order, and files and Delta tables on a real Azurite.

The first half needs no server: which credential the environment gives, what adlfs and delta-rs are
handed, and the wording of every refusal. The second half (marked ``azurite`` by the fixture) runs
against Azurite: containers, files through fsspec, a Delta table written by delta-rs and read back by
the Azure SDK alone, and a wrong key.
"""

from __future__ import annotations

import io
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oea_core import LakePaths, LakeStorageError, OEAError, StorageCredentialError
from oea_core.lake.paths import parse_abfss
from oea_core.lake.storage import (
    ACCOUNT_KEY,
    CONNECTION_STRING,
    CONTAINERS,
    SAS_TOKEN,
    create_containers,
    lake_credentials,
    lake_filesystem,
    resolve_credentials,
    storage_errors,
)

ACCOUNT = "districtlake01"
KEY = "c2VjcmV0LWtleS0x"  # base64, as a real account key is
CS = f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={KEY};EndpointSuffix=core.windows.net"
SP = {"AZURE_TENANT_ID": "tenant-1", "AZURE_CLIENT_ID": "client-1", "AZURE_CLIENT_SECRET": "sp-secret-1"}
EVERYTHING = {CONNECTION_STRING: CS, ACCOUNT_KEY: KEY, SAS_TOKEN: "sv=2024&sig=sas-secret-1", **SP}


# --- no server ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("unset", "kind", "source"), [
    ((), "connection-string", CONNECTION_STRING),
    ((CONNECTION_STRING,), "account-key", ACCOUNT_KEY),
    ((CONNECTION_STRING, ACCOUNT_KEY), "sas", SAS_TOKEN),
    ((CONNECTION_STRING, ACCOUNT_KEY, SAS_TOKEN), "service-principal",
     "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET"),
    # AZURE_CLIENT_ID without a secret names a user-assigned managed identity: DefaultAzureCredential's
    ((CONNECTION_STRING, ACCOUNT_KEY, SAS_TOKEN, "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"), "default",
     "DefaultAzureCredential"),
    (tuple(EVERYTHING), "default", "DefaultAzureCredential"),
])
def test_the_first_credential_set_wins_in_the_documented_order(unset, kind, source):
    env = {name: value for name, value in EVERYTHING.items() if name not in unset}
    creds = resolve_credentials(ACCOUNT, env)
    assert (creds.account, creds.kind, creds.source) == (ACCOUNT, kind, source)


def test_adlfs_and_delta_rs_get_the_same_credential_of_each_kind():
    def both(env):
        creds = resolve_credentials(ACCOUNT, env)
        return creds.adlfs_kwargs(), creds.delta_storage_options()

    assert both({CONNECTION_STRING: CS}) == (
        {"connection_string": CS, "anon": False},
        {"azure_storage_account_name": ACCOUNT, "azure_storage_account_key": KEY})
    assert both({ACCOUNT_KEY: KEY}) == (
        {"account_name": ACCOUNT, "account_key": KEY, "anon": False},
        {"azure_storage_account_name": ACCOUNT, "azure_storage_account_key": KEY})
    assert both({SAS_TOKEN: "?sv=2024&sig=abc"}) == (  # the leading "?" the portal copies is dropped
        {"account_name": ACCOUNT, "sas_token": "sv=2024&sig=abc", "anon": False},
        {"azure_storage_account_name": ACCOUNT, "azure_storage_sas_token": "sv=2024&sig=abc"})
    assert both(SP) == (
        {"account_name": ACCOUNT, "tenant_id": "tenant-1", "client_id": "client-1", "client_secret": "sp-secret-1",
         "anon": False},
        {"azure_storage_account_name": ACCOUNT, "azure_storage_tenant_id": "tenant-1",
         "azure_storage_client_id": "client-1", "azure_storage_client_secret": "sp-secret-1"})


@pytest.mark.parametrize(("account", "connection_string", "endpoint"), [
    # Azurite: the endpoint carries the account, and http is allowed
    ("devstoreaccount1", ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
     "BlobEndpoint=http://127.0.0.1:10123/devstoreaccount1/;"), "http://127.0.0.1:10123/devstoreaccount1"),
    ("devstoreaccount1", "UseDevelopmentStorage=true", "http://127.0.0.1:10000/devstoreaccount1"),
    (ACCOUNT, (f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey=a2V5;"
     "EndpointSuffix=core.chinacloudapi.cn"), f"https://{ACCOUNT}.blob.core.chinacloudapi.cn"),
])
def test_a_connection_strings_endpoint_reaches_delta_rs(account, connection_string, endpoint):
    options = resolve_credentials(account, {CONNECTION_STRING: connection_string}).delta_storage_options()
    assert options["azure_storage_endpoint"] == endpoint
    assert options.get("allow_http") == ("true" if endpoint.startswith("http://") else None)


@pytest.mark.parametrize(("env", "message"), [
    ({"AZURE_CLIENT_SECRET": "s", "AZURE_CLIENT_ID": "c"},
     (r"^AZURE_CLIENT_SECRET is set for storage account 'districtlake01', but AZURE_TENANT_ID is not: "
     r"set AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET together$")),
    ({"AZURE_CLIENT_SECRET": "s"}, r"but AZURE_TENANT_ID and AZURE_CLIENT_ID are not"),
    ({CONNECTION_STRING: CS.replace(ACCOUNT, "otheraccount")},
     r"^AZURE_STORAGE_CONNECTION_STRING is for storage account 'otheraccount', but the lake is on 'districtlake01'"),
    ({CONNECTION_STRING: f"AccountName={ACCOUNT};BlobEndpoint=https://x"},
     (r"^AZURE_STORAGE_CONNECTION_STRING has neither AccountKey nor SharedAccessSignature for storage account "
     r"'districtlake01'")),
    ({CONNECTION_STRING: f"BlobEndpoint=https://{ACCOUNT}.blob.core.windows.net;SharedAccessSignature=sv=1&sig=x",
      ACCOUNT_KEY: KEY},
     (r"holds a SAS token for storage account 'districtlake01', but AZURE_STORAGE_ACCOUNT_KEY is set too and "
     r"delta-rs would use that key instead: unset one of them$")),
])
def test_an_incomplete_or_ambiguous_credential_is_one_line_naming_the_account(env, message):
    with pytest.raises(StorageCredentialError, match=message) as info:
        resolve_credentials(ACCOUNT, env)
    assert "\n" not in str(info.value) and info.value.account == ACCOUNT and isinstance(info.value, OEAError)


def test_no_secret_reaches_a_repr_a_log_line_or_an_error(caplog):
    caplog.set_level(logging.DEBUG, logger="oea")
    secrets = (KEY, "sas-secret-1", "sp-secret-1")
    for unset in ((), (CONNECTION_STRING,), (CONNECTION_STRING, ACCOUNT_KEY),
                  (CONNECTION_STRING, ACCOUNT_KEY, SAS_TOKEN)):
        creds = resolve_credentials(ACCOUNT, {k: v for k, v in EVERYTHING.items() if k not in unset})
        assert not any(secret in repr(creds) for secret in secrets), repr(creds)
    assert caplog.records and not any(secret in caplog.text for secret in secrets)


class _Token:
    token = "bearer-1"


class _SignedIn:
    def get_token(self, scope):
        assert scope == "https://storage.azure.com/.default"
        return _Token()


class _NobodySignedIn:
    def get_token(self, scope):
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token from the included "
                                         "credentials.\nAttempted credentials:\n\tEnvironmentCredential: ...")


def test_default_credential_gives_delta_rs_a_bearer_token(monkeypatch):
    monkeypatch.setattr("oea_core.lake.storage._default_credential", _SignedIn)
    assert resolve_credentials(ACCOUNT, {}).delta_storage_options() == {
        "azure_storage_account_name": ACCOUNT, "azure_storage_token": "bearer-1"}


def test_nothing_configured_is_one_line_naming_the_account_and_what_to_set(monkeypatch):
    monkeypatch.setattr("oea_core.lake.storage._default_credential", _NobodySignedIn)
    with pytest.raises(StorageCredentialError) as info:
        resolve_credentials(ACCOUNT, {}).delta_storage_options()
    assert str(info.value) == (
        "no credential for storage account 'districtlake01': set AZURE_STORAGE_CONNECTION_STRING (also for the "
        "Azurite emulator), AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, or AZURE_TENANT_ID, AZURE_CLIENT_ID "
        "and AZURE_CLIENT_SECRET; or sign in for DefaultAzureCredential (az login, a managed identity)")
    assert info.value.source == "DefaultAzureCredential" and info.value.__cause__ is not None


def test_other_errors_pass_through_unchanged():
    creds = resolve_credentials(ACCOUNT, {ACCOUNT_KEY: KEY})
    with pytest.raises(FileNotFoundError), storage_errors(creds):
        raise FileNotFoundError("stage1np/x")
    with pytest.raises(OSError, match="404 Not Found"), storage_errors(creds):
        raise OSError("Generic MicrosoftAzure error: 404 Not Found <Code>ContainerNotFound</Code>")


def test_a_local_lake_has_no_storage_account(lake):
    with pytest.raises(LakeStorageError, match=r"is a local folder, not an ADLS Gen2 account"):
        lake_credentials(lake)


# --- against Azurite -----------------------------------------------------------------------------------------
@pytest.fixture
def adls_lake(azurite, monkeypatch) -> LakePaths:
    """A lake on Azurite's account, reached the way a user's would be: its connection string in the environment."""
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)
    # The account alone (no working copy): lake.table() and friends give abfss:// URLs, as on Synapse.
    lake = LakePaths(account=LakePaths.from_setting(azurite.lake_url()).account)
    create_containers(lake_filesystem(lake, check=False), lake_credentials(lake))
    return lake


def test_the_stage_containers_are_created_once(adls_lake):
    fs = lake_filesystem(adls_lake)
    create_containers(fs, lake_credentials(adls_lake))  # a second time: nothing to do
    assert set(CONTAINERS) <= set(fs.ls("", detail=False, refresh=True))


def test_files_are_written_and_listed_through_fsspec_at_their_lake_urls(adls_lake):
    fs = lake_filesystem(adls_lake)
    batch = adls_lake.path("stage1np", "files_test", "students", "20260101T000000Z")
    fs.pipe({f"{batch}/a.csv": b"id\n1\n", f"{batch}/sub/b.csv": b"id\n2\n"})
    assert fs.find(adls_lake.path("stage1np", "files_test")) == [
        "stage1np/files_test/students/20260101T000000Z/a.csv",
        "stage1np/files_test/students/20260101T000000Z/sub/b.csv"]
    assert fs.ls(batch, detail=False) == ["stage1np/files_test/students/20260101T000000Z/a.csv",
                                          "stage1np/files_test/students/20260101T000000Z/sub"]
    assert fs.cat(f"{batch}/sub/b.csv") == b"id\n2\n"
    # write-once: what the landing's manifest (the batch's commit marker) will rely on
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{batch}/a.csv", b"other", overwrite=False)


def test_a_delta_table_written_by_delta_rs_reads_back_through_the_azure_sdk_alone(adls_lake, azurite):
    from azure.storage.blob import BlobServiceClient
    from deltalake import write_deltalake

    table = adls_lake.table("stage2np", "delta_test", "students_lookup")
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})
    write_deltalake(table, rows, storage_options=lake_credentials(adls_lake).delta_storage_options())
    write_deltalake(table, rows.slice(0, 1), mode="append",
                    storage_options=lake_credentials(adls_lake).delta_storage_options())

    # the second client: the Blob SDK and pyarrow, no delta-rs and no adlfs
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("stage2np")
    prefix = parse_abfss(table).path
    commits = sorted(b.name for b in container.list_blobs(name_starts_with=f"{prefix}/_delta_log/")
                     if b.name.endswith(".json"))
    assert [c.rsplit("/", 1)[1] for c in commits] == ["00000000000000000000.json", "00000000000000000001.json"]
    added = [json.loads(line)["add"]["path"] for c in commits
             for line in container.download_blob(c).readall().splitlines() if b'"add"' in line]
    read = pa.concat_tables(pq.read_table(io.BytesIO(container.download_blob(f"{prefix}/{path}").readall()))
                            for path in added)
    assert sorted(read.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "name": "a"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]


def test_a_sas_in_the_connection_string_reads_the_table_with_delta_rs(adls_lake, azurite, monkeypatch):
    import datetime as dt

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
    from deltalake import DeltaTable, QueryBuilder, write_deltalake

    table = adls_lake.table("stage2np", "delta_test", "sas_read")
    write_deltalake(table, pa.table({"id": [7]}), storage_options=lake_credentials(adls_lake).delta_storage_options())
    sas = generate_account_sas(azurite.account, azurite.account_key, ResourceTypes(container=True, object=True),
                               AccountSasPermissions(read=True, list=True),
                               expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    monkeypatch.setenv(CONNECTION_STRING, f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}")
    creds = lake_credentials(adls_lake)
    assert creds.sas_token and not creds.account_key
    read = QueryBuilder().register("t", DeltaTable(table, storage_options=creds.delta_storage_options()))
    assert pa.table(read.execute("SELECT id FROM t").read_all()).to_pylist() == [{"id": 7}]


def test_a_wrong_key_is_one_line_naming_the_account_and_the_variable(adls_lake, azurite, monkeypatch):
    from deltalake import DeltaTable

    wrong = "A" * 86 + "=="
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string.replace(azurite.account_key, wrong))
    expected = (r"^storage account 'devstoreaccount1' refused the credential in AZURE_STORAGE_CONNECTION_STRING "
                r"\(403 AuthorizationFailure\): check it, or set AZURE_STORAGE_CONNECTION_STRING .*\(az login, a "
                r"managed identity\)$")
    with pytest.raises(StorageCredentialError, match=expected) as files:
        lake_filesystem(adls_lake)
    creds = lake_credentials(adls_lake)
    with pytest.raises(StorageCredentialError, match=expected):  # adlfs alone would assume they exist
        create_containers(lake_filesystem(adls_lake, check=False), creds)
    with pytest.raises(StorageCredentialError, match=expected.replace("AuthorizationFailure", r"\w+")) as delta, \
            storage_errors(creds):
        DeltaTable(adls_lake.table("stage2np", "delta_test", "students_lookup"),
                   storage_options=creds.delta_storage_options())
    for error in (files.value, delta.value):
        assert "\n" not in str(error) and wrong not in str(error) and error.source == CONNECTION_STRING
