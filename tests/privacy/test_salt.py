"""The salt: its lookup order, the per-lake secret file, its length, the lake's fingerprint of it, and that
it is never shown (nor garbles a message when hidden)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from oea_core import LakePaths, Salt, SaltError, get_salt
from oea_core.privacy import redaction as redaction_module
from oea_core.privacy import salt as salt_module
from oea_core.privacy.redaction import redact, remember_secret
from oea_testing.full_disk import files, free

REPO = Path(__file__).resolve().parents[2]
ENV_SALT = "from-env-salt-77aa"
OTHER_SALT = "a-different-salt-9f3c"


@pytest.fixture(autouse=True)
def _own_redaction_registry(monkeypatch):
    """Salts registered here ("x", "salt") must not leak into other tests' redaction."""
    monkeypatch.setattr(redaction_module, "_SEEN", set())
    monkeypatch.setattr(redaction_module, "_SECRETS", set())
    monkeypatch.delenv("OEA_ALLOW_SHORT_SALT", raising=False)


def fingerprint_file(lake: LakePaths) -> Path:
    return Path(lake.state_path(salt_module.FINGERPRINT_FILE))


def lake_files(lake: LakePaths) -> dict[str, tuple[int, int]]:
    root = Path(lake.root)
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)  # the lock file is not data
            for p in root.rglob("*") if p.is_file() and p.parent.name != "locks"} if root.exists() else {}


def test_environment_wins(lake, monkeypatch):
    monkeypatch.setenv("OEA_SALT", ENV_SALT)
    salt = get_salt(lake)
    assert salt.reveal() == ENV_SALT and "OEA_SALT" in salt.origin
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
    assert [p.name for p in Path(lake.secret_file).parent.iterdir()] == ["salt"], "no temporary files left"


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
    with pytest.raises(SaltError, match=r"^secret 'oeaSalt' in Key Vault https://127.0.0.1:9/: the vault cannot be reached"):
        get_salt(lake, environ={"OEA_KEYVAULT_URL": url})
    assert not os.path.exists(lake.secret_file)


def test_salt_is_hidden_in_repr_str_and_format():
    salt = Salt("s3cr3t-value", "test")
    for text in (repr(salt), str(salt), f"{salt}", f"{salt!r}", str([salt])):
        assert "s3cr3t-value" not in text and "<hidden>" in text


# --- drift: one lake, one salt ------------------------------------------------------------------------


def test_a_run_without_oea_salt_after_one_with_it_is_refused_and_writes_nothing(lake):
    get_salt(lake, environ={"OEA_SALT": ENV_SALT})
    before = lake_files(lake)
    with pytest.raises(SaltError) as caught:
        get_salt(lake, environ={})
    message = str(caught.value)
    assert message.startswith(f"salt file {lake.secret_file} is missing, but lake {lake.root} records a salt "
                              f"fingerprint in {fingerprint_file(lake)}")
    assert "nothing was written" in message and "\n" not in message
    assert "OEA_SALT" in message and "Key Vault secret 'oeaSalt' (set OEA_KEYVAULT_URL)" in message
    assert not os.path.exists(lake.secret_file) and lake_files(lake) == before
    assert get_salt(lake, environ={"OEA_SALT": ENV_SALT}).reveal() == ENV_SALT, "the right salt still works"


def test_another_salt_is_refused_naming_where_each_came_from(lake):
    lake_salt = get_salt(lake, environ={}).reveal()
    before = lake_files(lake)
    with pytest.raises(SaltError) as caught:
        get_salt(lake, environ={"OEA_SALT": OTHER_SALT})
    message = str(caught.value)
    assert re.match(
        rf"the salt from environment variable OEA_SALT is not the salt of lake {re.escape(lake.root)}, whose "
        rf"pseudonyms were made with the salt first recorded \d{{4}}-\d\d-\d\dT[\d:]+\+00:00 from salt file "
        rf"{re.escape(lake.secret_file)} \(fingerprint in {re.escape(str(fingerprint_file(lake)))}\); "
        rf"nothing was written: supply the lake's salt through OEA_SALT, or Azure Key Vault secret 'oeaSalt'", message)
    assert OTHER_SALT not in message and lake_salt not in message
    assert lake_files(lake) == before
    assert get_salt(lake, environ={"OEA_SALT": lake_salt}).reveal() == lake_salt, "the lake's salt, from anywhere"


