"""The nightly production flow (flows/production_flow.yaml) and its steps (oea_core.tasks)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oea_core.errors import FlowError
from oea_core.tasks import ingest_new, land_clever_sftp, land_edfi_api, landed_batches, pending

REPO = Path(__file__).resolve().parents[1]
SALT = "production-salt-7c41d9e2"


def test_steps_need_the_flow_context(lake):
    for step in (land_clever_sftp, land_edfi_api):
        with pytest.raises(FlowError, match="flow python step"):
            step()
    with pytest.raises(FlowError, match="flow python step"):
        ingest_new("clever")


def test_a_source_without_a_url_is_skipped_and_lands_nothing(lake, monkeypatch, caplog):
    monkeypatch.delenv("OEA_CLEVER_SFTP_URL", raising=False)
    monkeypatch.delenv("OEA_EDFI_API_URL", raising=False)
    caplog.set_level("INFO", "oea")
    assert land_clever_sftp(context={"lake": lake}) == 0
    assert land_edfi_api(context={"lake": lake}) == 0
    assert "set OEA_CLEVER_SFTP_URL" in caplog.text and "set OEA_EDFI_API_URL" in caplog.text
    assert not os.path.exists(lake.root)


def _batch(lake, source: str, *parts: str) -> None:
    folder = Path(lake.path("stage1np", source, *parts))
    folder.mkdir(parents=True)
    (folder / "_manifest.json").write_text("{}", encoding="utf-8")


def test_pending_follows_the_landed_batches_since_the_last_recorded_ingest(lake):
    assert not pending(lake, "clever")  # nothing landed, nothing recorded
    _batch(lake, "clever", "daily_participation", "b1")
    Path(lake.path("stage1np", "clever", "daily_participation", "_landing_b2")).mkdir()  # a landing cut short
    assert landed_batches(lake, "clever") == ["daily_participation/b1"]
    assert pending(lake, "clever")
    record = Path(lake.state_path("production", "clever_ingested.json"))
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"batches": ["daily_participation/b1"]}), encoding="utf-8")
    assert not pending(lake, "clever")
    _batch(lake, "clever", "resource_usage", "b2")
    assert pending(lake, "clever")
    record.write_text("{not json", encoding="utf-8")  # a damaged record: ingest again (it is idempotent)
    assert pending(lake, "clever")


def _versions(lake_root: Path) -> dict[str, int]:
    """Every Delta table's version under the lake."""
    from deltalake import DeltaTable

    return {str(log.parent.relative_to(lake_root)): DeltaTable(str(log.parent)).version()
            for log in lake_root.rglob("_delta_log")}


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _run_log(lake: Path, batch: str) -> dict:
    return json.loads((lake / "oea-framework" / "runs" / batch / "run_log.json").read_text(encoding="utf-8"))


