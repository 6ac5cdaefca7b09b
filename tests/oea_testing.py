"""What the tests share besides fixtures: the test salt and the Delta engine names.

Tests import these from here (``tests/`` is on ``pythonpath`` in pyproject.toml), never from
``conftest``: pytest loads conftest as a plugin, and importing it a second time as a module depends on
the import mode and on which directory pytest happened to put on ``sys.path``.
"""

from __future__ import annotations

from oea_core.delta import engines

TEST_SALT = "test-salt-5e1f"
# Every registered engine, so a new engine is tested without editing the tests.
ENGINES: tuple[str, ...] = tuple(engines.names())