def test_a_lake_with_stage2_data_but_no_salt_file_gets_no_new_salt(lake):
    table = Path(lake.table("stage2p", "clever", "daily_participation_pseudo"))
    table.mkdir(parents=True)
    (table / "part-00000.parquet").write_bytes(b"PAR1")
    with pytest.raises(SaltError, match=r"salt file .* is missing, but lake .* already holds stage 2 data: a new "
                                        r"salt would give every identity a second pseudonym"):
        get_salt(lake, environ={})
    assert not os.path.exists(lake.secret_file) and not fingerprint_file(lake).exists()


def test_a_damaged_fingerprint_is_an_error_naming_the_file(lake):
    get_salt(lake, environ={"OEA_SALT": ENV_SALT})
    fingerprint_file(lake).write_text('{"algorithm": "md5"}')
    with pytest.raises(SaltError, match=f"salt fingerprint file {re.escape(str(fingerprint_file(lake)))} is damaged"):
        get_salt(lake, environ={"OEA_SALT": ENV_SALT})


def _race(root: str, environ: dict[str, str], go, results) -> None:
    go.wait()
    try:
        results.put(("ok", hashlib.sha256(get_salt(LakePaths(root=root), environ).reveal().encode()).hexdigest()))
    except SaltError as exc:
        results.put(("refused", str(exc)))


@pytest.mark.parametrize("different_salts", [True, False], ids=["six-salts", "no-salt-yet"])
def test_runs_racing_to_record_the_first_salt_agree_on_one(lake, different_salts):
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    envs = [{"OEA_SALT": f"racing-salt-{i:02d}-abcdef"} if different_salts else {} for i in range(6)]
    workers = [context.Process(target=_race, args=(lake.root, env, go, results)) for env in envs]
    for worker in workers:
        worker.start()
    go.set()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    won = [value for kind, value in outcomes if kind == "ok"]
    if different_salts:
        assert len(won) == 1, outcomes
        assert all("is not the salt of lake" in value for kind, value in outcomes if kind == "refused")
    else:
        assert len(won) == 6 and len(set(won)) == 1, outcomes
    assert json.loads(fingerprint_file(lake).read_text())["algorithm"] == "pbkdf2-hmac-sha256"
    assert not [p for p in Path(lake.root).rglob("*.tmp")], "no temporary files left"


def test_the_fingerprint_holds_neither_the_salt_nor_a_simple_hash_of_it(lake, tmp_path):
    get_salt(lake, environ={"OEA_SALT": ENV_SALT})
    text = fingerprint_file(lake).read_text()
    record = json.loads(text)
    assert record["algorithm"] == "pbkdf2-hmac-sha256" and record["version"] == 1
    assert record["iterations"] >= 100_000 and len(bytes.fromhex(record["nonce"])) == 16
    assert record["recorded_from"] == "environment variable OEA_SALT" and record["recorded_at"]
    raw = ENV_SALT.encode()
    cheap = {ENV_SALT, ENV_SALT.lower(), raw.hex(), base64.b64encode(raw).decode()}
    labels = [b"", b"oea", b"salt", b"fingerprint", b"oea-core salt fingerprint v1:", bytes.fromhex(record["nonce"])]
    for name in ("md5", "sha1", "sha256", "sha512", "sha3_256", "blake2b"):
        for label in labels:
            cheap |= {hashlib.new(name, raw + label).hexdigest(), hashlib.new(name, label + raw).hexdigest()}
            cheap.add(hmac.new(raw, label, name).hexdigest())
            cheap.add(hmac.new(label or b"k", raw, name).hexdigest())
    assert not [value for value in cheap if value.lower() in text.lower()]
    same_salt_elsewhere = LakePaths.from_setting(tmp_path / "other-lake")
    get_salt(same_salt_elsewhere, environ={"OEA_SALT": ENV_SALT})
    other = json.loads(fingerprint_file(same_salt_elsewhere).read_text())
    assert other["fingerprint"] != record["fingerprint"], "a random nonce: no table of fingerprints fits two lakes"


