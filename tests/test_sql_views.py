"""Serverless SQL view scripts: golden output for Clever, separate p/np databases, no injection."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from oea_core import LakePathError, LakePaths, views_script
from oea_core.clever import CleverModule
from oea_core.sql_views import write_views_script

GOLDEN = Path(__file__).parent / "golden" / "clever_views.sql"
ADLS = LakePaths.from_setting("abfss://stage1np@districtlake01.dfs.core.windows.net")


def clever_script(**kwargs) -> str:
    return views_script(ADLS, "clever", CleverModule(ADLS).output_tables(), **kwargs)


def test_clever_script_matches_the_golden_file():
    script = clever_script(workspace="prod")
    if os.environ.get("OEA_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(script, encoding="utf-8")
    assert script == GOLDEN.read_text(encoding="utf-8"), "regenerate with OEA_UPDATE_GOLDEN=1 and review"


def test_pseudonymized_and_lookup_views_live_in_separate_databases():
    script = clever_script(workspace="prod")
    views = {}
    database = None
    for line in script.splitlines():
        if line.startswith("USE ["):
            database = line[5:line.index("]")]
        match = re.match(r"CREATE OR ALTER VIEW \[dbo\]\.\[(\w+)\]", line)
        if match:
            views[match.group(1)] = database
    assert views == {
        "daily_participation_pseudo": "sdb_prod_s2p_clever", "resource_usage_pseudo": "sdb_prod_s2p_clever",
        "daily_participation_lookup": "sdb_prod_s2np_clever", "resource_usage_lookup": "sdb_prod_s2np_clever",
    }


def test_views_read_delta_over_https_and_another_account_can_be_given(tmp_path):
    script = views_script(LakePaths.from_setting(tmp_path), "clever",
                          [("stage2p", "daily_participation_pseudo")], account="otheracct9")
    assert ("OPENROWSET(BULK 'https://otheracct9.dfs.core.windows.net/stage2p/clever/"
            "daily_participation_pseudo/', FORMAT = 'DELTA')") in script
    assert "IF NOT EXISTS (SELECT * FROM sys.databases WHERE name = 'sdb_dev_s2p_clever')" in script


@pytest.mark.parametrize("kwargs, tables, message", [
    ({"workspace": "dev'; DROP DATABASE x; --"}, [("stage2p", "t")], "workspace .* cannot be used as a SQL name"),
    ({"workspace": "Dev"}, [("stage2p", "t")], "workspace 'Dev' cannot be used"),
    ({}, [("stage2p", "t]; DROP VIEW [v")], "table .* cannot be used as a SQL name"),
    ({}, [("stage2p", "t' --")], "cannot be used as a SQL name"),
    ({"account": "acct'--"}, [("stage2p", "t")], "storage account .* is not valid"),
    ({}, [("stage1np", "t")], "stage 'stage1np' has no SQL database"),
])
def test_unsafe_names_are_refused_not_quoted(kwargs, tables, message):
    with pytest.raises(LakePathError, match=message):
        views_script(ADLS, "clever", tables, **kwargs)


def test_unsafe_source_is_refused():
    with pytest.raises(LakePathError, match="cannot be used as a SQL name"):
        views_script(ADLS, "cle-ver", [("stage2p", "t")])


def test_write_names_the_file_after_the_source(tmp_path):
    path = write_views_script(clever_script(), str(tmp_path / "out"), "clever")
    assert path == str(tmp_path / "out" / "clever_views.sql")
    assert Path(path).read_text(encoding="utf-8") == clever_script()


def test_committed_sample_script_is_what_oea_run_writes():
    committed = Path(__file__).parents[1] / "sql_views" / "clever_views.sql"
    lake = LakePaths.from_setting("lake")
    expected = views_script(lake, "clever", CleverModule(lake).output_tables(), account="yourstorageaccount")
    assert committed.read_text(encoding="utf-8") == expected, "rerun `oea run` and commit sql_views/"


def test_edfi_script_matches_the_golden_file():
    from oea_core.edfi import EdFiModule

    tables = EdFiModule(ADLS).output_tables()
    assert ("stage2p", "students") in tables and ("stage2np", "students_lookup") in tables
    assert ("stage2np", "grades_lookup") not in tables  # no lookup without a `hash` column
    script = views_script(ADLS, "edfi", tables, workspace="prod")
    golden = GOLDEN.with_name("edfi_views.sql")
    if os.environ.get("OEA_UPDATE_GOLDEN") == "1":
        golden.write_text(script, encoding="utf-8")
    assert script == golden.read_text(encoding="utf-8"), "regenerate with OEA_UPDATE_GOLDEN=1 and review"
