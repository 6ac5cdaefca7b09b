"""Landing Clever reports from a real OpenSSH server (tests/servers/sftp.py): incremental, resumed, refused."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess

import pytest

from oea_core import LakePaths, LandingError, RetryPolicy, SftpError, SftpSource, land_sftp
from oea_core.clever import CleverModule
from oea_core.clever.generator import generate_clever_export
from oea_core.cli import main
from oea_core.intake.landing import MANIFEST, list_batches
from oea_core.intake.sftp import LEDGER
from servers.sftp import DropProxy, give_to_server, write_known_hosts

FAST = RetryPolicy(attempts=3, backoff=0.01, timeout=10, sleep=lambda _s: None)


# helpers ------------------------------------------------------------------------------------------
@pytest.fixture
def remote(sshd, request):
    """A fresh folder on the server for this test: ``(local path, absolute remote path)``."""
    folder = os.path.join(sshd.data, request.node.name.replace("[", "_").replace("]", "_"))
    os.makedirs(folder)
    give_to_server(sshd, folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ssh_env(sshd, monkeypatch):
    """Known hosts and a credential for the server: its password when it can check one, else the key."""
    monkeypatch.setenv("OEA_SFTP_KNOWN_HOSTS", sshd.known_hosts)
    if sshd.password:
        monkeypatch.setenv("OEA_SFTP_PASSWORD", sshd.password)
    else:
        monkeypatch.setenv("OEA_SFTP_KEY_FILE", sshd.key_file)
    return sshd


def clever_days(tmp_path, days: int) -> dict[str, list[str]]:
    """A generated Clever drop of ``days`` school days: ``date -> relative paths``, under tmp_path/drop."""
    export = generate_clever_export(tmp_path / "drop", students=6, teachers=1, staff=1, days=days, quirks=False)
    by_day: dict[str, list[str]] = {}
    for path in export.files:
        relative = os.path.relpath(path, tmp_path / "drop")
        by_day.setdefault(os.path.basename(relative)[:10], []).append(relative)
    return dict(sorted(by_day.items()))


def put(sshd, tmp_path, folder: str, relatives: list[str]) -> None:
    for relative in relatives:
        os.makedirs(os.path.join(folder, os.path.dirname(relative)), exist_ok=True)
        shutil.copy(tmp_path / "drop" / relative, os.path.join(folder, relative))
    give_to_server(sshd, folder)


def url(sshd, folder: str, port: int | None = None) -> str:
    return sshd.url(folder, port)


def stage1np(lake) -> dict[str, list[str]]:
    """``report -> batch ids`` of the lake's Clever stage1np (the ledger left out)."""
    root = lake.path("stage1np", "clever")
    if not os.path.isdir(root):
        return {}
    return {t: list_batches(lake, "clever", t) for t in sorted(os.listdir(root)) if t != LEDGER}


def manifests(lake) -> list[dict]:
    found = []
    for table, batches in stage1np(lake).items():
        for batch in batches:
            with open(lake.path("stage1np", "clever", table, batch, MANIFEST), encoding="utf-8") as handle:
                found.append(json.load(handle))
    return found


def sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def distinct(folder: str, relatives: list[str]) -> int:
    """How many different contents the files have (a header-only file repeats another's bytes)."""
    return len({sha256(os.path.join(folder, r)) for r in relatives})


def part_bytes(lake: LakePaths) -> int:
    """The bytes of the ``.part`` downloads in the lake's SFTP download folders (one renamed meanwhile counts 0)."""
    total = 0
    for folder, _d, names in os.walk(os.path.join(lake.root, ".oea", "sftp")):
        for name in (n for n in names if n.endswith(".part")):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(os.path.join(folder, name))
    return total


