"""LakePaths: local and ADLS forms of every stage, source and table location, and bad names refused."""

from __future__ import annotations

import os

import pytest

from oea_core import STAGES, LakePathError, LakePaths
from oea_core.lake.paths import cache_root, check_name

ADLS = "abfss://stage1np@districtlake01.dfs.core.windows.net"


def test_local_table_is_stage_source_table(tmp_path):
    lake = LakePaths.from_setting(tmp_path / "lake")
    assert lake.is_local and lake.root == str((tmp_path / "lake").resolve())
    assert lake.table("stage2p", "clever", "daily_participation_pseudo") == os.path.join(
        lake.root, "stage2p", "clever", "daily_participation_pseudo")
    assert lake.path("stage1np", "clever", "daily-participation", "20260101T000000Z") == os.path.join(
        lake.root, "stage1np", "clever", "daily-participation", "20260101T000000Z")


def test_adls_stages_are_containers():
    lake = LakePaths(account="districtlake01")  # Synapse: Spark opens abfss:// itself
    assert not lake.is_local and lake.account == "districtlake01"
    assert lake.table("stage2np", "clever", "t_lookup") == (
        "abfss://stage2np@districtlake01.dfs.core.windows.net/clever/t_lookup")
    assert lake.state_path("runs", "r1") == "abfss://oea-framework@districtlake01.dfs.core.windows.net/runs/r1"
    assert [lake.stage_root(s).split("@")[0] for s in STAGES] == [f"abfss://{s}" for s in STAGES]


def test_an_abfss_setting_gets_a_working_copy_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OEA_CACHE", str(tmp_path / "cache"))
    lake = LakePaths.from_setting(ADLS)
    assert lake.is_cloud and not lake.is_local and lake.account == "districtlake01"
    assert lake.root == str(tmp_path / "cache" / "lakes" / "districtlake01")
    assert lake.table("stage2p", "clever", "t") == os.path.join(lake.root, "stage2p", "clever", "t")
    assert lake.setting == "abfss://stage1np@districtlake01.dfs.core.windows.net"
    assert LakePaths.from_setting(lake.setting) == lake
    with pytest.raises(LakePathError, match="no local secret file"):
        _ = lake.secret_file


def test_the_cache_defaults_to_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("OEA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == str(tmp_path / "xdg" / "oea")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == str(tmp_path / "home" / ".cache" / "oea")


def test_setting_comes_from_argument_then_oea_lake_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert LakePaths.from_setting().root == str(tmp_path / "lake")
    monkeypatch.setenv("OEA_LAKE", str(tmp_path / "env-lake"))
    assert LakePaths.from_setting().root == str(tmp_path / "env-lake")
    assert LakePaths.from_setting(tmp_path / "arg").root == str(tmp_path / "arg")


def test_https_url_for_serverless_sql(tmp_path):
    assert LakePaths.from_setting(ADLS).https_url("stage2p", "clever", "x_pseudo") == (
        "https://districtlake01.dfs.core.windows.net/stage2p/clever/x_pseudo/")
    local = LakePaths.from_setting(tmp_path)
    assert local.https_url("stage2p", "clever", "x", account="acct123").startswith("https://acct123.dfs")
    with pytest.raises(LakePathError, match="--storage-account"):
        local.https_url("stage2p", "clever", "x")
    with pytest.raises(LakePathError, match="'Bad-Acct'.*3-24 lower-case"):
        local.https_url("stage2p", "clever", "x", account="Bad-Acct")


def test_secret_file_is_outside_every_stage(tmp_path):
    lake = LakePaths.from_setting(tmp_path)
    secret = os.path.realpath(lake.secret_file)
    for stage in STAGES:
        assert not secret.startswith(os.path.realpath(lake.stage_root(stage)) + os.sep)
    assert not secret.startswith(os.path.realpath(lake.state_path()) + os.sep)
    with pytest.raises(LakePathError, match="OEA_SALT or OEA_KEYVAULT_URL"):
        _ = LakePaths.from_setting(ADLS).secret_file


@pytest.mark.parametrize("setting, message", [
    ("abfss://stage1np@UPPER.dfs.core.windows.net", "not of the form"),
    ("abfss://stage1np.dfs.core.windows.net", "not of the form"),
    ("s3://bucket/lake", "unsupported scheme"),
])
def test_bad_lake_settings_name_the_value(setting, message):
    with pytest.raises(LakePathError, match=message) as error:
        LakePaths.from_setting(setting)
    assert setting in str(error.value)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../etc", ".hidden", "-x", "a b", "a\\b"])
def test_unsafe_names_are_refused(tmp_path, name):
    lake = LakePaths.from_setting(tmp_path)
    with pytest.raises(LakePathError, match="not a valid lake name"):
        lake.table("stage2p", "clever", name)
    with pytest.raises(LakePathError, match="source"):
        lake.path("stage2p", name)


def test_unknown_stage_lists_the_stages(tmp_path):
    with pytest.raises(LakePathError, match="unknown stage 'stage4p'; the stages are stage1np, stage2np"):
        LakePaths.from_setting(tmp_path).table("stage4p", "clever", "t")


def test_check_name_returns_good_names():
    assert check_name("year=2022", "part") == "year=2022"
    assert check_name("daily_participation_pseudo", "table") == "daily_participation_pseudo"


def test_an_abfss_url_splits_into_container_account_and_path():
    from oea_core.lake.paths import AbfssUrl, parse_abfss

    assert parse_abfss(ADLS + "/clever/t_lookup") == AbfssUrl("stage1np", "districtlake01", "clever/t_lookup")
    assert parse_abfss(ADLS) == AbfssUrl("stage1np", "districtlake01", "")
    with pytest.raises(LakePathError, match=r"is not of the form abfss://<container>@<account>\.dfs"):
        parse_abfss("abfss://stage1np@districtlake01.blob.core.windows.net/x")
