"""Secrets from Key Vault, read by the real Azure SDK (DefaultAzureCredential, SecretClient) from a loopback vault.

The vault and its managed identity endpoint are tests/servers/keyvault.py; the token comes from
DefaultAzureCredential's ManagedIdentityCredential, as on App Service (IDENTITY_ENDPOINT, IDENTITY_HEADER).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("azure.identity")
pytest.importorskip("azure.keyvault.secrets")

from azure.core.pipeline.transport import HttpTransport

from oea_core import EdFiApiError, FlowError, SaltError, get_salt
from oea_core.edfi.api import EdFiClient
from oea_core.errors import KeyVaultError
from oea_core.flow.datasources import jdbc_options
from oea_core.flow.model import Datasource, Secret
from oea_core.intake.sftp import KNOWN_HOSTS_SETTING
from oea_core.privacy import keyvault, redaction
from oea_core.synapse.notebooks import SYNAPSE_SECRET_FILES, SYNAPSE_SECRETS
from servers.keyvault import signed_in

REPO = Path(__file__).resolve().parents[2]

SALT_VALUE = "kv-salt-value-3f9a1c77e2"
CLIENT_ID = "edfi-client-id-4471"
CLIENT_SECRET = "edfi-client-secret-value-9c2e"


@pytest.fixture
def vault(tmp_path, monkeypatch, caplog):
    """A started loopback vault; the process signs in to it through its identity endpoint, and trusts its CA."""
    monkeypatch.setattr(redaction, "_SEEN", set())
    monkeypatch.setattr(redaction, "_SECRETS", set())
    with signed_in(tmp_path, monkeypatch) as server:
        caplog.set_level(logging.DEBUG)
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_one_clean_line(exc: BaseException, url: str, name: str, caplog, *hidden: str) -> None:
    message = str(exc)
    assert "\n" not in message and url in message and repr(name) in message, message
    chain = []
    current: BaseException | None = exc
    while current is not None:
        chain.append(str(current))
        current = current.__cause__
    assert len(chain) >= 3, chain  # the caller's error, KeyVaultError, the SDK's
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for value in hidden:
        assert all(value not in text for text in chain), chain
        assert value not in logged


def test_the_salt_comes_from_key_vault_with_a_managed_identity_token(vault, lake):
    vault.secrets[keyvault.SALT] = SALT_VALUE
    salt = get_salt(lake, environ={"OEA_KEYVAULT_URL": vault.url})
    assert salt.reveal() == SALT_VALUE
    assert salt.origin == f"Key Vault {vault.url} secret oeaSalt"
    # challenge first (no token), then the token the identity endpoint issued for the challenge's resource
    assert vault.requests == [("/secrets/oeaSalt/", False), ("/secrets/oeaSalt/", True)]  # latest version: no version
    assert [request["resource"] for request in vault.token_requests] == [[vault.resource]]
    assert redaction.redact(f"salt {SALT_VALUE}") == "salt <salt>"


def test_the_edfi_client_takes_its_credentials_from_key_vault(vault):
    vault.secrets |= {keyvault.EDFI_CLIENT_ID: CLIENT_ID, keyvault.EDFI_CLIENT_SECRET: CLIENT_SECRET}
    client = EdFiClient("https://edfi.example/api")
    assert (client.client_id, client._secret) == (CLIENT_ID, CLIENT_SECRET)
    assert len(vault.token_requests) == 1  # one client and one credential per vault, reused
    assert redaction.redact(f"{CLIENT_ID}:{CLIENT_SECRET}") == "<secret>:<secret>"


def test_a_flow_datasource_password_comes_from_key_vault(vault):
    vault.secrets["sis-password"] = CLIENT_SECRET
    datasource = Datasource("sis", "jdbc:postgresql://db/sis", None, Secret(vault=vault.url, secret="sis-password"))
    assert jdbc_options(datasource, {"table": "t"}, {})["password"] == CLIENT_SECRET


def test_environment_variables_come_before_the_vault_which_is_not_called(vault, lake, monkeypatch):
    vault.secrets |= {keyvault.SALT: SALT_VALUE, keyvault.EDFI_CLIENT_ID: "from-vault-id",
                      keyvault.EDFI_CLIENT_SECRET: "from-vault-secret"}
    monkeypatch.setenv("OEA_EDFI_CLIENT_ID", "from-env-id")
    monkeypatch.setenv("OEA_EDFI_CLIENT_SECRET", "from-env-secret-1234")
    client = EdFiClient("https://edfi.example/api")
    salt = get_salt(lake, environ={"OEA_SALT": "from-env-salt-0123456", "OEA_KEYVAULT_URL": vault.url})
    assert (client.client_id, client._secret, salt.reveal()) == ("from-env-id", "from-env-secret-1234",
                                                                  "from-env-salt-0123456")
    assert salt.origin == "environment variable OEA_SALT"
    assert vault.requests == [] and vault.token_requests == []


def test_the_secret_names_and_their_variables_are_exported():
    assert keyvault.ENV_VARIABLES == {"oeaSalt": "OEA_SALT", "oeaEdFiClientId": "OEA_EDFI_CLIENT_ID",
                                      "oeaEdFiClientSecret": "OEA_EDFI_CLIENT_SECRET",
                                      "oeaSftpPassword": "OEA_SFTP_PASSWORD"}
    assert keyvault.secret("oeaSalt", environ={}) is None  # neither set: the caller says what to set


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", (r"^secret 'oeaSalt' not found in Key Vault {url}: add it with `az keyvault secret set --vault-name "
                r"<vault name> --name oeaSalt --value \.\.\.`$")),
    ("forbidden", r"^secret 'oeaSalt' in Key Vault {url}: forbidden, this identity lacks get permission on secrets"),
    ("expired", (r"^secret 'oeaSalt' in Key Vault {url}: authentication failed, the vault refused the token "
                r"\(expired, revoked or from another tenant\): sign in again")),
    ("garbled", r"^secret 'oeaSalt' in Key Vault {url}: the vault answered HTTP 200 \(DecodeError\)$"),
    ("no token", (r"^secret 'oeaSalt' in Key Vault {url}: authentication failed, no Azure credential could get a "
                  r"token \(ClientAuthenticationError\): sign in again")),
], ids=["missing", "forbidden", "expired", "garbled", "no token"])
def test_a_vault_that_does_not_give_the_salt_is_one_line_naming_vault_and_secret(vault, lake, caplog, monkeypatch,
                                                                                  case, expected):
    vault.secrets["other"] = "another-secret-value-77"
    if case != "missing":
        vault.secrets[keyvault.SALT] = SALT_VALUE
    if case == "forbidden":
        vault.forbidden.add(keyvault.SALT)
    elif case == "expired":
        vault.token_lifetime = -60  # the identity endpoint's tokens are already expired when the vault sees them
    elif case == "no token":
        monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")  # the identity endpoint refuses: no token at all
        keyvault._forget_clients()
    elif case == "garbled":
        vault.garbled.add(keyvault.SALT)  # 200, but the body is not JSON (and holds the value)
    with pytest.raises(SaltError, match=expected.format(url=vault.url)) as info:
        get_salt(lake, environ={"OEA_KEYVAULT_URL": vault.url})
    assert isinstance(info.value.__cause__, KeyVaultError) and info.value.__cause__.reason == {
        "missing": "not_found", "forbidden": "forbidden", "expired": "authentication", "garbled": "failed",
        "no token": "authentication"}[case]
    assert_one_clean_line(info.value, vault.url, keyvault.SALT, caplog, SALT_VALUE, "another-secret-value-77")
    assert not os.path.exists(lake.secret_file)


@pytest.mark.parametrize(("trusted", "kind"), [(True, "connection refused"), (False, "TLS failed")])
def test_an_unreachable_vault_is_one_line_naming_vault_and_secret(vault, caplog, monkeypatch, trusted, kind):
    # azure-core retries a failed connection 3 times with backoff (about 5 s): the same tries, without the waits
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)
    url = f"https://127.0.0.1:{closed_port()}" if trusted else vault.url
    if not trusted:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("OEA_KEYVAULT_URL", url)
    vault.secrets[keyvault.EDFI_CLIENT_ID] = CLIENT_ID
    with pytest.raises(EdFiApiError, match=rf"^Ed-Fi API credentials: secret 'oeaEdFiClientId' in Key Vault {url}: "
                                           rf"the vault cannot be reached, {kind}") as info:
        EdFiClient("https://edfi.example/api")
    assert_one_clean_line(info.value, url, keyvault.EDFI_CLIENT_ID, caplog, CLIENT_ID)


def test_a_missing_datasource_password_names_the_datasource_vault_and_secret(vault, caplog):
    datasource = Datasource("sis", "jdbc:postgresql://db/sis", None, Secret(vault=vault.url, secret="sis-password"))
    with pytest.raises(FlowError, match=rf"^datasource sis: its password: secret 'sis-password' not found in Key "
                                        rf"Vault {vault.url}: add it with"):
        jdbc_options(datasource, {"table": "t"}, {})


def test_without_vault_or_variables_the_edfi_error_names_both_ways(monkeypatch):
    for name in ("OEA_EDFI_CLIENT_ID", "OEA_EDFI_CLIENT_SECRET", "OEA_KEYVAULT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(EdFiApiError, match=r"^no Ed-Fi API credentials: set OEA_EDFI_CLIENT_ID and "
                                           r"OEA_EDFI_CLIENT_SECRET in the environment, or OEA_KEYVAULT_URL to a Key "
                                           r"Vault holding secrets oeaEdFiClientId and oeaEdFiClientSecret"):
        EdFiClient("https://edfi.example/api")


def test_the_synapse_setup_and_docs_read_the_same_secrets_into_the_same_variables():
    # tests/synapse holds the set-up cell of every generated notebook to SYNAPSE_SECRETS
    pairs = {secret: env for env, secret in SYNAPSE_SECRETS}
    files = {secret: env for env, secret in SYNAPSE_SECRETS if env in SYNAPSE_SECRET_FILES}
    assert {k: v for k, v in pairs.items() if k not in files} == keyvault.ENV_VARIABLES
    # the one secret Synapse writes to a file is what `oea land clever sftp://` reads as a file locally
    assert files == {keyvault.SFTP_KNOWN_HOSTS: KNOWN_HOSTS_SETTING}
    table = (REPO / "docs" / "synapse.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in table for name in keyvault.ENV_VARIABLES)