def proxied(sshd, tmp_path, monkeypatch, lake, **drops) -> DropProxy:
    """A DropProxy to the server, its port in a known_hosts file of its own; each cut waits until the
    download saved part of the file it cut."""
    proxy = DropProxy(sshd.port, kept=lambda: part_bytes(lake), **drops)
    write_known_hosts(str(tmp_path / "known_hosts"), sshd.port, sshd.host_key_pub, proxy.port)
    monkeypatch.setenv("OEA_SFTP_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    return proxy


def big_report(folder: str, rows: int = 60_000) -> str:
    """A daily-participation file of a few megabytes, so a connection can be cut in the middle of it."""
    relative = "daily-participation/2022-02-01-daily-participation-students.csv"
    os.makedirs(os.path.join(folder, "daily-participation"), exist_ok=True)
    with open(os.path.join(folder, relative), "w", encoding="utf-8") as handle:
        handle.write("date,sis_id,clever_user_id,clever_school_id,school_name,active,num_logins,"
                     "num_resources_accessed\n")
        handle.writelines(f"2022-02-01,s{row:07d},u{row:07d},sch1,Lincoln Elementary,true,{row % 5},{row % 3}\n" for row in range(rows))
    return relative


# first land, second land, a new day --------------------------------------------------------------
def test_a_first_land_lands_every_report_and_a_second_downloads_nothing(ssh_env, remote, lake, tmp_path):
    days = clever_days(tmp_path, 2)
    files = [f for day in days.values() for f in day]
    put(ssh_env, tmp_path, remote, files)
    module = CleverModule(lake)

    first = land_sftp(module, url(ssh_env, remote), retry=FAST)

    assert first.land is not None and first.land.batch_id
    assert sorted(first.downloaded) == sorted(files)
    assert first.downloaded_bytes == sum(os.path.getsize(os.path.join(remote, f)) for f in files)
    landed = {e["remote"]["path"]: e for m in manifests(lake) for e in m["files"]}
    distinct = {sha256(os.path.join(remote, f)) for f in files}  # a header-only file repeats another's bytes
    assert sorted([*landed, *first.skipped]) == sorted(files) and len(landed) == len(distinct)
    for relative, entry in landed.items():  # the remote facts ride in the batch's own manifest
        info = os.stat(os.path.join(remote, relative))
        assert (entry["remote"]["size"], entry["remote"]["mtime"]) == (info.st_size, int(info.st_mtime))
        assert entry["sha256"] == sha256(os.path.join(remote, relative))
    assert [names for _p, _d, names in os.walk(os.path.join(lake.root, ".oea", "sftp")) if names] == []
    before = stage1np(lake)

    second = land_sftp(module, url(ssh_env, remote), retry=FAST)

    assert second.downloaded == () and second.downloaded_bytes == 0
    assert second.land is None and sorted(second.unchanged) == sorted(files)
    assert stage1np(lake) == before
    assert "nothing new" in second.summary() and "downloaded 0 files (0 bytes)" in second.summary()


def test_a_new_day_on_the_server_downloads_only_that_days_files(ssh_env, remote, lake, tmp_path):
    days = clever_days(tmp_path, 3)
    first_days, new_day = list(days)[:2], list(days)[2]
    put(ssh_env, tmp_path, remote, [f for d in first_days for f in days[d]])
    module = CleverModule(lake)
    land_sftp(module, url(ssh_env, remote), retry=FAST)
    put(ssh_env, tmp_path, remote, days[new_day])

    result = land_sftp(module, url(ssh_env, remote), retry=FAST)

    assert sorted(result.downloaded) == sorted(days[new_day])
    new = {e["remote"]["path"] for m in manifests(lake) for e in m["files"] if m["batch_id"] == result.land.batch_id}
    assert new and new | set(result.skipped) == set(days[new_day])
    assert all(len(batches) == 2 for batches in stage1np(lake).values())


def test_a_file_landed_before_under_another_name_is_downloaded_once_then_recorded(ssh_env, remote, lake, tmp_path):
    days = clever_days(tmp_path, 1)
    (first, *_rest) = files = days[next(iter(days))]
    put(ssh_env, tmp_path, remote, files)
    module = CleverModule(lake)
    land_sftp(module, url(ssh_env, remote), retry=FAST)
    copy = first.replace(".csv", "-copy.csv")
    shutil.copy(os.path.join(remote, first), os.path.join(remote, copy))
    give_to_server(ssh_env, remote)

    again = land_sftp(module, url(ssh_env, remote), retry=FAST)
    third = land_sftp(module, url(ssh_env, remote), retry=FAST)

    assert again.downloaded == (copy,) and again.skipped == (copy,)
    assert again.land is not None and again.land.batch_id is None  # same bytes: no new batch
    assert third.downloaded == ()  # the ledger remembers the skipped download
    assert all(len(batches) == 1 for batches in stage1np(lake).values())


# a dropped connection -----------------------------------------------------------------------------
def test_a_connection_cut_mid_file_is_retried_and_resumed(ssh_env, remote, lake, caplog, tmp_path, monkeypatch):
    relative = big_report(remote)
    give_to_server(ssh_env, remote)
    size = os.path.getsize(os.path.join(remote, relative))
    proxy = proxied(ssh_env, tmp_path, monkeypatch, lake, after=size // 3)
    waits: list[float] = []
    retry = RetryPolicy(attempts=3, backoff=0.5, timeout=10, sleep=waits.append)
    try:
        with caplog.at_level(logging.INFO, logger="oea"):
            result = land_sftp(CleverModule(lake), url(ssh_env, remote, proxy.port), retry=retry)
    finally:
        proxy.close()

    assert proxy.cut == 1 and result.connections == 2 and result.retries == 1 and waits == [0.5]
    assert result.downloaded_bytes == size  # resumed from the .part's offset, not downloaded again
    assert any("resuming" in r.getMessage() and relative in r.getMessage() for r in caplog.records)
    (entry,) = [e for m in manifests(lake) for e in m["files"]]
    landed = lake.path("stage1np", "clever", "daily-participation", result.land.batch_id, *entry["path"].split("/"))
    assert sha256(landed) == sha256(os.path.join(remote, relative)) == entry["sha256"]


def test_retries_used_up_leave_stage1np_unchanged_and_the_next_run_resumes(ssh_env, remote, lake, caplog, tmp_path,
                                                                           monkeypatch):
    relative = big_report(remote)
    give_to_server(ssh_env, remote)
    size = os.path.getsize(os.path.join(remote, relative))
    proxy = proxied(ssh_env, tmp_path, monkeypatch, lake, after=size // 4, drops=100)
    waits: list[float] = []
    retry = RetryPolicy(attempts=2, backoff=1.0, timeout=10, sleep=waits.append)
    try:
        with pytest.raises(SftpError, match="failed 2 times while downloading .*nothing was landed"):
            land_sftp(CleverModule(lake), url(ssh_env, remote, proxy.port), retry=retry)

        assert waits == [1.0] and stage1np(lake) == {}
        parts = [os.path.join(p, n) for p, _d, names in os.walk(os.path.join(lake.root, ".oea", "sftp"))
                 for n in names if n.endswith(".part")]
        assert len(parts) == 1 and 0 < os.path.getsize(parts[0]) < size
        kept = os.path.getsize(parts[0])
        proxy.drops = 0  # the network is back: the same URL, nothing cut
        with caplog.at_level(logging.INFO, logger="oea"):
            result = land_sftp(CleverModule(lake), url(ssh_env, remote, proxy.port), retry=FAST)
    finally:
        proxy.close()
    assert result.downloaded_bytes == size - kept
    assert any(f"resuming {relative} at byte {kept}" in r.getMessage() for r in caplog.records)
    (entry,) = [e for m in manifests(lake) for e in m["files"]]
    assert entry["sha256"] == sha256(os.path.join(remote, relative))


# refused ------------------------------------------------------------------------------------------
def test_an_unknown_or_changed_host_key_is_refused_with_its_fingerprint(ssh_env, remote, lake, tmp_path,
                                                                      monkeypatch):
    server_pub = ssh_env.host_key_pub
    with open(server_pub, encoding="utf-8") as handle:
        blob = base64.b64decode(handle.read().split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    shown = subprocess.run(["ssh-keygen", "-lf", server_pub], check=True, capture_output=True, text=True).stdout
    assert expected in shown  # the form OpenSSH shows
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed = tmp_path / "known_hosts_changed"
    write_known_hosts(str(changed), ssh_env.port, f"{other}.pub")
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    for known_hosts, what in ((changed, "has changed"), (empty, "is not known")):
        monkeypatch.setenv("OEA_SFTP_KNOWN_HOSTS", str(known_hosts))
        with pytest.raises(SftpError) as caught:
            land_sftp(CleverModule(lake), url(ssh_env, remote), retry=FAST)
        message = str(caught.value)
        assert f"127.0.0.1:{ssh_env.port} (ssh-ed25519 {expected}) {what}" in message
        assert str(known_hosts) in message and "ssh-keyscan -p" in message
        assert "\n" not in message and caught.value.url == url(ssh_env, remote)
    assert stage1np(lake) == {} and empty.read_text() == ""  # never added


def test_a_wrong_password_is_one_clear_line_without_the_password(ssh_env, remote, lake, monkeypatch, caplog):
    if not ssh_env.password:
        pytest.skip(ssh_env.no_password_reason)
    monkeypatch.delenv("OEA_SFTP_KEY_FILE", raising=False)
    monkeypatch.setenv("OEA_SFTP_PASSWORD", "not-the-Secret-123")
    with caplog.at_level(logging.DEBUG), pytest.raises(SftpError) as caught:
        land_sftp(CleverModule(lake), url(ssh_env, remote), retry=FAST)
    assert str(caught.value) == (f"{url(ssh_env, remote)} refused the password in OEA_SFTP_PASSWORD for user "
                                 f"{ssh_env.user}: check it with the server's owner")
    assert isinstance(caught.value, LandingError) and caught.value.url == url(ssh_env, remote)
    assert "not-the-Secret-123" not in caplog.text


def test_no_log_record_or_error_holds_the_password(ssh_env, remote, lake, tmp_path, caplog, monkeypatch):
    if not ssh_env.password:
        pytest.skip(ssh_env.no_password_reason)
    put(ssh_env, tmp_path, remote, clever_days(tmp_path, 1)[next(iter(clever_days(tmp_path, 1)))])
    relative = big_report(remote)
    give_to_server(ssh_env, remote)
    proxy = proxied(ssh_env, tmp_path, monkeypatch, lake, after=os.path.getsize(os.path.join(remote, relative)) // 2)
    with caplog.at_level(logging.DEBUG):
        try:
            land_sftp(CleverModule(lake), url(ssh_env, remote, proxy.port), retry=FAST)
        finally:
            proxy.close()
        with pytest.raises(SftpError) as caught:  # a password pasted into the URL is refused, and not shown
            SftpSource.parse(f"sftp://{ssh_env.user}:{ssh_env.password}@127.0.0.1/x")
    assert "OEA_SFTP_PASSWORD" in str(caught.value) and ssh_env.password not in str(caught.value)
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the retry path was logged too
    assert all(ssh_env.password not in r.getMessage() for r in caplog.records)
    assert ssh_env.password not in caplog.text


def test_a_missing_folder_is_a_clear_error(ssh_env, lake):
    missing = "/no/such/folder"
    with pytest.raises(SftpError, match=f"^{url(ssh_env, missing)}: the folder {missing} does not exist"):
        land_sftp(CleverModule(lake), url(ssh_env, missing), retry=FAST)


def test_a_key_file_logs_in_without_a_password(ssh_env, remote, lake, tmp_path, monkeypatch):
    monkeypatch.delenv("OEA_SFTP_PASSWORD", raising=False)
    monkeypatch.setenv("OEA_SFTP_KEY_FILE", ssh_env.key_file)
    days = clever_days(tmp_path, 1)
    put(ssh_env, tmp_path, remote, days[next(iter(days))])
    result = land_sftp(CleverModule(lake), url(ssh_env, remote), retry=FAST)
    files = days[next(iter(days))]
    assert result.land is not None and len(result.land.landed) == distinct(remote, files) > 0


@pytest.mark.parametrize(("bad", "match"), [
    ("sftp://host/x", "is not an SFTP folder URL: use sftp://USER@HOST"),
    ("sftp://u@host:99999/x", "is not an SFTP folder URL"),
    ("sftp://u@host", "is not an SFTP folder URL"),
    ("sftp://u:hunter22@host/x", r"^sftp://u:\*\*\*@host/x holds a password: .* set OEA_SFTP_PASSWORD"),
    ("sftp://u:hun/t@r22@host:2222/x", r"^sftp://u:\*\*\*@host:2222/x holds a password"),  # never half-shown
])
def test_a_bad_url_names_itself(bad, match):
    with pytest.raises(SftpError, match=match) as caught:
        SftpSource.parse(bad)
    assert "hun" not in str(caught.value)


def test_the_url_parts_and_known_hosts_name():
    source = SftpSource.parse("sftp://clever@sftp.example.org:2222/reports/daily")
    assert (source.user, source.host, source.port, source.path) == ("clever", "sftp.example.org", 2222,
                                                                      "/reports/daily")
    assert source.known_hosts_name == "[sftp.example.org]:2222"
    assert SftpSource.parse("sftp://c@h/r").known_hosts_name == "h" and SftpSource.parse("sftp://c@h/r").port == 22


def test_a_key_file_that_is_not_a_key_is_refused_before_connecting(lake, tmp_path, monkeypatch):
    (tmp_path / "key").write_text("not a key\n")
    monkeypatch.setenv("OEA_SFTP_KEY_FILE", str(tmp_path / "key"))
    with pytest.raises(SftpError, match=f"^the key file {tmp_path / 'key'} \\(OEA_SFTP_KEY_FILE\\) cannot be read"):
        land_sftp(CleverModule(lake), "sftp://u@127.0.0.1:9/x", retry=FAST)


def test_no_credential_names_both_settings(lake):
    with pytest.raises(SftpError, match="no credential for sftp://u@h/x: set OEA_SFTP_PASSWORD .* or OEA_SFTP_KEY_FILE"):
        land_sftp(CleverModule(lake), "sftp://u@h/x")


# the command --------------------------------------------------------------------------------------
def test_oea_land_clever_takes_an_sftp_url(ssh_env, remote, lake, tmp_path, capsys):
    days = clever_days(tmp_path, 1)
    put(ssh_env, tmp_path, remote, days[next(iter(days))])
    n = len(days[next(iter(days))])
    assert main(["--lake", lake.root, "land", "clever", url(ssh_env, remote)]) == 0
    out = capsys.readouterr().out
    assert f"landed {distinct(remote, days[next(iter(days))])} files as batch" in out
    assert f"downloaded {n} files" in out
    assert main(["--lake", lake.root, "land", "clever", url(ssh_env, remote)]) == 0
    assert f"nothing new on {url(ssh_env, remote)}; downloaded 0 files (0 bytes), {n} unchanged" in \
        capsys.readouterr().out
    assert main(["--lake", lake.root, "land", "edfi", url(ssh_env, remote)]) == 1
    assert "oea land edfi cannot land from SFTP" in capsys.readouterr().err


def test_links_on_the_server_are_left_out_and_an_unreadable_file_is_a_clear_error(ssh_env, remote, lake, tmp_path,
                                                                                  caplog):
    days = clever_days(tmp_path, 1)
    files = days[next(iter(days))]
    put(ssh_env, tmp_path, remote, files)
    os.symlink(os.path.join(remote, files[0]), os.path.join(remote, "daily-participation", "link-students.csv"))
    with caplog.at_level(logging.WARNING, logger="oea"):
        result = land_sftp(CleverModule(lake), url(ssh_env, remote), retry=FAST)
    assert result.left_out == ("daily-participation/link-students.csv: a symbolic link",)
    assert "daily-participation/link-students.csv: a symbolic link; left out" in caplog.text
    assert sorted(result.downloaded) == sorted(files)

    if os.geteuid() != 0:
        return  # the server runs as this user; a file it cannot read needs another owner
    secret = os.path.join(remote, "daily-participation", "2030-01-01-daily-participation-staff.csv")
    shutil.copy(os.path.join(remote, files[0]), secret)
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o600)
    before = stage1np(lake)
    with pytest.raises(SftpError, match=r"downloading daily-participation/2030-01-01-daily-participation-staff"
                                        r"\.csv failed: .*on the server; nothing was landed"):
        land_sftp(CleverModule(lake), url(ssh_env, remote), retry=FAST)
    assert stage1np(lake) == before


def test_a_cloud_lake_records_its_downloads_in_the_account(ssh_env, remote, azurite, tmp_path, monkeypatch,
                                                           capsys):
    from oea_core.lake.storage import CONNECTION_STRING, CONTAINERS, lake_filesystem

    lake_url = "abfss://stage1np@devstoreaccount1.dfs.core.windows.net"
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)
    cloud = LakePaths.from_setting(lake_url)
    fs = lake_filesystem(cloud, check=False)
    for container in set(fs.ls("", detail=False, refresh=True)) & set(CONTAINERS):
        fs.rm(container, recursive=True)
    files = [f for day in clever_days(tmp_path, 2).values() for f in day]
    put(ssh_env, tmp_path, remote, files)
    assert distinct(remote, files) < len(files)  # some are header-only twins: the ledger is used too

    assert main(["--lake", lake_url, "land", "clever", url(ssh_env, remote)]) == 0
    assert f"downloaded {len(files)} files" in capsys.readouterr().out
    fs.invalidate_cache()
    manifests_in_account = [p for p in fs.find("stage1np/clever") if p.endswith(MANIFEST)]
    assert len(manifests_in_account) == len(stage1np(cloud)) + 1
    assert [p for p in manifests_in_account if f"/{LEDGER}/" in p]
    # another machine (an empty working copy) sees the record too, duplicates' ledger included
    monkeypatch.setenv("OEA_CACHE", str(tmp_path / "second-machine"))
    assert main(["--lake", lake_url, "land", "clever", url(ssh_env, remote)]) == 0
    assert f"downloaded 0 files (0 bytes), {len(files)} unchanged" in capsys.readouterr().out


def test_the_module_lands_an_sftp_url_as_the_synapse_notebook_passes_it(ssh_env, remote, lake, tmp_path):
    files = [f for day in clever_days(tmp_path, 1).values() for f in day]
    put(ssh_env, tmp_path, remote, files)
    module = CleverModule(lake)
    first = module.land(url(ssh_env, remote))  # Synapse: source_path = pipeline().parameters.sftpUrl
    assert first.batch_id and {e["remote"]["path"] for m in manifests(lake) for e in m["files"]} <= set(files)
    before = stage1np(lake)
    again = module.land(url(ssh_env, remote))  # the same incremental rule as `oea land clever sftp://`
    assert again.batch_id is None and again.landed == () and stage1np(lake) == before


def test_the_password_may_come_from_key_vault_secret_oeaSftpPassword(ssh_env, remote, lake, tmp_path, monkeypatch):
    from oea_core.privacy import keyvault
    from servers.keyvault import signed_in

    files = [f for day in clever_days(tmp_path, 1).values() for f in day]
    put(ssh_env, tmp_path, remote, files)
    password = os.environ.pop("OEA_SFTP_PASSWORD")
    monkeypatch.delenv("OEA_SFTP_PASSWORD", raising=False)
    with signed_in(tmp_path, monkeypatch) as kv:
        kv.secrets[keyvault.SFTP_PASSWORD] = password
        result = land_sftp(CleverModule(lake), url(ssh_env, remote), retry=FAST)
        assert (f"/secrets/{keyvault.SFTP_PASSWORD}/", True) in kv.requests
    assert result.land is not None and result.land.batch_id


def test_a_password_key_vault_cannot_give_is_one_line_naming_the_settings_and_the_secret(lake, tmp_path,
                                                                                           monkeypatch):
    from oea_core.privacy import keyvault
    from servers.keyvault import signed_in

    monkeypatch.delenv("OEA_SFTP_PASSWORD", raising=False)
    monkeypatch.delenv("OEA_SFTP_KEY_FILE", raising=False)
    with signed_in(tmp_path, monkeypatch) as kv, pytest.raises(SftpError) as caught:
        land_sftp(CleverModule(lake), "sftp://clever@127.0.0.1:1/drop", retry=FAST)  # never reached: no password
    message = str(caught.value)
    assert "\n" not in message and "OEA_SFTP_PASSWORD" in message and "OEA_SFTP_KEY_FILE" in message
    assert keyvault.SFTP_PASSWORD in message and kv.url in message and "not found" in message
    assert not os.path.exists(lake.path("stage1np", "clever"))
