"""The package's import graph: no module of oea_core imports, even indirectly, one that imports it back."""

from __future__ import annotations

import graphlib

import grimp


def test_no_import_cycle_between_any_two_modules_of_oea_core():
    graph = grimp.build_graph("oea_core", exclude_type_checking_imports=True, cache_dir=None)
    sorter = graphlib.TopologicalSorter(
        {module: graph.find_modules_directly_imported_by(module) for module in graph.modules})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert "oea_core.delta.spark_delta" in graph.find_modules_directly_imported_by("oea_core.delta")
