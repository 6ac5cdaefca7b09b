"""The oea command: global --lake, one-line errors, land/ingest/views/generate, and the README's commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oea_core.cli import main

REPO = Path(__file__).resolve().parents[2]


def oea(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "oea_core.cli", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600)


ENGINE_INFO = {"delta-rs": "delta-rs:py-", "spark-delta": "Delta-Lake/3.3"}


@pytest.mark.parametrize("engine", sorted(ENGINE_INFO))
def test_land_ingest_views_through_the_real_command(tmp_path, engine):
    from deltalake import DeltaTable

    lake = str(tmp_path / "lake")
    env = {"OEA_SALT": "cli-salt-8d2-5a90e1"}
    landed = oea("--lake", lake, "land", "clever", str(REPO / "test_data" / "clever"), env=env)
    assert landed.returncode == 0, landed.stderr
    assert re.match(r"landed 18 files as batch \d{8}T\d+Z", landed.stdout)
    ingested = oea("--lake", lake, "--engine", engine, "ingest", "clever", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert f"clever ingest with the {engine} Delta engine" in ingested.stderr
    for table in ("stage2p/clever/daily_participation_pseudo", "stage2np/clever/resource_usage_lookup"):
        (commit,) = DeltaTable(os.path.join(lake, table)).history()
        assert ENGINE_INFO[engine] in commit["engineInfo"], (table, commit["engineInfo"])
    assert "daily_participation: 1 batches, 138 rows written, 0 rejected" in ingested.stdout
    assert "resource_usage: 1 batches, 178 rows written, 0 rejected" in ingested.stdout
    assert "daily_participation: ingesting 1 batches (9 files)" in ingested.stderr, "progress is shown"
    again = oea("--lake", lake, "ingest", "clever", env=env)
    assert again.returncode == 0 and again.stdout.count("nothing new") == 2
    assert "cli-salt-8d2-5a90e1" not in landed.stdout + landed.stderr + ingested.stdout + ingested.stderr


def test_lake_comes_from_oea_lake_then_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = REPO / "test_data" / "clever"
    assert main(["land", "clever", str(src)]) == 0
    assert (tmp_path / "lake" / "stage1np" / "clever" / "daily-participation").is_dir()
    monkeypatch.setenv("OEA_LAKE", str(tmp_path / "other"))
    assert main(["land", "clever", str(src)]) == 0
    assert (tmp_path / "other" / "stage1np" / "clever").is_dir()
    assert main(["land", "clever", str(src)]) == 0
    assert "nothing new: all 18 files were landed before" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["land", "clever", "/no/such/folder"], "oea: error: source folder /no/such/folder does not exist"),
    (["land", "canvas", "x"], ("oea: error: argument MODULE: invalid choice: 'canvas' (choose from 'clever', "
                               "'edfi') (see `oea land --help`)")),
    (["ingest"], "oea: error: the following arguments are required: MODULE (see `oea ingest --help`)"),
    (["--lake", "s3://bucket/x", "land", "clever", "x"], "oea: error: lake 's3://bucket/x' uses an unsupported"),
    (["land", "edfi"], "oea: error: give an Ed-Fi export folder, or --api URL"),
    (["land", "clever", "--api", "http://x"], "oea: error: unrecognized arguments: --api (see `oea --help`)"),
    (["land", "clever"], "oea: error: give the Clever export folder to land (oea land clever FOLDER)"),
    (["land", "edfi", "x", "--api", "http://x"], "oea: error: give either an Ed-Fi export folder or --api URL"),
    (["views", "clever", "--workspace", "Prod-1"], "oea: error: workspace 'Prod-1' cannot be used as a SQL name"),
])
def test_errors_are_one_line_with_a_non_zero_exit(tmp_path, capsys, args, message):
    code = main(["--lake", str(tmp_path / "lake"), *args] if args[0] != "--lake" else args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith(message)


def test_an_unknown_engine_setting_is_one_line_naming_the_known_engines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OEA_ENGINE", "polars")
    assert main(["--lake", str(tmp_path / "lake"), "ingest", "clever"]) == 1
    assert capsys.readouterr().err.strip() == (
        "oea: error: unknown Delta engine 'polars' (from --engine or $OEA_ENGINE); known engines: delta-rs, "
        "spark-delta")
    assert main(["--engine", "polars", "ingest", "clever"]) == 1
    assert capsys.readouterr().err.strip() == (
        "oea: error: argument --engine: invalid choice: 'polars' (choose from 'delta-rs', 'spark-delta') "
        "(see `oea --help`)")


def test_views_writes_the_script(tmp_path, capsys):
    out = tmp_path / "views"
    code = main(["--lake", str(tmp_path / "lake"), "views", "clever", "--storage-account", "districtlake",
                 "--out", str(out)])
    assert code == 0
    script = (out / "clever_views.sql").read_text()
    assert "CREATE OR ALTER VIEW [dbo].[daily_participation_pseudo]" in script
    assert "https://districtlake.dfs.core.windows.net/stage2p/clever/daily_participation_pseudo/" in script


def test_generate_writes_a_deterministic_export(tmp_path, capsys):
    assert main(["generate", "clever", str(tmp_path / "a"), "--students", "5", "--days", "2"]) == 0
    assert main(["generate", "clever", str(tmp_path / "b"), "--students", "5", "--days", "2"]) == 0
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert a and all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in a)


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_command = '.venv/bin/python -m pytest -n 2 --dist loadfile --nbmake tests notebooks -m ""'
    assert f"./scripts/setup.sh && {test_command}" in readme
    assert "./scripts/setup.sh && .venv/bin/oea run" in readme
    assert "./scripts/setup.sh" in ci and test_command in ci


def test_error_text_never_shows_the_salt(capsys):
    from oea_core.privacy.redaction import redact
    from oea_core.privacy.salt import Salt

    Salt("s3cr3t-salt-value", "test")
    assert redact("failed near concat(sis_id, 's3cr3t-salt-value')") == "failed near concat(sis_id, '<salt>')"
