"""What the tests share besides fixtures: the test salt, the Delta engine names, and marks set by node id.

Tests import these from here (``tests/`` is on ``pythonpath`` in pyproject.toml), never from
``conftest``: pytest loads conftest as a plugin, and importing it a second time as a module depends on
the import mode and on which directory pytest happened to put on ``sys.path``.
"""

from __future__ import annotations

from oea_core.delta import engines

TEST_SALT = "test-salt-5e1f"
# Every registered engine, so a new engine is tested without editing the tests.
ENGINES: tuple[str, ...] = tuple(engines.names())

# Marks for tests that start Spark or a notebook kernel themselves (through a flow or a subprocess), so
# no fixture shows it, in files whose decorators tests/conftest.py does not own; conftest applies them,
# and tests/test_test_layout.py checks that each test named here exists.
MARKS_BY_TEST: dict[str, tuple[str, ...]] = {
    "tests/flow/test_flow_cli.py::test_shipped_clever_flow_runs_with_its_checks": ("spark", "notebooks", "slow"),
}
