"""The test suite's own conventions: shared constants come from oea_testing, markers are registered."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import oea_testing
from oea_core.delta import engines

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_test_file_imports_conftest():
    importers = [str(p.relative_to(TESTS)) for p in sorted(TESTS.rglob("*.py")) if "conftest" in _imported_modules(p)]
    assert not importers, f"import shared constants from oea_testing, not conftest: {importers}"


def test_the_engines_under_test_are_the_registered_ones():
    assert oea_testing.ENGINES == tuple(engines.names())
    assert len(oea_testing.ENGINES) >= 2  # tests that compare engines need two


def test_the_default_run_leaves_out_every_heavy_marker(pytestconfig):
    heavy = {"spark", "notebooks", "slow", "crash", "azurite", "postgres", "sftp"}
    assert heavy <= {line.split(":")[0] for line in pytestconfig.getini("markers")}  # --strict-markers
    addopts = pytestconfig.getini("addopts")
    default_expr = addopts[addopts.index("-m") + 1]
    assert default_expr.startswith("not (") and set(re.findall(r"\w+", default_expr)) - {"not", "or"} == heavy



def test_ci_and_the_readme_run_everything_with_one_command():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if " -m pytest" in line]
    assert len(ci) == 1, ci
    command = ci[0].strip()
    assert ' -m ""' in command and "--nbmake tests notebooks" in command  # -m "" drops the default -m
    assert f"./scripts/setup.sh && {command}\n" in (REPO / "README.md").read_text()


def test_test_helpers_are_imported_one_way_from_the_two_helper_packages():
    local = {p.stem for p in TESTS.rglob("*.py") if p.parent != TESTS and not p.name.startswith("test_")}
    local |= {p.stem for p in TESTS.glob("*.py") if not p.name.startswith("test_")} - {"conftest"}
    local |= {p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in ("oea_testing", "servers")}
    importers = sorted(f"{p.relative_to(TESTS)}: {name}" for p in TESTS.rglob("*.py")
                       for name in _imported_modules(p) & local)
    assert not importers, f"import test helpers from the oea_testing or servers packages: {importers}"


def test_test_folders_mirror_the_package():
    src = REPO / "src" / "oea_core"
    packages = {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders - {"servers"} <= packages, f"test folders without a package: {sorted(folders - packages)}"
