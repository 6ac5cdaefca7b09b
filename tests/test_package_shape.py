"""The package's shape (issue 30, one room per concern): no module of oea_core over 400 lines, no function over 80.

A function's length is its ``def`` through its last line (``end_lineno - lineno + 1``, docstring included); a
module's is its number of lines. Split a module that grows past the limit by concern (``docs/architecture.md``),
and a function into named steps.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "oea_core"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    modules = sorted(SRC.rglob("*.py"))
    assert modules, f"no modules under {SRC}"
    return modules


def test_no_module_is_longer_than_400_lines():
    offenders = []
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(SRC.parent)}: {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines (split them by concern): " + "; ".join(offenders)


def test_no_function_is_longer_than_80_lines():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name}: {length} lines")
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): "
                           + "; ".join(offenders))
