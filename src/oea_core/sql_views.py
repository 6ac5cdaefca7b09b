"""Serverless SQL scripts: a database per stage and sensitivity, a view per Delta table.

Pseudonymized (``p``) views and lookup (``np``) views live in separate databases, so access
to PII can be granted separately. Column types come from the Delta table's schema and are
declared in ``WITH (...)``, so Power BI sees stable types. Names that come from data are
checked and bracket-quoted. The same view plan feeds the Spark lake-database DDL and the
local DuckDB preview (:mod:`oea_core.sql_preview`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import LakePathError
from .storage import lake_credentials, storage_errors

if TYPE_CHECKING:
    from .paths import LakePaths

_SQL_NAME = re.compile(r"^[a-z0-9_]{1,100}$")
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_STAGE_CODES = {"stage2p": "s2p", "stage2np": "s2np", "stage3p": "s3p", "stage3np": "s3np"}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
# Delta primitive type -> serverless SQL type. Strings are UTF-8 in a *_UTF8 collation database.
_TSQL_TYPES = {
    "string": "VARCHAR(8000)", "long": "BIGINT", "integer": "INT", "short": "SMALLINT", "byte": "TINYINT",
    "boolean": "BIT", "double": "FLOAT", "float": "REAL", "date": "DATE", "timestamp": "DATETIME2(7)",
    "timestamp_ntz": "DATETIME2(7)", "binary": "VARBINARY(8000)",
}
# Nested values (arrays, maps, structs) come back from serverless SQL as JSON text.
_NESTED_TSQL = "VARCHAR(8000)"


def sql_name(value: str, what: str) -> str:
    """``value`` if it is a lower-case SQL-safe name (letters, digits, ``_``); raises LakePathError."""
    if not _SQL_NAME.match(value or ""):
        raise LakePathError(f"{what} {value!r} cannot be used as a SQL name: use lower-case letters, "
                            "digits and '_'", path=value)
    return value


def column_name(value: str, table: str) -> str:
    """``value`` if it is a safe column name (letters, digits, ``_``); raises LakePathError naming the table."""
    if not _COLUMN_NAME.match(value or ""):
        raise LakePathError(f"column {value!r} of table {table!r} cannot be used as a SQL name: rename it to "
                            "letters, digits and '_' (see oea_core.safe_column_name)", path=table)
    return value


def database_name(workspace: str, stage: str, source: str) -> str:
    """``sdb_<workspace>_<s2p|s2np|...>_<source>``, OEA's serverless database naming."""
    if stage not in _STAGE_CODES:
        raise LakePathError(f"stage {stage!r} has no SQL database; use one of {sorted(_STAGE_CODES)}",
                            path=stage)
    return sql_name(f"sdb_{sql_name(workspace, 'workspace')}_{_STAGE_CODES[stage]}_{source}", "database")


def lake_database_name(workspace: str, stage: str, source: str) -> str:
    """``ldb_<workspace>_<s2p|s2np|...>_<source>``: the Spark lake database over the same tables."""
    return "l" + database_name(workspace, stage, source)[1:]


def tsql_type(delta_type: object) -> str:
    """The serverless SQL type for a Delta schema type (a name such as ``"long"``, or a nested dict)."""
    if isinstance(delta_type, dict):
        return _NESTED_TSQL
    text = str(delta_type)
    match = _DECIMAL.match(text)
    if match:
        return f"DECIMAL({match.group(1)}, {match.group(2)})"
    if text not in _TSQL_TYPES:
        raise LakePathError(f"Delta type {text!r} has no serverless SQL type; cast the column to a "
                            "string, number, date or timestamp", path=text)
    return _TSQL_TYPES[text]


def delta_columns(path: str) -> list[tuple[str, object]] | None:
    """``(name, delta type)`` of the Delta table at a local ``path``, or None when there is no table."""
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return None
    from deltalake import DeltaTable

    fields = json.loads(DeltaTable(path).schema().to_json())["fields"]
    return [(field["name"], field["type"]) for field in fields]


def table_columns(lake: LakePaths, stage: str, source: str, table: str) -> list[tuple[str, object]] | None:
    """:func:`delta_columns` of a lake's table: read from the account itself (delta-rs) on a cloud lake
    reached through a working copy; None (not known here) for an account-only lake, as on Synapse."""
    if lake.account is None:
        return delta_columns(lake.table(stage, source, table))
    if lake.root is None:
        return None
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    url = f"abfss://{stage}@{lake.account}.dfs.core.windows.net/{source}/{table}"
    credentials = lake_credentials(lake)
    with storage_errors(credentials):
        try:
            schema = DeltaTable(url, storage_options=credentials.delta_storage_options()).schema()
        except TableNotFoundError:
            return None
    return [(field["name"], field["type"]) for field in json.loads(schema.to_json())["fields"]]


@dataclass(frozen=True)
class ViewDef:
    """One view: its database, the table it reads, and its typed columns (None: not known here)."""

    database: str
    stage: str
    source: str
    table: str
    columns: tuple[tuple[str, str], ...] | None

    @property
    def relative_path(self) -> str:
        """The table's folder relative to its stage container (the external data source's location)."""
        return f"{self.source}/{self.table}/"


