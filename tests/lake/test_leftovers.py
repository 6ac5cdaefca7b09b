"""Leftovers of interrupted runs: found by `oea lake check`, removed by `--repair` and by the next run."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable

from oea_core import LakePaths
from oea_core.clever.module import CleverModule
from oea_core.cli import main
from oea_core.lake.leftovers import find_leftovers

REPO = Path(__file__).resolve().parents[2]


def plant_leftovers(lake) -> dict[str, str]:
    """What a kill -9 at the wrong moment leaves, next to the committed files of a real table."""
    table = lake.table("stage2p", "clever", "daily_participation_pseudo")
    committed = sorted(glob.glob(os.path.join(table, "year=*", "month=*", "*.parquet")))
    assert committed, "the table has data files"
    partition = os.path.dirname(committed[0])
    staged = os.path.join(table, "_staging", "0f1e2d3c", "year=2022", "month=1")
    os.makedirs(staged)
    shutil.copyfile(committed[0], os.path.join(staged, "part-00000-staged.snappy.parquet"))
    moved = os.path.join(partition, "part-00009-moved-never-committed.c000.snappy.parquet")
    shutil.copyfile(committed[0], moved)
    Path(partition, ".part-00009-moved-never-committed.c000.snappy.parquet.crc").write_bytes(b"crc")
    landing = lake.path("stage1np", "clever", "daily-participation", "_landing_20220105T000000000000Z")
    os.makedirs(os.path.join(landing, "students"))
    Path(landing, "students", "half.csv").write_text("date,sis_id\n")
    return {"staging": os.path.join(table, "_staging", "0f1e2d3c"), "uncommitted": moved, "landing": landing}


def parquet_glob_rows(table: str) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(table, format="parquet", partitioning="hive").count_rows()


@pytest.fixture
def ingested(spark, lake, salt, engine):
    module = CleverModule(lake, spark=spark, salt=salt, engine=engine)
    module.land(REPO / "test_data" / "clever")
    module.ingest()
    return module


def test_lake_check_reports_leftovers_and_repair_removes_only_them(ingested, lake, capsys):
    planted = plant_leftovers(lake)
    table = lake.table("stage2p", "clever", "daily_participation_pseudo")
    rows = DeltaTable(table).to_pyarrow_table().num_rows
    assert parquet_glob_rows(table) > rows, "a Parquet glob reads the uncommitted file"
    found = find_leftovers(lake)
    assert {item.kind for item in found} == {"staging", "uncommitted", "landing"}
    assert {item.path for item in found} >= set(planted.values())
    assert main(["--lake", lake.root, "lake", "check"]) == 1
    out = capsys.readouterr().out
    assert "leftovers of interrupted runs; `oea lake check --repair` removes them" in out
    assert "uncommitted" in out and "part-00009-moved-never-committed" in out
    assert all(os.path.exists(path) for path in planted.values()), "check alone removes nothing"
    assert main(["--lake", lake.root, "lake", "check", "--repair"]) == 0
    assert "removed 4 leftovers" in capsys.readouterr().out
    assert not any(os.path.exists(path) for path in planted.values())
    assert not os.path.exists(os.path.join(table, "_staging"))
    assert DeltaTable(table).to_pyarrow_table().num_rows == rows == parquet_glob_rows(table)
    assert main(["--lake", lake.root, "lake", "check"]) == 0
    assert "no leftovers" in capsys.readouterr().out


def test_the_next_ingest_removes_what_an_interrupted_run_left(ingested, lake):
    planted = plant_leftovers(lake)
    ingested.ingest()  # nothing new to write, but it cleans up first
    assert not any(os.path.exists(path) for path in planted.values())
    assert find_leftovers(lake) == []
    table = lake.table("stage2p", "clever", "daily_participation_pseudo")
    assert parquet_glob_rows(table) == DeltaTable(table).to_pyarrow_table().num_rows


def test_the_data_of_a_first_commit_that_never_happened_is_a_leftover(tmp_path):
    lake = LakePaths.from_setting(tmp_path / "lake")
    never = Path(lake.table("stage2p", "clever", "new_table"), "year=2022")
    never.mkdir(parents=True)
    (never / "part-0.parquet").write_bytes(b"PAR1")
    (never / ".part-0.parquet.crc").write_bytes(b"crc")
    foreign = Path(lake.table("stage2p", "clever", "not_ours"))
    foreign.mkdir(parents=True)
    (foreign / "part-0.parquet").write_bytes(b"PAR1")
    (foreign / "README.txt").write_text("someone else's folder")  # not only data files: left alone
    found = find_leftovers(lake, "clever")
    assert sorted((os.path.relpath(item.path, never), item.kind) for item in found) == [
        (".part-0.parquet.crc", "uncommitted"), ("part-0.parquet", "uncommitted")]
