"""The one notebook executor: ``oea run`` and flow steps run notebooks through ``execute_notebook``.

A parameter the notebook does not declare (in its cell tagged ``parameters``) is an error, never
dropped: a misspelt ``lake_path`` would otherwise run the notebook against its default lake.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import MissingExtraError, NotebookRunError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("oea")


def _papermill() -> Any:
    try:
        import papermill
    except ImportError:  # pragma: no cover - papermill is a core dependency; kept for trimmed installs
        raise MissingExtraError("running notebooks needs papermill: pip install 'oea-core' (it is a core "
                                "dependency) or pip install papermill") from None
    return papermill


def _append(path: str) -> BinaryIO:
    return open(path, "ab")  # the caller closes it


def _ipc_kernel_manager(kernel_log: str, folder: str) -> type:
    """A KernelManager whose kernels talk over IPC sockets in ``folder`` (private, temporary, removed by the
    caller after the run), not TCP: no port is opened, and the kernel prints no "running over TCP without encryption" warning into every run.

    The kernel process's own stdout and stderr (not the notebook's output, which the executed copy keeps)
    go to ``kernel_log``, not into the run's output: ipykernel logs asyncio noise while it shuts down
    ("Task was destroyed but it is pending", "Event loop is closed"; seen in CI), and Spark's JVM writes
    there too.

    It does not interrupt a kernel it is shutting down: jupyter_client does so before asking it to
    shut down, and a kernel interrupted while idle logs "KeyboardInterrupt caught in kernel" into the
    run's output (seen on a loaded machine). The notebook has finished by then; the shutdown request
    and, after the wait, SIGTERM/SIGKILL still stop the kernel."""
    from jupyter_client.manager import KernelManager

    class IpcKernelManager(KernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(folder, "kernel"))
            super().__init__(**kwargs)

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with _append(kernel_log) as out:  # the kernel holds its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = out
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return IpcKernelManager


def default_notebooks_dir() -> str:
    """``./notebooks`` when present, else the repository's ``notebooks/`` beside ``src/``."""
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / "notebooks")


def notebook_parameters(source: str) -> dict[str, Any]:
    """The parameters ``source`` declares in its ``parameters`` cell, by name (papermill's inspection)."""
    if not os.path.isfile(source):
        raise NotebookRunError(f"notebook {source} does not exist: run from the repository root or pass "
                               "--notebooks DIR", notebook=source)
    return dict(_papermill().inspect_notebook(source))


def check_parameters(source: str, parameters: Mapping[str, object]) -> None:
    """Raise NotebookRunError when ``parameters`` holds a name that ``source`` does not declare."""
    declared = notebook_parameters(source)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise NotebookRunError(f"notebook {source} has no parameter {', '.join(unknown)}; it declares "
                               f"{', '.join(sorted(declared)) or 'none'}. Fix the name, or add it to the "
                               "notebook's cell tagged 'parameters'", notebook=source)


def execute_notebook(source: str, target: str, parameters: Mapping[str, object], *,
                     kernel_name: str = "python3") -> str:
    """Run ``source`` with ``parameters`` into ``target`` (the executed copy); returns ``target``.

    Raises NotebookRunError for an undeclared parameter (before anything runs) or a failed cell,
    naming the notebook, the cell, its error and the executed copy.
    """
    check_parameters(source, parameters)
    pm = _papermill()
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    log.info("running notebook %s", source)
    started = time.monotonic()
    kernel_log = os.path.splitext(target)[0] + ".kernel.log"
    sockets = tempfile.mkdtemp(prefix="oea-kernel-")  # mode 0700; removed with the kernel's sockets below
    try:
        pm.execute_notebook(source, target, parameters=dict(parameters), kernel_name=kernel_name,
                            progress_bar=False, cwd=os.path.dirname(os.path.abspath(source)),
                            kernel_manager_class=_ipc_kernel_manager(kernel_log, sockets))
    except pm.PapermillExecutionError as exc:
        raise NotebookRunError(f"notebook {os.path.basename(source)} failed in cell {exc.exec_count}: {exc.ename}: "
                               f"{exc.evalue} (executed copy: {target}; the kernel's own output: {kernel_log})",
                               notebook=source) from None
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        if os.path.exists(kernel_log) and os.path.getsize(kernel_log) == 0:
            os.remove(kernel_log)
    log.info("notebook %s done in %.1f s", os.path.basename(source), time.monotonic() - started)
    return target
