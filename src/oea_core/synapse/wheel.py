"""``oea synapse wheel``: the oea_core wheel to upload as a Synapse workspace package."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

from ..errors import OEAError


def project_root() -> str:
    """The repository holding ``pyproject.toml`` (the package's source checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        raise OEAError(f"no pyproject.toml in {root}: build the wheel from a checkout of the repository")
    return root


def build_wheel(out_dir: str = "dist") -> str:
    """Build ``oea_core-<version>-py3-none-any.whl`` into ``out_dir`` with pip; returns its path."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out_dir,
               project_root()]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise OEAError(f"building the wheel failed ({' '.join(command)}):\n{done.stderr.strip()[-2000:]}")
    wheels = sorted(glob.glob(os.path.join(out_dir, "oea_core-*-py3-none-any.whl")), key=os.path.getmtime)
    if not wheels:
        raise OEAError(f"pip reported success but wrote no oea_core wheel to {out_dir}")
    return wheels[-1]
