"""One session-scoped local Spark session (with Delta Lake's jars), a fresh lake per test, and the engines.

Also one session-scoped Azurite (tests/servers/azurite.py), and marks tests by what they need, so the default run
(see ``addopts`` in pyproject.toml) can leave them out: ``spark`` for tests that take the spark, engine or
store fixture, ``azurite`` for tests that take the azurite fixture, ``sftp`` for tests that take the sshd
fixture (a real OpenSSH server, tests/servers/sftp.py), ``postgres`` for tests that take the postgres
fixture (a real PostgreSQL server, tests/servers/postgres.py), ``notebooks`` for every notebook
that nbmake collects. Tests that start Spark or a kernel themselves (in a subprocess, through a flow) are
marked by hand. The constants tests share are in ``oea_testing``, not here.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from oea_core import LakePaths, Salt
from oea_testing import ENGINES, TEST_SALT
from oea_testing.full_disk import fill, tiny_disk
from servers.azurite import start_azurite
from servers.postgres import server_bin, start_postgres
from servers.sftp import SSHD, start_sshd

SPARK_FIXTURES = {"spark", "engine", "store"}
AZURE_SETTINGS = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
                  "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_ACCOUNT_NAME",
                  "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID",
                  "AZURE_STORAGE_ANON", "AZURE_FEDERATED_TOKEN_FILE", "AZURITE_BLOB_STORAGE_URL")

# libpq's settings: a test's server is named explicitly, never the machine's
PG_SETTINGS = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE")


# The longest test files (their summed durations in a full run, longest first), which the run starts with so
# that the two workers (-n 2) finish together; every other file follows in collection order.
LONGEST_FIRST = ("tests/gold/test_history.py", "tests/edfi/test_edfi_ingest.py", "tests/test_benchmarks.py",
                 "notebooks", "tests/test_notebooks.py", "tests/flow/test_flow_cli.py", "tests/lake/test_cloud.py",
                 "tests/gold/test_partial.py", "tests/publish/test_publish.py", "tests/test_tasks.py")
# files whose tests share no module fixture, so each test may go to either worker
SPREAD_BY_TEST = ("tests/test_benchmarks.py",)


def _rank(item) -> int:
    path = item.nodeid.split("::", 1)[0]
    place = "notebooks" if item.path.suffix == ".ipynb" else path
    return LONGEST_FIRST.index(place) if place in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items):
    for item in items:
        if SPARK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.spark)
        if "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.azurite)
        if "sshd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sftp)
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if item.path.suffix == ".ipynb":  # nbmake's items, one per notebook
            item.add_marker(pytest.mark.notebooks)
    items.sort(key=_rank)  # stable: the notebooks and each file's tests keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n 2 --dist loadfile``: each test file on one worker (its module fixtures built once), and nbmake's
    notebooks all on one worker in collection order: they share the repository's lake/ (lake_path "../../lake")
    and each reads what the one before wrote. (xdist_group marks cannot say this under pytest 9.2: xdist 3.8's
    loadgroup renames ``item._nodeid``, which pytest 9.2 no longer reads.) Files are handed out in the order
    collected (LONGEST_FIRST first), not xdist's most-tests-first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndNotebooks(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.endswith(".ipynb"):
                return "nbmake notebooks"
            return nodeid if path in SPREAD_BY_TEST else path

    config.option.loadscopereorder = False
    return FilesAndNotebooks(config, log)


@pytest.fixture(scope="session")
def spark():
    from oea_core.spark import MEMORY_SETTING, get_spark

    # one session runs the whole suite's Spark tests (the processes the tests start keep the default)
    # under pytest-xdist (-n 2) each worker has its own session: two 5g heaps fit 24 GiB beside the 3g of the
    # notebook kernels and commands the tests start
    os.environ.setdefault(MEMORY_SETTING, "5g")
    try:
        session = get_spark("oea-tests")
    finally:
        if os.environ.get(MEMORY_SETTING) == "5g":
            del os.environ[MEMORY_SETTING]
    yield session
    session.stop()


@pytest.fixture(scope="module", autouse=True)
def _delta_logs_released():
    """After each test file, the session's Delta table logs are let go: the suite opens thousands of tables,
    and their cached snapshots filled a 3 GB heap by the middle of a full run (full GCs back to back)."""
    yield
    if "pyspark.sql" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None and "delta" in session.conf.get("spark.sql.extensions", ""):
        session._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite's Blob service on a free loopback port, in memory, for the whole session."""
    with start_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd():
    """Debian's OpenSSH server on a free loopback port, as an unprivileged user, for the whole session."""
    if not os.path.exists(SSHD):
        # failed, not skipped (as Azurite): CI must never pass the sftp tests by leaving them out
        pytest.fail(f"{SSHD} is not installed: apt-get install openssh-server (scripts/setup.sh does), or leave "
                    "the sftp tests out with -m 'not sftp'")
    # not under pytest's tmp_path: its parents are private to this user, and sshd runs as another
    with start_sshd(Path(tempfile.mkdtemp(prefix="oea-sftp-"))) as server:
        yield server
    shutil.rmtree(os.path.dirname(server.data), ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a free loopback port, as an unprivileged user, for the whole session."""
    if server_bin() is None:
        pytest.fail("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): apt-get install postgresql "
                    "(scripts/setup.sh does), or leave the postgres tests out with -m 'not postgres'")
    # not under pytest's tmp_path, for the same reason as sshd's
    with start_postgres(Path(tempfile.mkdtemp(prefix="oea-pg-"))) as server:
        yield server


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch) -> str:
    """Each Delta engine in turn, also for subprocesses and notebook kernels (through OEA_ENGINE)."""
    monkeypatch.setenv("OEA_ENGINE", request.param)
    return request.param


@pytest.fixture
def store(spark, engine):
    from oea_core.delta import delta_store

    return delta_store(spark, engine)


@pytest.fixture
def lake(tmp_path) -> LakePaths:
    return LakePaths.from_setting(tmp_path / "lake")


@pytest.fixture(scope="session")
def small_gold(spark, tmp_path_factory):
    """The gold tests' small vault and star (oea_testing.gold_data.build_small_gold), built once per session
    (under xdist, once per worker). Shared and read-only: a test that writes takes a copy (gold_lake,
    vault_lake)."""
    from oea_testing.gold_data import build_small_gold

    return build_small_gold(spark, tmp_path_factory.mktemp("small-gold"))


@pytest.fixture
def gold_lake(small_gold, tmp_path) -> LakePaths:
    """A copy of small_gold's lake after the star's build, for one test, at the path the lake fixture has."""
    shutil.copytree(small_gold.root, tmp_path / "lake")
    return LakePaths.from_setting(tmp_path / "lake")


@pytest.fixture
def vault_lake(small_gold, tmp_path) -> LakePaths:
    """A copy of small_gold's lake right after the vault's build (no star yet), at the lake fixture's path."""
    shutil.copytree(small_gold.vault_root, tmp_path / "lake")
    return LakePaths.from_setting(tmp_path / "lake")


@pytest.fixture
def salt() -> Salt:
    return Salt(TEST_SALT, "test")


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("OEA_CACHE", str(tmp_path / "oea-cache"))  # cloud lakes' working copies, per test
    for name in ("OEA_LAKE", "OEA_SALT", "OEA_KEYVAULT_URL", "OEA_STORAGE_ACCOUNT", "OEA_ENGINE",
                 "OEA_ALLOW_SHORT_SALT", "OEA_LOCK_WAIT", "OEA_SFTP_PASSWORD",
                 "OEA_SFTP_KEY_FILE", "OEA_SFTP_KNOWN_HOSTS", *PG_SETTINGS, *AZURE_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")


@pytest.fixture
def full_lake(tmp_path):
    """A lake on a real disk (a tiny tmpfs) that is full to the last byte."""
    with tiny_disk(tmp_path / "disk", "256k") as mount:
        lake = LakePaths.from_setting(mount / "lake")
        os.makedirs(lake.root)
        fill(mount)
        yield lake, mount
