"""The module notebooks: committed clean, run under papermill and ``oea run``, idempotent, salt-free."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").rglob("*.ipynb"))
NOTEBOOK_SALT = "nb-salt-0c4f9e-2a7b"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_thin_and_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    assert any("from oea_core" in c.source for c in code)
    assert "lake_path" in tagged[0].source
    assert not any("OEA_SALT" in c.source or "reveal(" in c.source for c in code)


def test_module_notebooks_are_committed():
    names = {p.name for p in NOTEBOOKS}
    assert {"Clever_py.ipynb", "Clever_module_ingestion.ipynb", "EdFi_py.ipynb", "EdFi_1_land.ipynb",
            "EdFi_2_ingest.ipynb", "EdFi_3_refine.ipynb"} <= names


def _versions(lake: Path) -> dict[str, int]:
    tables = [p.parent for p in lake.glob("stage2*/*/*/_delta_log")]
    return {str(t.relative_to(lake)): DeltaTable(str(t)).version() for t in tables}


ENGINE_INFO = {"delta-rs": "delta-rs:py-", "spark-delta": "Delta-Lake/3.3"}
OTHER = {"delta-rs": "spark-delta", "spark-delta": "delta-rs"}


@pytest.mark.notebooks
@pytest.mark.slow
def test_oea_run_then_papermill_again_changes_nothing_and_never_saves_the_salt(tmp_path, monkeypatch):
    """`oea run` writes with the engine that is not the local default, then every notebook runs again on the
    default and writes nothing. (nbmake runs the notebooks from an empty lake on the default, so every
    notebook writes with both engines.)"""
    import papermill as pm

    from oea_core.delta import LOCAL_DEFAULT

    engine = OTHER[LOCAL_DEFAULT]
    monkeypatch.setenv("OEA_ENGINE", engine)
    lake = tmp_path / "lake"
    monkeypatch.setenv("OEA_SALT", NOTEBOOK_SALT)
    run = subprocess.run(
        [sys.executable, "-m", "oea_core.cli", "--lake", str(lake), "run",
         "--notebooks", str(REPO / "notebooks"),  # samples: the repository's test_data/<module>
         "--out", str(tmp_path / "views")],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr
    # a first run that reads clean: only oea's own lines (no kernel transport warning, no shutdown noise)
    assert run.stderr and all(line.startswith("oea: ") for line in run.stderr.splitlines()), run.stderr
    assert run.stderr.count(" done in ") == 4  # one progress line per notebook, with its time
    summary = re.search(r"^oea run: (\d+) tables written, ([\d,]+) rows, ([\d,]+) set aside, in \d+ s$", run.stdout,
                        re.MULTILINE)
    assert summary and int(summary[1]) > 40 and int(summary[2].replace(",", "")) > 1000, run.stdout
    for name in ("clever", "edfi"):  # the committed scripts are what `oea run` writes over the samples
        written = (tmp_path / "views" / f"{name}_views.sql").read_text(encoding="utf-8")
        assert written == (REPO / "sql_views" / f"{name}_views.sql").read_text(encoding="utf-8"), name
    executed = list((lake / "oea-framework" / "runs").rglob("*.ipynb"))
    assert sorted(p.name for p in executed) == ["Clever_module_ingestion.ipynb", "EdFi_1_land.ipynb",
                                                "EdFi_2_ingest.ipynb", "EdFi_3_refine.ipynb"]
    before = _versions(lake)
    for table in ("stage2p/clever/daily_participation_pseudo", "stage2p/edfi/students"):
        first = DeltaTable(str(lake / table)).history()[-1]
        assert ENGINE_INFO[engine] in first["engineInfo"], (table, first["engineInfo"])
    monkeypatch.setenv("OEA_ENGINE", OTHER[engine])  # the kernels below write with the other engine
    assert {"stage2np/edfi/students", "stage2p/edfi/students", "stage2np/edfi/students_lookup",
            "stage2p/edfi/sections_class_periods"} <= set(before)
    assert {"stage2p/clever/daily_participation_pseudo", "stage2np/clever/daily_participation_lookup",
            "stage2p/clever/resource_usage_pseudo", "stage2np/clever/resource_usage_lookup"} <= set(before)
    assert DeltaTable(str(lake / "stage2p/clever/daily_participation_pseudo")).to_pyarrow_dataset(
    ).count_rows() == 138

    again = tmp_path / "again.ipynb"
    source = REPO / "notebooks" / "clever" / "Clever_module_ingestion.ipynb"
    pm.execute_notebook(str(source), str(again), kernel_name="python3", progress_bar=False,
                        cwd=str(source.parent),
                        parameters={"lake_path": str(lake), "source_path": str(REPO / "test_data" / "clever")})
    assert _versions(lake) == before
    text = again.read_text()
    assert "0 new batches" in text and "18 already landed" in text
    edfi_again = []
    for name in ("EdFi_1_land", "EdFi_2_ingest", "EdFi_3_refine"):
        source = REPO / "notebooks" / "edfi" / f"{name}.ipynb"
        edfi_again.append(tmp_path / f"{name}.ipynb")
        pm.execute_notebook(str(source), str(edfi_again[-1]), kernel_name="python3", progress_bar=False,
                            cwd=str(source.parent), parameters={"lake_path": str(lake)})
    assert _versions(lake) == before
    assert "0 resource batches landed" in edfi_again[0].read_text()
    assert "0 tables rebuilt" in edfi_again[2].read_text()
    for path in [*executed, again, *edfi_again, *tmp_path.rglob("*.sql")]:
        assert NOTEBOOK_SALT not in path.read_text(), f"the salt leaked into {path}"


@pytest.mark.notebooks
def test_class_notebook_lists_the_schemas_without_spark(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("OEA_SALT", NOTEBOOK_SALT)
    source = REPO / "notebooks" / "clever" / "Clever_py.ipynb"
    out = tmp_path / "Clever_py.ipynb"
    pm.execute_notebook(str(source), str(out), kernel_name="python3", progress_bar=False,
                        cwd=str(source.parent), parameters={"lake_path": str(tmp_path / "lake")})
    text = out.read_text()
    assert "daily-participation -> daily_participation_pseudo, daily_participation_lookup" in text
    assert "sis_id" in text and "hash" in text
    assert NOTEBOOK_SALT not in text
    assert not os.path.exists(tmp_path / "lake" / "stage2p")


@pytest.mark.notebooks
def test_edfi_class_notebook_lists_tables_and_protected_columns(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("OEA_SALT", NOTEBOOK_SALT)
    source = REPO / "notebooks" / "edfi" / "EdFi_py.ipynb"
    out = tmp_path / "EdFi_py.ipynb"
    pm.execute_notebook(str(source), str(out), kernel_name="python3", progress_bar=False,
                        cwd=str(source.parent), parameters={"lake_path": str(tmp_path / "lake")})
    text = out.read_text()
    assert "student_school_associations" in text and "studentUniqueId (hash-no-lookup)" in text
    assert "firstName (mask)" in text and NOTEBOOK_SALT not in text
