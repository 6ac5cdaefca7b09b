"""The test suite's own conventions: shared constants come from oea_testing."""

from __future__ import annotations

import ast
from pathlib import Path

import oea_testing
from oea_core.delta import engines

TESTS = Path(__file__).resolve().parent


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

