"""docs/adding_a_module.md's worked example: the attendance module, registered with one line, end to end."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from oea_core import sources
from oea_core.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"
EXAMPLE = EXAMPLES / "attendance"
GUIDE = REPO / "docs" / "adding_a_module.md"


@pytest.fixture
def attendance(monkeypatch):
    """The example registered as the guide registers it, and removed again afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import attendance

    sources.register(attendance.DESCRIPTOR)  # the one registry line
    yield attendance
    sources.unregister("attendance")
    sys.modules.pop("attendance", None)


def test_the_guide_shows_the_example_as_it_is():
    guide = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n# (docs/examples/attendance/\S+)\n(.*?)```", guide, flags=re.DOTALL)
    shown = {path: code for path, code in blocks}
    files = {str(p.relative_to(REPO)) for p in EXAMPLE.glob("*.py")}
    assert set(shown) == files, "every file of the example is shown in the guide, and nothing else"
    for path, code in shown.items():
        assert code == (REPO / path).read_text(encoding="utf-8"), f"{path} in the guide differs from the file"


@pytest.mark.spark  # the command starts the local Spark session itself
def test_the_example_is_a_module_of_the_cli_once_registered(attendance, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OEA_SALT", "attendance-example-salt-0f3")
    lake = tmp_path / "lake"
    assert main(["--lake", str(lake), "land", "attendance", str(EXAMPLE / "test_data")]) == 0
    assert re.match(r"landed 2 files as batch \d{8}T\d+Z", capsys.readouterr().out)
    assert main(["--lake", str(lake), "ingest", "attendance"]) == 0
    assert "daily_attendance: 1 batches, 23 rows written, 1 rejected" in capsys.readouterr().out
    pseudo = DeltaTable(str(lake / "stage2p" / "attendance" / "daily_attendance_pseudo")).to_pyarrow_table()
    assert pseudo.num_rows == 23 and "student_id" not in pseudo.column_names
    assert "student_id_pseudonym" in pseudo.column_names and {"year", "month"} <= set(pseudo.column_names)
    lookup = DeltaTable(str(lake / "stage2np" / "attendance" / "daily_attendance_lookup")).to_pyarrow_table()
    assert sorted(lookup.column("student_id").to_pylist()) == [f"S{1001 + i}" for i in range(12)]
    rejected = DeltaTable(str(lake / "stage2np" / "attendance" / "daily_attendance_rejected")).to_pyarrow_table()
    (row,) = rejected.to_pylist()
    assert row["student_id"] == "S1008" and row["minutes_absent"] == "not recorded"
    assert row["_reject_reason"] == "minutes_absent: 'not recorded' is not a valid int"
    assert row["_source_file"].endswith("attendance_2026-09-02.csv")

    assert main(["--lake", str(lake), "ingest", "attendance"]) == 0
    assert capsys.readouterr().out.strip() == "daily_attendance: nothing new"
    assert main(["--lake", str(lake), "views", "attendance", "--out", str(tmp_path / "views")]) == 0
    script = (tmp_path / "views" / "attendance_views.sql").read_text()
    assert "CREATE OR ALTER VIEW [dbo].[daily_attendance_pseudo]" in script
    assert "stage2p/attendance/daily_attendance_pseudo/" in script


@pytest.mark.spark  # the command starts the local Spark session itself
def test_oea_run_runs_a_module_without_notebooks_through_its_own_land_and_ingest(attendance, tmp_path, monkeypatch):
    monkeypatch.setenv("OEA_SALT", "attendance-example-salt-0f3")
    lake = tmp_path / "lake"
    assert main(["--lake", str(lake), "run", "--module", "attendance", "--sample", str(EXAMPLE / "test_data"),
                 "--out", str(tmp_path / "views")]) == 0
    assert DeltaTable(str(lake / "stage2p" / "attendance" / "daily_attendance_pseudo")).version() == 0
    assert (tmp_path / "views" / "attendance_views.sql").is_file()


def test_closing_a_module_leaves_a_session_it_did_not_start_running(attendance, spark, tmp_path):
    module = sources.create("attendance", lake=str(tmp_path / "lake"))
    assert module.spark is spark
    module.close()
    assert spark.sparkContext._jsc is not None and spark.range(3).count() == 3
