"""What the tests share besides fixtures: the test salt, the Delta engine names, and small readers of
what the code writes (a folder's digest, a view script's databases).

Tests import these from here (``tests/`` is on ``pythonpath`` in pyproject.toml), never from
``conftest``: pytest loads conftest as a plugin, and importing it a second time as a module depends on
the import mode and on which directory pytest happened to put on ``sys.path``.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from oea_core.delta import engines

if TYPE_CHECKING:
    from pathlib import Path

TEST_SALT = "test-salt-5e1f"
# Every registered engine, so a new engine is tested without editing the tests.
ENGINES: tuple[str, ...] = tuple(engines.names())


def digest(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes, in path order: equal digests, equal folders."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def views_by_database(script: str) -> dict[str, str | None]:
    """``{view: database}`` of a serverless SQL views script (the ``USE`` before each ``CREATE ... VIEW``)."""
    views, database = {}, None
    for line in script.splitlines():
        if line.startswith("USE ["):
            database = line[5:line.index("]")]
        match = re.match(r"CREATE OR ALTER VIEW \[dbo\]\.\[(\w+)\]", line)
        if match:
            views[match.group(1)] = database
    return views


def secrets_found(secrets: dict[str, str], *roots: Path, texts: tuple[str, ...] = ()) -> list[str]:
    """Where any of ``secrets`` (label: value) appears: each file under ``roots`` (run logs, executed
    notebooks, logs, data) and each of ``texts`` (captured output, exception texts), as ``where: label``."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {label}" for label, value in secrets.items() if value.encode() in data]
    for number, text in enumerate(texts):
        found += [f"text {number}: {label}" for label, value in secrets.items() if value in text]
    return found