# --- length -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["env", "file"])
def test_a_short_salt_is_refused_saying_why_and_how_to_make_one(lake, origin):
    environ = {"OEA_SALT": "pepper-91"} if origin == "env" else {}
    if origin == "file":
        os.makedirs(os.path.dirname(lake.secret_file), mode=0o700)
        fd = os.open(lake.secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"pepper-91\n")
        os.close(fd)
    with pytest.raises(SaltError) as caught:
        get_salt(lake, environ=environ)
    message = str(caught.value)
    assert "has 9 characters; at least 16 are needed, because short identifiers hashed with a short salt can be " \
           "brute-forced" in message
    assert 'python -c "import secrets,base64;print(base64.b64encode(secrets.token_bytes(16)).decode())"' in message
    assert message.endswith("keep an existing OEA salt by setting OEA_ALLOW_SHORT_SALT=1")
    assert "pepper-91" not in message and not fingerprint_file(lake).exists()


def test_the_length_limit_is_sixteen_characters(lake):
    with pytest.raises(SaltError, match="has 15 characters"):
        get_salt(lake, environ={"OEA_SALT": "x" * 15})
    assert get_salt(lake, environ={"OEA_SALT": "x" * 16}).reveal() == "x" * 16


@pytest.mark.parametrize("setting", ["1", "true", "YES"])
def test_an_existing_short_oea_salt_is_kept_only_with_the_override(lake, monkeypatch, setting):
    monkeypatch.setenv("OEA_ALLOW_SHORT_SALT", setting)  # the environment, as notebooks and flows see it
    monkeypatch.setenv("OEA_SALT", "pepper-91")
    assert get_salt(lake).reveal() == "pepper-91"
    assert fingerprint_file(lake).exists(), "a short salt is fingerprinted like any other"
    with pytest.raises(SaltError, match="is not the salt of lake"):
        get_salt(lake, environ={"OEA_SALT": "pepper-92", "OEA_ALLOW_SHORT_SALT": "1"})


def test_an_override_value_that_is_not_understood_is_named(lake):
    with pytest.raises(SaltError, match="OEA_ALLOW_SHORT_SALT='maybe' is not understood: set it to 1 or unset it"):
        get_salt(lake, environ={"OEA_SALT": "pepper-91", "OEA_ALLOW_SHORT_SALT": "maybe"})


# --- redaction ----------------------------------------------------------------------------------------


def test_redact_scrubs_every_salt_seen():
    Salt("first-salt-abc", "test")
    Salt("second-salt-xyz", "test")
    text = redact("failed: concat(sis_id, 'first-salt-abc') and second-salt-xyz")
    assert "first-salt-abc" not in text and "second-salt-xyz" not in text
    assert text.count("<salt>") == 2


LONG = "pepper-91-long-salt"


