"""Serverless SQL view scripts: golden output for Clever, separate p/np databases, no injection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oea_core import LakePathError, LakePaths, view_set_script, views_script
from oea_core.clever import CleverModule
from oea_core.sql.views import write_views_script
from oea_testing import views_by_database

if TYPE_CHECKING:
    import pyarrow as pa

GOLDEN = Path(__file__).parents[1] / "golden" / "clever_views.sql"
ADLS = LakePaths(account="districtlake01")  # no working copy: no tables to read, as when scripts are made for Synapse


def clever_script(**kwargs) -> str:
    return views_script(ADLS, "clever", CleverModule(ADLS).outputs(), **kwargs)


def test_clever_script_matches_the_golden_file():
    script = clever_script(workspace="prod")
    if os.environ.get("OEA_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(script, encoding="utf-8")
    assert script == GOLDEN.read_text(encoding="utf-8"), "regenerate with OEA_UPDATE_GOLDEN=1 and review"


def test_pseudonymized_and_lookup_views_live_in_separate_databases():
    script = clever_script(workspace="prod")
    assert views_by_database(script) == {
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


def test_edfi_script_matches_the_golden_file():
    from oea_core.edfi import EdFiModule

    tables = EdFiModule(ADLS).outputs()
    assert ("stage2p", "students") in tables and ("stage2np", "students_lookup") in tables
    assert ("stage2np", "grades_lookup") not in tables  # no lookup without a `hash` column
    script = views_script(ADLS, "edfi", tables, workspace="prod")
    golden = GOLDEN.with_name("edfi_views.sql")
    if os.environ.get("OEA_UPDATE_GOLDEN") == "1":
        golden.write_text(script, encoding="utf-8")
    assert script == golden.read_text(encoding="utf-8"), "regenerate with OEA_UPDATE_GOLDEN=1 and review"


# --- typed columns, the data-source form, Spark DDL, and every script parsing as T-SQL ---

def _typed_table(path) -> None:
    import datetime
    import decimal

    import pyarrow as pa
    from deltalake import write_deltalake

    table = pa.table({
        "name": pa.array(["a"], pa.string()), "logins": pa.array([1], pa.int64()),
        "days": pa.array([2], pa.int32()), "active": pa.array([True]), "score": pa.array([0.5], pa.float64()),
        "day": pa.array([datetime.date(2024, 1, 2)], pa.date32()),
        "seen": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp("us", tz="UTC")),
        "amount": pa.array([decimal.Decimal("1.25")], pa.decimal128(10, 2)),
        "tags": pa.array([["x", "y"]], pa.list_(pa.string())),
    })
    write_deltalake(str(path), table)


def test_views_declare_column_types_from_the_delta_schema(tmp_path):
    lake = LakePaths.from_setting(tmp_path)
    _typed_table(lake.table("stage2p", "clever", "typed"))
    script = views_script(lake, "clever", [("stage2p", "typed"), ("stage2p", "absent")], account="acct01")
    assert ("FORMAT = 'DELTA') WITH ([name] VARCHAR(256), [logins] BIGINT, [days] INT, [active] BIT, "
            "[score] FLOAT, [day] DATE, [seen] DATETIME2(7), [amount] DECIMAL(10, 2), [tags] VARCHAR(8000)) "
            "AS [r];") in script
    # a table not on this lake gets no WITH clause, and the script says why
    assert "clever/absent/', FORMAT = 'DELTA') AS [r];" in script
    assert "had no local table to read types from" in script


def _sized_table() -> pa.Table:
    """A pseudonym, a short code, text longer than 8000 bytes but not 8000 characters, text whose bytes (not
    characters) need VARCHAR(512), a column with no value, and a gold hash key, hashdiff and fact id."""
    import hashlib

    import pyarrow as pa

    sha = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3)]
    return pa.table({
        "sis_id_pseudonym": pa.array([sha[0], None, sha[1]]),
        "grade": pa.array(["K", "12", None]),
        "comment": pa.array(["é" * 5000, "short", None]),  # 10,000 bytes, 5,000 characters
        "school_name": pa.array(["École " + "é" * 100, "Lincoln", "x"]),  # 207 bytes, 106 characters
        "note": pa.array([None, None, None], pa.string()),
        "student_hk": pa.array(sha), "hashdiff": pa.array(sha), "attendance_event_id": pa.array(sha),
        "logins": pa.array([1, 2, 3], pa.int64()),
    })


SIZED = ("[sis_id_pseudonym] VARCHAR(64), [grade] VARCHAR(256), [comment] VARCHAR(MAX), "
         "[school_name] VARCHAR(512), [note] VARCHAR(256), [student_hk] VARCHAR(64), [hashdiff] VARCHAR(64), "
         "[attendance_event_id] VARCHAR({id}), [logins] BIGINT")


def test_strings_are_sized_in_utf8_bytes_pseudonyms_64_long_text_max_and_empty_columns_256(tmp_path):
    import sqlfluff
    from deltalake import write_deltalake

    lake = LakePaths.from_setting(tmp_path)
    write_deltalake(lake.table("stage2p", "clever", "sized"), _sized_table())
    script = views_script(lake, "clever", [("stage2p", "sized")], account="acct01")
    assert f"FORMAT = 'DELTA') WITH ({SIZED.format(id=256)}) AS [r];" in script  # a fact id is sized as text...
    gold = views_script(lake, "clever", [("stage2p", "sized")], account="acct01", sha256=["attendance_event_id"])
    assert f"WITH ({SIZED.format(id=64)}) AS [r];" in gold  # ...unless the view set names it SHA-256
    assert "VARCHAR(8000)" not in script
    assert "unparsable" not in str(sqlfluff.parse(gold, dialect="tsql"))  # VARCHAR(MAX) is T-SQL


@pytest.mark.parametrize("longest, declared", [
    (None, "VARCHAR(256)"), (0, "VARCHAR(256)"), (128, "VARCHAR(256)"), (129, "VARCHAR(512)"),
    (256, "VARCHAR(512)"), (257, "VARCHAR(1024)"), (2048, "VARCHAR(4096)"), (2049, "VARCHAR(8000)"),
    (8000, "VARCHAR(8000)"), (8001, "VARCHAR(MAX)"), (10**6, "VARCHAR(MAX)"),
])
def test_a_string_is_declared_twice_its_longest_value_as_a_power_of_two_within_256_and_8000(longest, declared):
    from oea_core.sql.views import varchar

    assert varchar(longest) == declared


def test_a_table_pyarrow_cannot_read_keeps_unsized_strings(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    lake = LakePaths.from_setting(tmp_path)
    path = lake.table("stage2p", "clever", "vectors")
    write_deltalake(path, pa.table({"code": pa.array(["a"]), "id_pseudonym": pa.array(["f" * 64])}),
                    configuration={"delta.enableDeletionVectors": "true"})
    script = views_script(lake, "clever", [("stage2p", "vectors")], account="acct01")
    assert "WITH ([code] VARCHAR(8000), [id_pseudonym] VARCHAR(64)) AS [r];" in script


def test_a_cloud_lakes_views_are_sized_from_the_accounts_table(azurite, monkeypatch):
    from deltalake import write_deltalake

    from oea_core.lake.storage import CONNECTION_STRING, create_containers, lake_credentials, lake_filesystem

    monkeypatch.setenv(CONNECTION_STRING, azurite.connection_string)
    lake = LakePaths.from_setting("abfss://stage1np@devstoreaccount1.dfs.core.windows.net")
    credentials = lake_credentials(lake)
    create_containers(lake_filesystem(lake, check=False), credentials, ("stage2p",))
    url = "abfss://stage2p@devstoreaccount1.dfs.core.windows.net/clever/sized"
    write_deltalake(url, _sized_table(), mode="overwrite", storage_options=credentials.delta_storage_options())
    script = views_script(lake, "clever", [("stage2p", "sized")])
    assert f"WITH ({SIZED.format(id=256)}) AS [r];" in script
    assert not os.path.exists(lake.table("stage2p", "clever", "sized"))  # read on the account, not copied


def test_a_crafted_column_name_is_refused_naming_the_table(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    lake = LakePaths.from_setting(tmp_path)
    write_deltalake(lake.table("stage2p", "clever", "evil"), pa.table({"a]DROP": pa.array([1])}))
    with pytest.raises(LakePathError, match=r"column 'a\]DROP' of table 'evil' cannot be used as a SQL name"):
        views_script(lake, "clever", [("stage2p", "evil")], account="acct01")


def test_data_source_form_uses_a_managed_identity_credential_and_relative_paths():
    script = clever_script(workspace="prod", data_source=True)
    assert script.count("CREATE DATABASE SCOPED CREDENTIAL [oea_workspace_identity] "
                        "WITH IDENTITY = 'Managed Identity';") == 2  # one per database
    assert ("CREATE EXTERNAL DATA SOURCE [oea_stage2p] WITH (LOCATION = "
            "'https://districtlake01.dfs.core.windows.net/stage2p/', CREDENTIAL = [oea_workspace_identity]);") in script
    assert ("OPENROWSET(BULK 'clever/daily_participation_pseudo/', DATA_SOURCE = 'oea_stage2p', "
            "FORMAT = 'DELTA')") in script
    assert "https://districtlake01.dfs.core.windows.net/stage2p/clever" not in script


def _scripts() -> dict[str, str]:
    from oea_core.edfi import EdFiModule

    repo = Path(__file__).parents[2]
    scripts = {p.name: p.read_text(encoding="utf-8") for p in sorted((repo / "sql_views").glob("*.sql"))}
    scripts["clever_data_source"] = clever_script(data_source=True)
    scripts["edfi_data_source"] = views_script(ADLS, "edfi", EdFiModule(ADLS).outputs(), data_source=True)
    scripts["star_data_source"] = view_set_script(ADLS, "star", data_source=True)
    return scripts


@pytest.mark.slow  # sqlfluff takes seconds per script
@pytest.mark.parametrize("name", ["clever_views.sql", "edfi_views.sql", "star_views.sql", "vault_views.sql",
                                  "clever_data_source", "edfi_data_source", "star_data_source"])
def test_every_script_parses_as_tsql_with_nothing_unparsable(name):
    import sqlfluff

    script = _scripts()[name]
    tree = sqlfluff.parse(script, dialect="tsql")  # raises APIParsingError on any unparsable section
    text = str(tree)
    assert "unparsable" not in text
    assert text.count("'openrowset_segment'") == script.count("OPENROWSET(")


def test_a_tsql_parse_would_catch_a_broken_script():
    import sqlfluff
    from sqlfluff.api.simple import APIParsingError

    broken = clever_script().replace("FORMAT = 'DELTA')", "FORMAT = 'DELTA'", 1)
    with pytest.raises(APIParsingError):
        sqlfluff.parse(broken, dialect="tsql")


def test_lake_database_ddl_creates_one_database_per_stage_over_delta_locations():
    import sqlfluff

    from oea_core.sql.views import lake_database_ddl

    statements = lake_database_ddl(ADLS, "clever", CleverModule(ADLS).outputs(), workspace="prod")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `ldb_prod_s2p_clever`"
    assert ("CREATE TABLE IF NOT EXISTS `ldb_prod_s2np_clever`.`daily_participation_lookup` USING DELTA "
            "LOCATION 'abfss://stage2np@districtlake01.dfs.core.windows.net/clever/daily_participation_lookup'"
            ) in statements
    assert sum(s.startswith("CREATE DATABASE") for s in statements) == 2
    sqlfluff.parse(";\n".join(statements) + ";\n", dialect="sparksql")
    with pytest.raises(LakePathError, match="table .* cannot be used as a SQL name"):
        lake_database_ddl(ADLS, "clever", [("stage2p", "t` LOCATION 'x")])
