"""The nightly production flow (flows/production_flow.yaml) and its steps (oea_core.production)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oea_core.errors import FlowError
from oea_core.production import ingest_new, land_clever_sftp, land_edfi_api, landed_batches, pending

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


@pytest.mark.spark
@pytest.mark.slow
def test_the_production_flow_lands_builds_and_a_night_with_nothing_new_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "edfi"))
    from api_server import CLIENT_ID, CLIENT_SECRET, EdFiTestApi

    from oea_core.cli import main
    from oea_core.edfi import generate_edfi

    monkeypatch.setenv("OEA_SALT", SALT)
    monkeypatch.chdir(tmp_path)  # the view scripts go to sql_views/ here
    notifications = tmp_path / "notifications.log"
    monkeypatch.setenv("OEA_NOTIFY_FILE", str(notifications))
    monkeypatch.setenv("OEA_EDFI_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("OEA_EDFI_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("OEA_CLEVER_SFTP_URL", raising=False)
    lake = tmp_path / "lake"
    flow = str(REPO / "flows" / "production_flow.yaml")
    with EdFiTestApi(generate_edfi(students=12, staff=3, schools=2, batches=2, seed=5)) as api:
        monkeypatch.setenv("OEA_EDFI_API_URL", api.url)
        assert main(["--lake", str(lake), "flow", "run", flow, "--batch-id", "night1"]) == 0
        first = json.loads((lake / "oea-framework" / "runs" / "night1" / "run_log.json").read_text())
        assert first["status"] == "success", first
        assert first["steps"]["edfi_api"]["rows"] > 0 and first["steps"]["build_star"]["rows"] > 0
        assert first["steps"]["clever_sftp"]["rows"] == 0  # no URL: skipped
        versions, stage1, views = _versions(lake), _files(lake / "stage1np"), _files(tmp_path / "sql_views")
        assert any(name.startswith("stage3p/star/") for name in versions)
        capsys.readouterr()
        assert main(["--lake", str(lake), "flow", "run", flow, "--batch-id", "night2"]) == 0
        second = json.loads((lake / "oea-framework" / "runs" / "night2" / "run_log.json").read_text())
        assert second["status"] == "success"
        assert {name: step["rows"] for name, step in second["steps"].items()} == dict.fromkeys(second["steps"], 0)
        assert _versions(lake) == versions and _files(lake / "stage1np") == stage1
        assert _files(tmp_path / "sql_views") == views  # same text: not rewritten
    lines = notifications.read_text(encoding="utf-8").splitlines()
    assert [line.split()[1:4] for line in lines] == [["production", "night1", "success"],
                                                      ["production", "night2", "success"]]