def view_defs(lake: LakePaths, source: str, tables: list[tuple[str, str]], *,
              workspace: str = "dev") -> list[ViewDef]:
    """The view plan for a module's ``(stage, table)`` list; columns are read from the Delta tables (on the
    account itself for a cloud lake)."""
    sql_name(source, "source")
    defs = []
    for stage, table in tables:
        database = database_name(workspace, stage, source)
        sql_name(table, "table")
        columns = table_columns(lake, stage, source, table)
        typed = None if columns is None else tuple(
            (column_name(name, table), tsql_type(kind)) for name, kind in columns)
        defs.append(ViewDef(database, stage, source, table, typed))
    return defs


def _with_clause(view: ViewDef) -> str:
    if not view.columns:
        return ""
    return " WITH (" + ", ".join(f"[{name}] {kind}" for name, kind in view.columns) + ")"


def data_source_name(stage: str) -> str:
    return f"oea_{stage}"


def views_script(lake: LakePaths, source: str, tables: list[tuple[str, str]], *, account: str | None = None,
                 workspace: str = "dev", data_source: bool = False, about: str | None = None) -> str:
    """The T-SQL script creating the databases (if missing) and one ``CREATE OR ALTER VIEW`` per table.

    ``about`` names what the views cover in the script's first line (default: the ``source`` module).

    ``data_source`` adds a managed-identity database-scoped credential and one external data
    source per stage, and the views read paths relative to it; otherwise views read full URLs
    with the caller's identity.
    """
    by_db: dict[str, list[ViewDef]] = {}
    for view in view_defs(lake, source, tables, workspace=workspace):
        by_db.setdefault(view.database, []).append(view)
    lines = [f"-- Serverless SQL views for {about or f'the {source} module'}, generated by `oea views {source}`.",
             "-- Run it in Synapse serverless SQL (Built-in); each database is created if missing."]
    if any(v.columns is None for views in by_db.values() for v in views):
        lines.append("-- Views without WITH (...) had no local table to read types from; "
                     "serverless SQL infers those types.")
    lines.append("")
    for db, views in sorted(by_db.items()):
        lines += ["USE [master];", "GO",
                  f"IF NOT EXISTS (SELECT * FROM sys.databases WHERE name = '{db}')",
                  f"    CREATE DATABASE [{db}] COLLATE Latin1_General_100_BIN2_UTF8;", "GO",
                  f"USE [{db}];", "GO"]
        if data_source:
            lines += _data_source_lines(lake, account, sorted({v.stage for v in views}))
        for view in views:
            if data_source:
                bulk = f"'{view.relative_path}', DATA_SOURCE = '{data_source_name(view.stage)}'"
            else:
                bulk = "'" + lake.https_url(view.stage, source, view.table, account=account) + "'"
            lines += [f"CREATE OR ALTER VIEW [dbo].[{view.table}] AS",
                      f"SELECT * FROM OPENROWSET(BULK {bulk}, FORMAT = 'DELTA'){_with_clause(view)} AS [r];",
                      "GO"]
        lines.append("")
    return "\n".join(lines)


def _data_source_lines(lake: LakePaths, account: str | None, stages: list[str]) -> list[str]:
    lines = ["IF NOT EXISTS (SELECT * FROM sys.symmetric_keys WHERE name = '##MS_DatabaseMasterKey##')",
             "    CREATE MASTER KEY;", "GO",
             "IF NOT EXISTS (SELECT * FROM sys.database_scoped_credentials WHERE name = 'oea_workspace_identity')",
             "    CREATE DATABASE SCOPED CREDENTIAL [oea_workspace_identity] WITH IDENTITY = 'Managed Identity';",
             "GO"]
    for stage in stages:
        root = lake.https_url(stage, "x", "x", account=account).removesuffix("x/x/")
        name = data_source_name(stage)
        lines += [f"IF NOT EXISTS (SELECT * FROM sys.external_data_sources WHERE name = '{name}')",
                  (f"    CREATE EXTERNAL DATA SOURCE [{name}] WITH (LOCATION = '{root}', "
                  "CREDENTIAL = [oea_workspace_identity]);"), "GO"]
    return lines


def lake_database_ddl(lake: LakePaths, source: str, tables: list[tuple[str, str]], *,
                      account: str | None = None, workspace: str = "dev") -> list[str]:
    """Spark SQL statements creating ``ldb_<workspace>_<stage>_<source>`` lake databases over the tables.

    Each table is ``CREATE TABLE IF NOT EXISTS ... USING DELTA LOCATION 'abfss://...'``; run
    them in a Spark session that has Delta Lake (a Synapse or Databricks pool).
    """
    account = account or lake.account
    statements: list[str] = []
    for stage, table in tables:
        db = lake_database_name(workspace, stage, source)
        lake.https_url(stage, source, sql_name(table, "table"), account=account)  # checks every name
        if f"CREATE DATABASE IF NOT EXISTS `{db}`" not in statements:
            statements.append(f"CREATE DATABASE IF NOT EXISTS `{db}`")
        location = f"abfss://{stage}@{account}.dfs.core.windows.net/{source}/{table}"
        statements.append(f"CREATE TABLE IF NOT EXISTS `{db}`.`{table}` USING DELTA LOCATION '{location}'")
    return statements


def views_script_path(out_dir: str, source: str) -> str:
    """Where :func:`write_views_script` writes ``source``'s script."""
    return os.path.join(out_dir, f"{sql_name(source, 'source')}_views.sql")


def write_views_script(script: str, out_dir: str, source: str) -> str:
    """Write ``<out_dir>/<source>_views.sql`` (left alone when it already holds ``script``); returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = views_script_path(out_dir, source)
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == script:
                return path
    except FileNotFoundError:
        pass
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(script)
    os.replace(path + ".tmp", path)
    return path
