"""oea_core.notebook_run: a real kernel runs a tiny notebook, and nothing of the run is left behind."""

from __future__ import annotations

import tempfile

import nbformat
import pytest

from oea_core.notebook_run import execute_notebook


@pytest.mark.notebooks
def test_a_run_leaves_no_kernel_folder_in_the_temporary_directory(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("greeting = 'hello'")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell("print(greeting * 2)")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, source)
    target = execute_notebook(str(source), str(tmp_path / "out" / "tiny.ipynb"), {"greeting": "hi"})
    executed = nbformat.read(target, as_version=4)
    assert "hihi" in executed.cells[-1].outputs[0]["text"]
    assert [p.name for p in scratch.iterdir() if p.name.startswith("oea-kernel-")] == []