@pytest.mark.parametrize("salts, secrets, text, expected", [
    (["x"], [], "exist", "exist"),  # a short value never breaks a word
    (["x"], [], "does x exist? (x)", "does <salt> exist? (<salt>)"),
    (["x"], [], "x_pseudonym, max(x1), éxé", "x_pseudonym, max(x1), éxé"),
    (["salt"], [], "the salt file", "the <salt> file"),  # a common word as a salt: whole words still hidden
    (["a.b"], [], "axb a.b", "axb <salt>"),  # the value is text, not a pattern
    ([LONG], [], f"concat(id, '{LONG}')", "concat(id, '<salt>')"),
    ([LONG], [], f"S001{LONG}", "S001<salt>"),  # a long value is hidden anywhere, e.g. inside hashed input
    ([LONG], [], LONG.upper(), LONG.upper()),
    ([LONG, "salt"], [], f"'{LONG}' and salt", "'<salt>' and <salt>"),  # a replacement is not scanned again
    ([LONG, "pepper"], [], f"{LONG}, pepper", "<salt>, <salt>"),
    ([], ["tok3n"], "Bearer tok3n; tok3ns", "Bearer <secret>; tok3ns"),
    (["abcdefgh"], ["abcdefghij"], "abcdefghij abcdefgh", "<secret> <salt>"),  # the longest value wins
    (["x"], [], "", ""),
    ([], [], "nothing to hide", "nothing to hide"),
])
def test_redaction_hides_whole_values_and_never_garbles_the_rest(salts, secrets, text, expected):
    for value in salts:
        Salt(value, "test")
    for value in secrets:
        remember_secret(value)
    assert redact(text) == expected


# --- end to end ---------------------------------------------------------------------------------------


@pytest.mark.spark
def test_oea_ingest_after_unsetting_oea_salt_is_refused_and_changes_nothing(tmp_path):
    lake = os.path.realpath(tmp_path / "lake")

    def oea(*args: str, salt: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("OEA_SALT", "OEA_ALLOW_SHORT_SALT")}
        env.update({"OEA_SALT": salt} if salt else {})
        return subprocess.run([sys.executable, "-m", "oea_core.cli", "--lake", lake, *args], check=False,
                              capture_output=True, text=True, env=env, timeout=600)

    assert oea("land", "clever", str(REPO / "test_data" / "clever"), salt=None).returncode == 0
    first = oea("ingest", "clever", salt=ENV_SALT)
    assert first.returncode == 0, first.stderr
    before = lake_files(LakePaths(root=lake))
    again = oea("ingest", "clever", salt=None)
    assert again.returncode == 1, again.stdout + again.stderr
    assert again.stderr.strip().startswith(f"oea: error: salt file {lake}/.oea/salt is missing, but lake {lake} "
                                           "records a salt fingerprint")
    assert len(again.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(lake, ".oea", "salt"))
    assert lake_files(LakePaths(root=lake)) == before
    assert ENV_SALT not in first.stdout + first.stderr + again.stdout + again.stderr


def test_a_full_disk_while_making_the_salt_file_is_one_line_and_leaves_no_salt_file(full_lake):
    lake, mount = full_lake
    with pytest.raises(SaltError) as caught:
        get_salt(lake, environ={})
    message = str(caught.value)
    assert "\n" not in message and "full" in message and lake.secret_file in message and "free space" in message
    assert files(mount) == {}, "no empty or half-written salt file, and no temporary file, is left"
    free(mount)
    assert len(get_salt(lake, environ={}).reveal()) == 24, "with room again, the salt is made as on a new lake"


def test_a_full_disk_while_recording_the_fingerprint_is_one_line_and_leaves_no_fingerprint(full_lake):
    lake, mount = full_lake
    with pytest.raises(SaltError) as caught:
        get_salt(lake, environ={"OEA_SALT": ENV_SALT})
    message = str(caught.value)
    assert "\n" not in message and "full" in message and str(fingerprint_file(lake)) in message
    assert ENV_SALT not in message
    assert files(mount) == {}, "no empty or half-written fingerprint, and no temporary file, is left"
    free(mount)
    get_salt(lake, environ={"OEA_SALT": ENV_SALT})
    with pytest.raises(SaltError, match="is not the salt of lake"):
        get_salt(lake, environ={"OEA_SALT": OTHER_SALT})
