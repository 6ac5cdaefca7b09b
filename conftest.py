"""Test distribution for pytest-xdist (``-n 2 --dist loadgroup`` in pyproject.toml): one group per test
file, so module fixtures (a lake ingested once) are built once; the notebooks form one group, run in
order, because they share the repository's ./lake."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        path = item.path.as_posix()
        group = "notebooks" if "/notebooks/" in path and path.endswith(".ipynb") else path
        item.add_marker(pytest.mark.xdist_group(group))
