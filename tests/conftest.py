"""One session-scoped local Spark session and a fresh lake per test."""

from __future__ import annotations

import os

import pytest

from oea_core import LakePaths, Salt

TEST_SALT = "test-salt-5e1f"


@pytest.fixture(scope="session")
def spark():
    from oea_core.spark import get_spark

    session = get_spark("oea-tests")
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path) -> LakePaths:
    return LakePaths.from_setting(tmp_path / "lake")


@pytest.fixture
def salt() -> Salt:
    return Salt(TEST_SALT, "test")


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch):
    for name in ("OEA_LAKE", "OEA_SALT", "OEA_KEYVAULT_URL", "OEA_STORAGE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
