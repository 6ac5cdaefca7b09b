"""The salt: its lookup order, the per-lake secret file, and that it is never shown."""

from __future__ import annotations

import os
import stat

import pytest

from oea_core import LakePaths, Salt, SaltError, get_salt
from oea_core.salt import redact


def test_environment_wins(lake, monkeypatch):
    monkeypatch.setenv("OEA_SALT", "from-env-77")
    salt = get_salt(lake)
    assert salt.reveal() == "from-env-77" and "OEA_SALT" in salt.origin
    assert not os.path.exists(lake.secret_file)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_salt_is_an_error_naming_its_origin(lake, value):
    with pytest.raises(SaltError, match="environment variable OEA_SALT is empty"):
        get_salt(lake, environ={"OEA_SALT": value})


def test_secret_file_is_created_owner_only_and_reused(lake):
    first = get_salt(lake, environ={})
    assert stat.S_IMODE(os.stat(lake.secret_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(lake.secret_file)).st_mode) == 0o700
    assert len(first.reveal()) == 24  # 16 random bytes, base64
    assert get_salt(lake, environ={}).reveal() == first.reveal()
    other = LakePaths.from_setting(os.path.join(lake.root, "..", "other-lake"))
    assert get_salt(other, environ={}).reveal() != first.reveal()


def test_a_secret_file_others_can_read_is_refused(lake):
    get_salt(lake, environ={})
    os.chmod(lake.secret_file, 0o644)
    with pytest.raises(SaltError, match="readable by others.*chmod 600"):
        get_salt(lake, environ={})


def test_adls_lake_needs_env_or_keyvault():
    with pytest.raises(SaltError, match="set OEA_SALT or OEA_KEYVAULT_URL"):
        get_salt(LakePaths.from_setting("abfss://stage1np@acct001.dfs.core.windows.net"), environ={})


def test_unreachable_keyvault_is_a_clear_error_without_the_salt_file(lake):
    url = "https://127.0.0.1:9/"
    with pytest.raises(SaltError, match="could not read secret 'oeaSalt' from Key Vault https://127.0.0.1:9/"):
        get_salt(lake, environ={"OEA_KEYVAULT_URL": url})
    assert not os.path.exists(lake.secret_file)


def test_salt_is_hidden_in_repr_str_and_format():
    salt = Salt("s3cr3t-value", "test")
    for text in (repr(salt), str(salt), f"{salt}", f"{salt!r}", str([salt])):
        assert "s3cr3t-value" not in text and "<hidden>" in text


def test_redact_scrubs_every_salt_seen():
    Salt("first-salt-abc", "test")
    Salt("second-salt-xyz", "test")
    text = redact("failed: concat(sis_id, 'first-salt-abc') and second-salt-xyz")
    assert "first-salt-abc" not in text and "second-salt-xyz" not in text
    assert text.count("<salt>") == 2
