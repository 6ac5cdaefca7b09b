"""oea_core is a typed package (PEP 561): ``py.typed`` sits in it and is packaged as package data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_py_typed_marker_is_in_the_package() -> None:
    marker = resources.files("oea_core") / "py.typed"
    assert marker.is_file()
    assert marker.read_text(encoding="utf-8") == ""


def test_py_typed_marker_is_listed_as_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["oea_core"]

