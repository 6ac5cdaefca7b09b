"""The package's import graph: no module of oea_core imports, even indirectly, one that imports it back."""

from __future__ import annotations

import ast
import graphlib
import re
import sys
from pathlib import Path

import grimp

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SRC = Path(__file__).resolve().parents[1] / "src" / "oea_core"


def test_no_import_cycle_between_any_two_modules_of_oea_core():
    graph = grimp.build_graph("oea_core", exclude_type_checking_imports=False, cache_dir=None)
    sorter = graphlib.TopologicalSorter(
        {module: graph.find_modules_directly_imported_by(module) for module in graph.modules})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert "oea_core.delta.spark_delta" in graph.find_modules_directly_imported_by("oea_core.delta")


# Package-internal imports inside a function, each with its measured reason. Everything else is at module top.
INNER_IMPORTS_ALLOWED: dict[str, str] = {}


def _inner_package_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                relative = isinstance(node, ast.ImportFrom) and node.level > 0
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(
                    node, "names", [])] if isinstance(node, ast.Import) else []
                if relative or any(name.split(".")[0] == "oea_core" for name in names):
                    found.append(f"{path.relative_to(SRC.parent)}:{function.name}")
    return found


def test_package_internal_imports_are_at_module_top():
    inner = [place for place in _inner_package_imports() if place not in INNER_IMPORTS_ALLOWED]
    assert not inner, f"move these imports to the top of their module (or give a measured reason): {inner}"


def test_the_layer_contract_names_every_module_of_the_package():
    """A new module must be put in a layer of the import-linter contract, or the layers check would skip it."""
    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    named = {name.strip() for layer in layers["layers"] for name in re.split(r"[|:]", layer)}
    top = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert top == named, f"not in a layer: {sorted(top - named)}; not a module: {sorted(named - top)}"
