"""`oea land/ingest/views/generate edfi` through the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oea_core.edfi import generate_edfi, write_edfi_export
from oea_testing import digest
from servers.edfi_api import CLIENT_ID, CLIENT_SECRET, EdFiTestApi

REPO = Path(__file__).resolve().parents[2]


def oea(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oea_core.cli", *args], check=False, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=900)


@pytest.mark.spark  # `oea ingest edfi` starts its own session
@pytest.mark.slow
def test_land_api_ingest_and_views(tmp_path):
    dataset = generate_edfi(students=8, staff=2, schools=1, batches=2, seed=3)
    lake = str(tmp_path / "lake")
    env = {"OEA_SALT": "edfi-cli-salt-91", "OEA_EDFI_CLIENT_ID": CLIENT_ID, "OEA_EDFI_CLIENT_SECRET": CLIENT_SECRET}
    with EdFiTestApi(dataset) as api:
        first = oea("--lake", lake, "land", "edfi", "--api", api.url, "--page-size", "5",
                    "--resources", "students,studentSchoolAssociations,schools", env=env)
        assert first.returncode == 0, first.stderr
        assert "landed 3 resource batches" in first.stdout
        api.visible_batch = 1
        second = oea("--lake", lake, "land", "edfi", "--api", api.url, "--resources", "students", env=env)
        assert second.returncode == 0 and "landed 1 resource batches" in second.stdout
        # the default: every supported resource the API has (this one lacks some descriptors; they are skipped)
        every = oea("--lake", str(tmp_path / "all"), "land", "edfi", "--api", api.url, env=env)
        assert every.returncode == 0, every.stderr
        landed = os.listdir(tmp_path / "all" / "stage1np" / "edfi" / "ed-fi")
        assert {"grades", "sections", "gradeLevelDescriptors"} <= set(landed)
    ingested = oea("--lake", lake, "ingest", "edfi", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert "students (refined): 9 rows written, 0 set aside" in ingested.stdout
    assert "student_school_associations (refined)" in ingested.stdout
    views = oea("--lake", lake, "views", "edfi", "--out", str(tmp_path / "views"), env=env)
    script = (tmp_path / "views" / "edfi_views.sql").read_text()
    assert views.returncode == 0 and "CREATE OR ALTER VIEW [dbo].[students_lookup]" in script
    assert "[dbo].[grades]" not in script  # not landed here: no view over a missing table
    everything = first.stdout + first.stderr + second.stdout + second.stderr + every.stderr + ingested.stdout + ingested.stderr
    assert CLIENT_SECRET not in everything and "edfi-cli-salt-91" not in everything


def _landed_ids(root: Path) -> set[str]:
    return {json.loads(line)["id"] for path in root.glob("*/upserts/*.jsonl") for line in path.open(encoding="utf-8")}


def test_land_never_exits_0_with_records_lost_to_data_moving_while_paged(tmp_path, monkeypatch, capsys):
    from oea_core.cli import main

    monkeypatch.setenv("OEA_EDFI_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("OEA_EDFI_CLIENT_SECRET", CLIENT_SECRET)
    dataset = generate_edfi(students=300, staff=4, schools=2, batches=1, seed=11)
    expected = set(dataset.state(0)["studentSectionAssociations"])
    assert len(expected) == 900
    lake = tmp_path / "lake"
    ssa = lake / "stage1np" / "edfi" / "ed-fi" / "studentSectionAssociations"
    land = ["--lake", str(lake), "land", "edfi", "--resources", "studentSectionAssociations"]
    with EdFiTestApi(dataset) as api:
        path = "/data/v3/ed-fi/studentSectionAssociations"
        api.move_while_paging(path, after_pages=1)  # pages of 500: offset 500 then skips one record
        assert main([*land, "--api", api.url]) == 0
        assert len(_landed_ids(ssa)) == 899, "all but the record that moved out of the window, which comes next run"
        assert main([*land, "--api", api.url]) == 0
        assert _landed_ids(ssa) == expected
        api.move_while_paging(path, after_pages=1, times=3)  # moving under every read: never exit 0
        other = tmp_path / "other"
        assert main(["--lake", str(other), *land[2:], "--api", api.url]) == 1
        err = capsys.readouterr().err
        assert "error: Ed-Fi ed-fi/studentSectionAssociations: read 3 times between change versions" in err
        assert not (other / "stage1np" / "edfi" / "ed-fi" / "studentSectionAssociations").exists() or not any(
            (other / "stage1np" / "edfi" / "ed-fi" / "studentSectionAssociations").iterdir())


def test_sigterm_during_land_leaves_no_half_batch(tmp_path):
    dataset = generate_edfi(students=8, staff=2, schools=1, batches=1, seed=3)
    lake = tmp_path / "lake"
    env = {**os.environ, "OEA_EDFI_CLIENT_ID": CLIENT_ID, "OEA_EDFI_CLIENT_SECRET": CLIENT_SECRET}
    with EdFiTestApi(dataset) as api:
        api.delay = 0.2
        run = subprocess.Popen([sys.executable, "-m", "oea_core.cli", "--lake", str(lake), "land", "edfi", "--api",
                                api.url, "--page-size", "2", "--resources", "students"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not list(lake.glob("stage1np/edfi/ed-fi/students/_landing_*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # within the paging of students (8 records, 2 a page, 0.2 s a page)
        run.send_signal(signal.SIGTERM)
        _out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "oea: interrupted; the lake is unchanged by the unfinished step" in err
    assert not list(lake.glob("stage1np/edfi/*/*/_landing_*")), "the half-written batch is removed"
    assert not list(lake.glob("stage1np/edfi/ed-fi/students/[0-9]*"))


def test_a_new_land_removes_the_half_batch_of_a_killed_one(tmp_path, monkeypatch):
    from oea_core.cli import main

    monkeypatch.setenv("OEA_EDFI_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("OEA_EDFI_CLIENT_SECRET", CLIENT_SECRET)
    lake = tmp_path / "lake"
    left = lake / "stage1np" / "edfi" / "ed-fi" / "schools" / "_landing_20240101T000000Z" / "upserts"
    left.mkdir(parents=True)  # what a SIGKILLed run leaves (no process holds the lake lock)
    (left / "part-00000.jsonl").write_text('{"id": "x"}\n')
    with EdFiTestApi(generate_edfi(students=4, staff=1, schools=1, batches=1, seed=3)) as api:
        assert main(["--lake", str(lake), "land", "edfi", "--api", api.url, "--resources", "students"]) == 0
    assert not left.parent.exists()


def test_api_without_credentials_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OEA_EDFI")}
    run = subprocess.run([sys.executable, "-m", "oea_core.cli", "--lake", str(tmp_path / "lake"), "land", "edfi",
                          "--api", "http://127.0.0.1:9"], check=False, capture_output=True, text=True, env=env)
    assert run.returncode == 1
    assert run.stderr.strip() == ("oea: error: no Ed-Fi API credentials: set OEA_EDFI_CLIENT_ID and "
                                  "OEA_EDFI_CLIENT_SECRET in the environment, or OEA_KEYVAULT_URL to a Key Vault "
                                  "holding secrets oeaEdFiClientId and oeaEdFiClientSecret (they are never taken "
                                  "from the command line)")


def test_generator_is_deterministic_and_the_sample_is_its_output(tmp_path):
    write_edfi_export(generate_edfi(), tmp_path / "a")
    run = oea("generate", "edfi", str(tmp_path / "b"))
    assert run.returncode == 0, run.stderr
    assert digest(tmp_path / "a") == digest(tmp_path / "b") == digest(REPO / "test_data" / "edfi")


def test_generated_references_resolve():
    state = generate_edfi(students=12, batches=3).state()
    students = {r["studentUniqueId"] for r in state["students"].values()}
    sections = {r["sectionIdentifier"] for r in state["sections"].values()}
    for record in state["studentSectionAssociations"].values():
        assert record["studentReference"]["studentUniqueId"] in students
        assert record["sectionReference"]["sectionIdentifier"] in sections
    for record in state["grades"].values():
        assert record["studentSectionAssociationReference"]["studentUniqueId"] in students


def test_ingest_with_nothing_landed_says_so_and_creates_nothing(tmp_path, capsys):
    from oea_core.cli import main

    assert main(["--lake", str(tmp_path / "lake"), "ingest", "edfi"]) == 0
    assert "nothing landed for edfi: run `oea land edfi ...` first" in capsys.readouterr().out
    assert not (tmp_path / "lake").exists()  # no salt file, no folders
