"""Every command against a cloud lake (abfss://), on the Azurite emulator: the same tables as a local lake.

The lake's account is Azurite's ``devstoreaccount1``, reached through its connection string, as a
district's would be. Each test starts from an empty account and an empty working-copy cache. Tables
are read back by an independent client (delta-rs with storage options), never through the working copy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from deltalake import DeltaTable

from oea_core import LakePaths
from oea_core.cli import main
from oea_core.edfi import generate_edfi
from oea_core.errors import LakeStorageError
from oea_core.gold import build_star, build_vault
from oea_core.gold.model import STAR_TABLES, VAULT_TABLES
from oea_core.lake.cloud import SyncedFolder, open_cloud
from oea_core.lake.lease import blob_lease
from oea_core.lake.storage import (
    CONNECTION_STRING,
    CONTAINERS,
    EMULATOR_KEY,
    lake_credentials,
    lake_filesystem,
)
from oea_testing import TEST_SALT
from servers.edfi_api import CLIENT_ID, CLIENT_SECRET, EdFiTestApi

if TYPE_CHECKING:
    import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
CLEVER = REPO / "test_data" / "clever"
EDFI = REPO / "test_data" / "edfi"
LAKE_URL = "abfss://stage1np@devstoreaccount1.dfs.core.windows.net"


@pytest.fixture
def cloud(azurite, monkeypatch, tmp_path) -> LakePaths:
    """An empty lake on Azurite, its connection string in the environment, the test salt set."""
    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)
    monkeypatch.setenv("OEA_SALT", TEST_SALT)
    monkeypatch.setenv("OEA_ALLOW_SHORT_SALT", "1")
    lake = LakePaths.from_setting(LAKE_URL)
    fs = lake_filesystem(lake, check=False)
    existing = set(fs.ls("", detail=False, refresh=True))
    for container in CONTAINERS:
        if container in existing:
            fs.rm(container, recursive=True)
    fs.invalidate_cache()
    return lake


def oea(lake: str, *args: str) -> int:
    return main(["--lake", lake, *args])


def account_files(lake: LakePaths, container: str = "") -> dict[str, str]:
    """path -> ETag of every blob in the account (or one container): what changed, and what did not."""
    fs = lake_filesystem(lake, check=False)
    fs.invalidate_cache()
    containers = [container] if container else [c for c in fs.ls("", detail=False, refresh=True) if c in CONTAINERS]
    found = {}
    for name in containers:
        found.update({path: str(info["etag"]) for path, info in fs.find(name, detail=True).items()
                      if info.get("type") == "file" and "/locks/" not in f"/{path}"})
    return found


def cloud_table(lake: LakePaths, stage: str, source: str, table: str) -> pa.Table:
    url = f"abfss://{stage}@devstoreaccount1.dfs.core.windows.net/{source}/{table}"
    return DeltaTable(url, storage_options=lake_credentials(lake).delta_storage_options()).to_pyarrow_table()


def local_table(lake: Path, stage: str, source: str, table: str) -> pa.Table:
    return DeltaTable(str(lake / stage / source / table)).to_pyarrow_table()


def rows(table: pa.Table) -> list[tuple]:
    columns = sorted(table.column_names)
    return sorted(tuple(map(str, row)) for row in zip(*(table.column(c).to_pylist() for c in columns)))


def new_cache(monkeypatch, tmp_path: Path, name: str) -> None:
    """A second machine: the same account, an empty working copy."""
    monkeypatch.setenv("OEA_CACHE", str(tmp_path / name))


# Clever ---------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("spark")
def test_clever_on_azurite_makes_the_tables_a_local_lake_makes(cloud, engine, tmp_path, capsys):
    local = tmp_path / "local-lake"
    for lake in (LAKE_URL, str(local)):
        assert oea(lake, "land", "clever", str(CLEVER)) == 0
        assert oea(lake, "ingest", "clever") == 0
    for stage, table in [("stage2p", "daily_participation_pseudo"), ("stage2p", "resource_usage_pseudo"),
                         ("stage2np", "daily_participation_lookup"), ("stage2np", "resource_usage_lookup")]:
        theirs, ours = cloud_table(cloud, stage, "clever", table), local_table(local, stage, "clever", table)
        assert ours.num_rows > 0 and rows(theirs) == rows(ours), (stage, table)  # same pseudonyms too
    # The landed batch is whole in the account: its manifest names every file it holds.
    landed = account_files(cloud, "stage1np")
    manifests = [p for p in landed if p.endswith("/_manifest.json")]
    assert len(manifests) == 2
    fs = lake_filesystem(cloud, check=False)
    for manifest in manifests:
        folder = manifest.rsplit("/", 1)[0]
        named = {f"{folder}/{entry['path']}" for entry in json.loads(fs.cat_file(manifest))["files"]}
        assert named == {p for p in landed if p.startswith(folder + "/") and p != manifest}


@pytest.mark.usefixtures("spark")
def test_a_rerun_and_a_second_machine_change_nothing(cloud, monkeypatch, tmp_path, capsys):
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0
    assert oea(LAKE_URL, "ingest", "clever") == 0
    before = account_files(cloud)
    capsys.readouterr()
    assert oea(LAKE_URL, "ingest", "clever") == 0
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0
    assert "nothing new: all 18 files were landed before" in capsys.readouterr().out
    assert account_files(cloud) == before

    new_cache(monkeypatch, tmp_path, "second-machine")
    second = LakePaths.from_setting(LAKE_URL)
    assert second.root != cloud.root and not os.path.exists(second.root)
    assert oea(LAKE_URL, "ingest", "clever") == 0
    out = capsys.readouterr().out
    assert "daily_participation: nothing new" in out and "resource_usage: nothing new" in out
    assert account_files(cloud) == before
    # Its working copy holds what the account holds (the views' tables read from it by oea sql).
    assert oea(LAKE_URL, "sql", "--csv", "SELECT count(*) AS n FROM sdb_dev_s2p_clever.dbo.daily_participation_pseudo") == 0
    assert capsys.readouterr().out.splitlines()[1] == str(cloud_table(cloud, "stage2p", "clever",
                                                                      "daily_participation_pseudo").num_rows)


@pytest.mark.usefixtures("spark")
def test_views_are_typed_from_the_accounts_delta_schemas(cloud, monkeypatch, tmp_path):
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0
    assert oea(LAKE_URL, "ingest", "clever") == 0
    new_cache(monkeypatch, tmp_path, "views-only")  # nothing local: the schemas can only come from the account
    assert oea(LAKE_URL, "views", "clever", "--out", str(tmp_path / "views")) == 0
    script = (tmp_path / "views" / "clever_views.sql").read_text()
    assert script.count(" WITH (") == 4
    assert "devstoreaccount1" in script
    assert not os.path.exists(LakePaths.from_setting(LAKE_URL).table("stage2p", "clever",
                                                                     "daily_participation_pseudo"))


@pytest.mark.usefixtures("spark")
def test_a_failed_run_pushes_nothing_and_the_next_run_starts_from_the_account(cloud, monkeypatch, tmp_path,
                                                                              capsys):
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0
    assert oea(LAKE_URL, "ingest", "clever") == 0
    before = account_files(cloud)
    # Another salt than the one the lake's fingerprint (pushed with the first ingest) records: refused.
    new_cache(monkeypatch, tmp_path, "wrong-salt-machine")
    monkeypatch.setenv("OEA_SALT", "another-salt-entirely-0123456789")
    assert oea(LAKE_URL, "ingest", "clever") == 1
    assert "is not the salt of lake storage account 'devstoreaccount1'" in capsys.readouterr().err
    assert account_files(cloud) == before


@pytest.mark.usefixtures("spark")
def test_an_interrupted_landing_leaves_no_batch_that_ingest_would_read(cloud, monkeypatch, tmp_path, capsys):
    real = SyncedFolder._put_once

    def cut(self, relative):
        if relative.endswith("_manifest.json"):
            raise ConnectionResetError("connection lost")  # the data files are up, the manifests are not
        real(self, relative)

    monkeypatch.setattr(SyncedFolder, "_put_once", cut)
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 1
    err = capsys.readouterr().err
    assert "uploading stage1np/clever to storage account 'devstoreaccount1' failed" in err and "rerun" in err
    monkeypatch.setattr(SyncedFolder, "_put_once", real)
    landed = account_files(cloud, "stage1np")
    assert landed and not any(p.endswith("_manifest.json") for p in landed)  # a half batch in the account

    new_cache(monkeypatch, tmp_path, "reader")
    assert oea(LAKE_URL, "lake", "check") == 1
    report = capsys.readouterr().out
    assert report.count("landing ") == len(landed) and "oea lake check --repair" in report
    assert oea(LAKE_URL, "ingest", "clever") == 0  # reads nothing, and removes the half batch under the lock
    assert account_files(cloud, "stage1np") == {}
    assert not any(p.startswith(("stage2p/", "stage2np/")) for p in account_files(cloud))

    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0  # landing again lands it whole
    assert oea(LAKE_URL, "ingest", "clever") == 0
    assert cloud_table(cloud, "stage2p", "clever", "daily_participation_pseudo").num_rows == 138


@pytest.mark.usefixtures("spark")
def test_an_ingest_cut_before_its_commits_leaves_the_tables_as_they_were(cloud, monkeypatch, tmp_path, capsys):
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0
    real = SyncedFolder._put_once

    def cut(self, relative):
        if "/_delta_log/" in relative:
            raise TimeoutError("the connection timed out")  # data files are up, no log entry is
        real(self, relative)

    monkeypatch.setattr(SyncedFolder, "_put_once", cut)
    assert oea(LAKE_URL, "ingest", "clever") == 1
    assert "failed (TimeoutError: the connection timed out)" in capsys.readouterr().err
    monkeypatch.setattr(SyncedFolder, "_put_once", real)
    orphans = [p for p in account_files(cloud) if p.endswith(".parquet")]  # stage2np's: the first folder pushed
    assert orphans and not any("/_delta_log/" in p for p in account_files(cloud))

    new_cache(monkeypatch, tmp_path, "checker")
    capsys.readouterr()
    assert oea(LAKE_URL, "lake", "check", "--module", "clever") == 1
    report = capsys.readouterr().out
    assert report.count("uncommitted") >= len(orphans)
    assert oea(LAKE_URL, "lake", "check", "--module", "clever", "--repair") == 0
    assert not any(p.endswith(".parquet") for p in account_files(cloud))

    assert oea(LAKE_URL, "ingest", "clever") == 0
    table = cloud_table(cloud, "stage2p", "clever", "daily_participation_pseudo")
    assert table.num_rows == 138
    named = {"stage2p/clever/daily_participation_pseudo/" + uri.split("/daily_participation_pseudo/", 1)[1]
             for uri in DeltaTable(
                 "abfss://stage2p@devstoreaccount1.dfs.core.windows.net/clever/daily_participation_pseudo",
                 storage_options=lake_credentials(cloud).delta_storage_options()).file_uris()}
    assert {p for p in account_files(cloud, "stage2p") if "/daily_participation_pseudo/" in p
            and p.endswith(".parquet")} == named


@pytest.mark.usefixtures("spark")
def test_a_commit_another_writer_made_first_is_refused_and_kept(cloud, monkeypatch, tmp_path):
    assert oea(LAKE_URL, "land", "clever", str(CLEVER)) == 0
    assert oea(LAKE_URL, "ingest", "clever") == 0
    table = "stage2p/clever/daily_participation_pseudo/_delta_log/00000000000000000001.json"
    folder = open_cloud(cloud).folder("stage2p", "clever")
    folder.pull()
    # This working copy makes version 1; meanwhile a writer elsewhere (Synapse, say) commits its own version 1.
    mine = Path(cloud.root, table)
    mine.write_text(json.dumps({"commitInfo": {"operation": "mine"}}) + "\n")
    fs = lake_filesystem(cloud, check=False)
    fs.pipe_file(table, json.dumps({"commitInfo": {"operation": "theirs"}}).encode() + b"\n")
    with pytest.raises(LakeStorageError, match="another writer committed this version of the Delta table first"):
        folder.push()
    assert b"theirs" in fs.cat_file(table)
    folder.pull()  # the next run starts from the account's state
    assert "theirs" in mine.read_text()


@pytest.mark.usefixtures("spark")
def test_a_run_elsewhere_holding_the_lease_keeps_this_one_out(cloud, capsys):
    with blob_lease(lake_credentials(cloud), "clever", "clever ingest"):
        assert oea(LAKE_URL, "ingest", "clever") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "clever ingest already running since" in err and "storage account 'devstoreaccount1'" in err


def test_wrong_credentials_are_one_line_naming_the_account_and_the_setting(cloud, monkeypatch, capsys):
    wrong = os.environ[CONNECTION_STRING].replace(EMULATOR_KEY, "d3Jvbmcta2V5LW5vdC10aGUtZW11bGF0b3Itb25l")
    monkeypatch.setenv(CONNECTION_STRING, wrong)
    for command in (["land", "clever", str(CLEVER)], ["ingest", "clever"], ["views", "clever"], ["sql", "--list"]):
        assert oea(LAKE_URL, *command) == 1, command
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "storage account 'devstoreaccount1'" in err and CONNECTION_STRING in err
        assert "d3Jvbmcta2V5" not in err
    monkeypatch.delenv(CONNECTION_STRING)  # no credential at all: DefaultAzureCredential finds none here
    assert oea(LAKE_URL, "ingest", "clever") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no credential for storage account 'devstoreaccount1'" in err


# Ed-Fi ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("spark")
def test_edfi_on_azurite_makes_the_tables_a_local_lake_makes(cloud, monkeypatch, tmp_path, capsys):
    local = tmp_path / "local-lake"
    for lake in (LAKE_URL, str(local)):
        assert oea(lake, "land", "edfi", str(EDFI), "--batch-id", "20261001T000000Z") == 0  # rows hold it
        assert oea(lake, "ingest", "edfi") == 0
    fs = lake_filesystem(cloud, check=False)
    for stage in ("stage2np", "stage2p"):
        tables = sorted(p.name for p in (local / stage / "edfi").iterdir())
        assert len(tables) > 10
        assert sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{stage}/edfi", detail=False)) == tables
        for table in tables:
            assert rows(cloud_table(cloud, stage, "edfi", table)) == rows(local_table(local, stage, "edfi", table)), \
                (stage, table)
    # the gold layer: built on the working copy from what the account holds, pushed, the same as a local lake's
    load_ts = dt.datetime(2026, 10, 2, 6, tzinfo=dt.timezone.utc)
    for lake in (LAKE_URL, str(local)):
        assert build_vault(lake, "g1", load_ts=load_ts).rows > 0
        assert build_star(lake, "g1", effective_date="2026-10-02").rows > 0
    for area, tables in (("vault", VAULT_TABLES), ("star", STAR_TABLES)):
        for table in tables:
            if (local / "stage3p" / area / table).is_dir():
                assert rows(cloud_table(cloud, "stage3p", area, table)) == \
                    rows(local_table(local, "stage3p", area, table)), (area, table)
    before = account_files(cloud)
    new_cache(monkeypatch, tmp_path, "second-machine")
    assert oea(LAKE_URL, "ingest", "edfi") == 0
    assert build_vault(LAKE_URL, "g1", load_ts=load_ts).rows == 0  # the batch's app ids are in the account
    assert build_star(LAKE_URL, "g1", effective_date="2026-10-02").rows == 0
    assert account_files(cloud) == before
    assert oea(LAKE_URL, "views", "edfi", "--out", str(tmp_path / "views")) == 0
    local_views = tmp_path / "local-views"
    assert oea(str(local), "views", "edfi", "--out", str(local_views), "--storage-account", "devstoreaccount1") == 0
    assert (tmp_path / "views" / "edfi_views.sql").read_text() == (local_views / "edfi_views.sql").read_text()
    shutil.rmtree(tmp_path / "second-machine")


@pytest.mark.slow
@pytest.mark.usefixtures("spark")
def test_edfi_lands_from_the_api_into_azurite_incrementally(cloud, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OEA_EDFI_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("OEA_EDFI_CLIENT_SECRET", CLIENT_SECRET)
    dataset = generate_edfi(students=8, staff=2, schools=1, batches=2, seed=3)
    with EdFiTestApi(dataset) as api:
        api.visible_batch = 0
        assert oea(LAKE_URL, "land", "edfi", "--api", api.url, "--resources", "students,schools") == 0
        assert "landed 2 resource batches" in capsys.readouterr().out
        stored = [p for p in account_files(cloud, "stage1np") if p.startswith("stage1np/edfi/_openapi/")]
        assert len(stored) == 2 and {p.rsplit("/", 1)[-1] for p in stored} == {"openapi.json", "_manifest.json"}
        new_cache(monkeypatch, tmp_path, "second-machine")  # the change versions landed are read from the account
        api.visible_batch = 1
        assert oea(LAKE_URL, "land", "edfi", "--api", api.url, "--resources", "students,schools") == 0
        out = capsys.readouterr().out
        assert "landed 1 resource batches" in out  # schools did not change
        assert "OpenAPI" not in out  # the stored document was pulled, and is unchanged
    assert oea(LAKE_URL, "ingest", "edfi") == 0
    assert "students (refined): 9 rows written, 0 set aside" in capsys.readouterr().out
    assert cloud_table(cloud, "stage2p", "edfi", "students").num_rows == 9
    assert CLIENT_SECRET not in json.dumps(account_files(cloud))


# flows, oea run -----------------------------------------------------------------------------------
@pytest.mark.spark
@pytest.mark.notebooks
@pytest.mark.slow
def test_a_flow_on_azurite_runs_its_notebook_and_checks_and_its_log_is_seen_elsewhere(cloud, monkeypatch, tmp_path,
                                                                                      capsys):
    flow = str(REPO / "flows" / "clever_flow.yaml")
    assert oea(LAKE_URL, "flow", "run", flow, "--batch-id", "f1") == 0
    assert cloud_table(cloud, "stage2p", "clever", "daily_participation_pseudo").num_rows == 138
    assert any(p.startswith("stage1np/clever/daily-participation/f1/") for p in account_files(cloud, "stage1np"))
    new_cache(monkeypatch, tmp_path, "second-machine")
    capsys.readouterr()
    assert oea(LAKE_URL, "flow", "status") == 0
    status = capsys.readouterr().out
    assert "clever" in status and "f1" in status and "success" in status
    executed = Path(LakePaths.from_setting(LAKE_URL).state_path("runs", "f1", "notebooks", "clever_ingestion.ipynb"))
    assert executed.exists() and TEST_SALT not in executed.read_text()
    assert EMULATOR_KEY not in executed.read_text()
    assert oea(LAKE_URL, "flow", "graph", flow, "--out", str(tmp_path / "graph")) == 0
    assert "success" in (tmp_path / "graph" / "clever.svg").read_text().lower()  # coloured by the run logged there
    # the same batch from the second machine: checkpointed there too, nothing runs
    assert oea(LAKE_URL, "flow", "run", flow, "--batch-id", "f1") == 0
    assert "(1 cached)" in capsys.readouterr().out


@pytest.mark.spark
@pytest.mark.notebooks
@pytest.mark.slow
def test_oea_run_on_azurite_lands_ingests_and_writes_typed_views(cloud, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert oea(LAKE_URL, "run", "--module", "clever", "--sample", str(CLEVER)) == 0
    assert cloud_table(cloud, "stage2p", "clever", "resource_usage_pseudo").num_rows == 178
    script = (tmp_path / "sql_views" / "clever_views.sql").read_text()
    assert script.count(" WITH (") == 4 and "devstoreaccount1" in script
