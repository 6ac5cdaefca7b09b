"""Running a module's notebooks in sequence with papermill, saving each executed copy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import NotebookRunError

log = logging.getLogger("oea")


def default_notebooks_dir() -> str:
    """``./notebooks`` when present, else the repository's ``notebooks/`` beside ``src/``."""
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / "notebooks")


def run_notebooks(notebooks: list[str], parameters: dict, out_dir: str, notebooks_dir: str | None = None,
                  kernel_name: str = "python3") -> list[str]:
    """Execute ``notebooks`` (paths under ``notebooks_dir``) in order; returns the executed copies.

    Raises NotebookRunError naming the notebook, the cell's error and the saved copy.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebooks_dir = notebooks_dir or default_notebooks_dir()
    os.makedirs(out_dir, exist_ok=True)
    executed = []
    for relative in notebooks:
        source = os.path.join(notebooks_dir, relative)
        if not os.path.exists(source):
            raise NotebookRunError(f"notebook {source} does not exist: run from the repository root or "
                                   "pass --notebooks DIR", notebook=source)
        target = os.path.join(out_dir, os.path.basename(relative))
        log.info("running notebook %s", relative)
        declared = pm.inspect_notebook(source)
        try:
            pm.execute_notebook(source, target, parameters={k: v for k, v in parameters.items() if k in declared},
                                kernel_name=kernel_name,
                                progress_bar=False, cwd=os.path.dirname(source))
        except PapermillExecutionError as exc:
            raise NotebookRunError(f"notebook {relative} failed in cell {exc.exec_count}: {exc.ename}: "
                                   f"{exc.evalue} (executed copy: {target})", notebook=source) from exc
        executed.append(target)
    return executed
