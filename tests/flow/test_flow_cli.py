"""`oea flow validate|run|status|graph`, and the shipped Clever flow run for real."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from oea_core.cli import main
from oea_testing import secrets_found

REPO = Path(__file__).resolve().parents[2]
SALT = "flow-salt-4b7e21"


def test_validate_run_status_graph(tmp_path, capsys):
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent("""\
        pipeline: {name: cli}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - {name: one, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: one}}
                  - {name: two, kind: python, callable: "oea_testing.flow_helpers:flaky", parameters: {marker: two, failures: 9}}
        """), encoding="utf-8")
    lake = str(tmp_path / "lake")
    assert main(["flow", "validate", str(flow)]) == 0
    assert "ok: 2 steps in 1 stages" in capsys.readouterr().out
    assert main(["--lake", lake, "flow", "run", str(flow), "--batch-id", "c1"]) == 1
    err = capsys.readouterr().err
    assert "oea: error: flow cli batch c1 failed: two: RuntimeError: two failed on call 1" in err
    assert main(["--lake", lake, "flow", "status"]) == 0
    out = capsys.readouterr().out
    assert "cli" in out and "c1" in out and "failed" in out and "1 success" in out
    assert main(["--lake", lake, "flow", "graph", str(flow), "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "cli.svg").exists() and (tmp_path / "g" / "cli.png").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: {name: x}\nstages: []\n", encoding="utf-8")
    assert main(["flow", "validate", str(bad)]) == 1
    assert "give a list of stages" in capsys.readouterr().err



def test_validate_reports_a_stage_name_used_twice_with_its_line(tmp_path, capsys):
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent("""\
        pipeline: {name: twice}
        stages:
          - {name: load, groups: [{name: g1, steps: [{name: a, kind: python, callable: "oea_testing.flow_helpers:record"}]}]}
          - {name: load, groups: [{name: g2, steps: [{name: b, kind: python, callable: "oea_testing.flow_helpers:record"}]}]}
        """), encoding="utf-8")
    assert main(["flow", "validate", str(flow)]) == 1
    assert (f"{flow}:4: stages[1]: duplicate stage name 'load', already the name of the stage at line 3"
            in capsys.readouterr().err)

@pytest.mark.spark
@pytest.mark.notebooks
@pytest.mark.slow
def test_shipped_clever_flow_runs_with_its_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OEA_SALT", SALT)
    lake = tmp_path / "lake"
    assert main(["--lake", str(lake), "flow", "run", str(REPO / "flows" / "clever_flow.yaml"),
                 "--batch-id", "f1"]) == 0
    run = lake / "oea-framework" / "runs" / "f1"
    log = json.loads((run / "run_log.json").read_text())
    step = log["steps"]["clever_ingestion"]
    assert log["status"] == "success" and step["status"] == "success"
    assert {c["name"]: c["passed"] for c in step["checks"]} == {
        "daily_participation_rows": True, "daily_participation_date_not_null": True,
        "daily_participation_dates": True, "daily_participation_lookup_unique": True,
        "daily_participation_no_raw_sis_id": True, "resource_usage_no_raw_user_id": True}
    executed = run / "notebooks" / "clever_ingestion.ipynb"
    assert "f1" in executed.read_text()  # the run's batch id reached the notebook
    assert (lake / "stage1np" / "clever" / "daily-participation" / "f1").is_dir()
    for path in (executed, run / "run_log.json"):
        assert SALT not in path.read_text()
    # the same batch again: checkpointed, nothing runs
    assert main(["--lake", str(lake), "flow", "run", str(REPO / "flows" / "clever_flow.yaml"),
                 "--batch-id", "f1"]) == 0
    assert "(1 cached)" in capsys.readouterr().out


@pytest.mark.spark
@pytest.mark.notebooks
@pytest.mark.slow
def test_shipped_main_flow_builds_the_vault_and_the_star_on_the_samples(tmp_path, monkeypatch, capsys):
    from deltalake import DeltaTable

    monkeypatch.setenv("OEA_SALT", SALT)
    monkeypatch.chdir(tmp_path)  # write_views writes sql_views/ here
    lake = tmp_path / "lake"
    flow = str(REPO / "flows" / "main_flow.yaml")
    assert main(["--lake", str(lake), "flow", "run", flow, "--batch-id", "m1"]) == 0
    log = json.loads((lake / "oea-framework" / "runs" / "m1" / "run_log.json").read_text())
    assert log["status"] == "success"
    assert {name: step["status"] for name, step in log["steps"].items()} == dict.fromkeys(
        ["clever_ingestion", "edfi_land", "edfi_ingest", "edfi_refine", "build_vault", "build_star", "write_views"],
        "success")
    assert all(check["passed"] for step in ("build_vault", "build_star") for check in log["steps"][step]["checks"])

    def table(area: str, name: str):
        return DeltaTable(str(lake / "stage3p" / area / name)).to_pyarrow_table()

    students = DeltaTable(str(lake / "stage2p" / "edfi" / "students")).to_pyarrow_table()
    assert table("vault", "hub_student").num_rows == students.num_rows
    dim_student = table("star", "dim_student").to_pylist()
    assert len([r for r in dim_student if r["student_key"] != -1]) == students.num_rows  # one version each
    assert all(r["is_current"] for r in dim_student)
    attendance = DeltaTable(str(lake / "stage2p" / "edfi" / "student_school_attendance_events")).to_pyarrow_table()
    assert table("star", "fact_attendance").num_rows == attendance.num_rows
    participation = DeltaTable(str(lake / "stage2p" / "clever" / "daily_participation_pseudo")).to_pyarrow_table()
    assert table("star", "fact_digital_activity").num_rows >= 1 and participation.num_rows >= 1
    assert log["steps"]["build_star"]["rows"] > 0
    star_views = (tmp_path / "sql_views" / "star_views.sql").read_text(encoding="utf-8")
    assert "sdb_dev_s3p_star" in star_views and "stage3p/star/fact_digital_activity" in star_views
    assert (tmp_path / "sql_views" / "vault_views.sql").is_file()
    # the salt reached no run log, executed notebook, view script or output
    assert secrets_found({"salt": SALT}, tmp_path, texts=(capsys.readouterr().out,)) == []
    # the same batch again: every step checkpointed, nothing runs
    assert main(["--lake", str(lake), "flow", "run", flow, "--batch-id", "m1"]) == 0
    assert "(7 cached)" in capsys.readouterr().out