@pytest.mark.spark
@pytest.mark.slow
def test_the_production_flow_lands_builds_and_a_night_with_nothing_new_writes_nothing(
        sshd, tmp_path, monkeypatch, capfd, caplog):
    """Clever from a real OpenSSH server, Ed-Fi from the API, every secret from Key Vault; then a night with
    nothing new, and a failed night. No secret reaches a file, the output or the logs."""
    from oea_core.clever.generator import generate_clever_export
    from oea_core.cli import main
    from oea_core.edfi import generate_edfi
    from oea_core.privacy import keyvault
    from oea_testing import secrets_found
    from servers.edfi_api import CLIENT_ID, CLIENT_SECRET, EdFiTestApi
    from servers.keyvault import signed_in
    from servers.sftp import give_to_server

    caplog.set_level("INFO")
    drop = os.path.join(sshd.data, "production-drop")
    generate_clever_export(drop, students=8, teachers=1, staff=1, days=2, quirks=False)
    give_to_server(sshd, drop)
    monkeypatch.chdir(tmp_path)  # the view scripts go to sql_views/ here
    notifications = tmp_path / "notifications.log"
    monkeypatch.setenv("OEA_NOTIFY_FILE", str(notifications))
    monkeypatch.setenv("OEA_SFTP_KNOWN_HOSTS", sshd.known_hosts)
    monkeypatch.setenv("OEA_CLEVER_SFTP_URL", sshd.url(drop))
    lake = tmp_path / "lake"
    flow = str(REPO / "flows" / "production_flow.yaml")
    (tmp_path / "vault").mkdir()
    with signed_in(tmp_path / "vault", monkeypatch) as vault, \
            EdFiTestApi(generate_edfi(students=12, staff=3, schools=2, batches=2, seed=5)) as api:
        vault.secrets.update({keyvault.SALT: SALT, keyvault.EDFI_CLIENT_ID: CLIENT_ID,
                              keyvault.EDFI_CLIENT_SECRET: CLIENT_SECRET})
        if sshd.password:
            vault.secrets[keyvault.SFTP_PASSWORD] = sshd.password
        else:
            monkeypatch.setenv("OEA_SFTP_KEY_FILE", sshd.key_file)
        monkeypatch.setenv("OEA_EDFI_API_URL", api.url)

        assert main(["--lake", str(lake), "flow", "run", flow, "--batch-id", "night1"]) == 0
        first = _run_log(lake, "night1")
        assert first["status"] == "success", first
        rows = {name: step["rows"] for name, step in first["steps"].items()}
        assert all(rows[step] > 0 for step in ("clever_sftp", "edfi_api", "clever_ingest", "edfi_ingest_refine",
                                               "build_vault", "build_star", "write_views")), rows
        assert {path for path, _had_token in vault.requests} >= {f"/secrets/{name}/" for name in vault.secrets}
        versions, stage1, views = _versions(lake), _files(lake / "stage1np"), _files(tmp_path / "sql_views")
        assert {"stage3p/star/fact_digital_activity", "stage3p/star/fact_enrollment"} <= set(versions)

        # a night with nothing new: nothing downloaded, landed, committed or rewritten
        assert main(["--lake", str(lake), "flow", "run", flow, "--batch-id", "night2"]) == 0
        second = _run_log(lake, "night2")
        assert second["status"] == "success"
        assert {name: step["rows"] for name, step in second["steps"].items()} == dict.fromkeys(second["steps"], 0)
        assert _versions(lake) == versions and _files(lake / "stage1np") == stage1
        assert _files(tmp_path / "sql_views") == views

        # a failed night: the SFTP login is refused; the run says so in one line, and nothing was written
        wrong = "Wr0ng-pa55word-" + SALT[-6:]
        monkeypatch.setenv("OEA_SFTP_PASSWORD", wrong)
        monkeypatch.delenv("OEA_SFTP_KEY_FILE", raising=False)
        once = tmp_path / "production_once.yaml"  # the shipped flow without its 5-minute retries
        once.write_text(Path(flow).read_text(encoding="utf-8").replace(
            "default_retry: {attempts: 3, delay_seconds: 300}", "default_retry: {attempts: 1, delay_seconds: 0}"),
            encoding="utf-8")
        assert main(["--lake", str(lake), "flow", "run", str(once), "--batch-id", "night3"]) == 1
        third = _run_log(lake, "night3")
        assert third["status"] == "failed" and third["steps"]["clever_sftp"]["status"] == "failed"
        error = third["steps"]["clever_sftp"]["error"]
        assert sshd.url(drop).split("//")[1].split("@")[0] in error and "password" in error.lower()
        assert _versions(lake) == versions and _files(lake / "stage1np") == stage1
        tokens = {f"vault token {n}": t for n, t in enumerate(vault.tokens)}
        tokens |= {f"api token {n}": t for n, t in enumerate(api.tokens)}
    lines = notifications.read_text(encoding="utf-8").splitlines()
    assert [line.split()[1:4] for line in lines] == [["production", "night1", "success"],
                                                      ["production", "night2", "success"],
                                                      ["production", "night3", "failed"]]
    out = capfd.readouterr()
    secrets = {"salt": SALT, "Ed-Fi client secret": CLIENT_SECRET, "wrong SFTP password": wrong, **tokens}
    if sshd.password:
        secrets["SFTP password"] = sshd.password
    assert secrets_found(secrets, tmp_path, texts=(out.out, out.err, caplog.text)) == []
