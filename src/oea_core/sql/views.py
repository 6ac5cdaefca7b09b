"""Serverless SQL scripts: a database per stage and sensitivity, a view per Delta table.

Pseudonymized (``p``) views and lookup (``np``) views live in separate databases, so access
to PII can be granted separately. Column types come from the Delta table's schema and are
declared in ``WITH (...)``, so Power BI sees stable types. Names that come from data are
checked and bracket-quoted. The same view plan feeds the Spark lake-database DDL and the
local DuckDB preview (:mod:`oea_core.sql.preview`).

String lengths. The databases use a ``*_UTF8`` collation, so ``VARCHAR(n)`` holds ``n`` bytes of
UTF-8, not ``n`` characters, and every length below is in bytes. A value longer than its declared
length fails the query ("String or binary data would be truncated"; see :data:`_TRUNCATION`), so
lengths err on the long side:

- **SHA-256 columns** are ``VARCHAR(64)``: 64 lower-case hex digits by construction. A column is
  one when its name says so: ``<column>_pseudonym`` (every pseudonym,
  :data:`oea_core.privacy.pseudonymize.PSEUDONYM_SUFFIX`), ``<name>_hk`` (the gold layer's hash keys) and
  ``hashdiff``, plus the names a view set passes as ``sha256`` (the gold facts' ids). Their values
  are not read.
- **Other strings** are sized from the data: the longest value in UTF-8 bytes, doubled and rounded
  up to a power of two, at least ``VARCHAR(256)``, at most ``VARCHAR(8000)``; a column holding a value
  longer than 8000 bytes is ``VARCHAR(MAX)``. A column with no value (an empty table, all nulls) is
  ``VARCHAR(256)``. The floor is generous on purpose: the committed scripts in ``sql_views/`` are sized
  from the sample data and run over a district's own data, so a short sample must not make a short
  column. The modules declare no string lengths (their schemas give names, types and
  pseudonymization ops only), so none comes from a schema.
- **Nested values** (arrays, maps, structs, which serverless SQL returns as JSON text) and binary
  stay ``VARCHAR(8000)`` / ``VARBINARY(8000)``: sizing their JSON would mean serializing every value.

Lengths are read where the schema is: the local table (delta-rs), or the account itself for a
cloud lake reached through a working copy; only the string columns that are not SHA-256 are
scanned (through pyarrow). A table delta-rs cannot read through pyarrow (deletion vectors or
column mapping, which serverless SQL cannot read either) keeps ``VARCHAR(8000)`` strings. A lake
known only by its account (as on Synapse) gives no types at all: serverless SQL infers them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LakePathError
from ..lake.storage import lake_credentials, storage_errors
from ..privacy.pseudonymize import PSEUDONYM_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from deltalake import DeltaTable

    from ..lake.paths import LakePaths

_SQL_NAME = re.compile(r"^[a-z0-9_]{1,100}$")
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_STAGE_CODES = {"stage2p": "s2p", "stage2np": "s2np", "stage3p": "s3p", "stage3np": "s3np"}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
# Delta primitive type -> serverless SQL type; strings are sized by varchar() (see the module docstring).
_TSQL_TYPES = {
    "long": "BIGINT", "integer": "INT", "short": "SMALLINT", "byte": "TINYINT",
    "boolean": "BIT", "double": "FLOAT", "float": "REAL", "date": "DATE", "timestamp": "DATETIME2(7)",
    "timestamp_ntz": "DATETIME2(7)", "binary": "VARBINARY(8000)",
}
# Nested values (arrays, maps, structs) come back from serverless SQL as JSON text.
_NESTED_TSQL = "VARCHAR(8000)"
# What serverless SQL does with a string longer than its declared type: the query fails with "String or
# binary data would be truncated" (unless the session sets ANSI_WARNINGS OFF, which truncates instead), and
# the fix it gives is a longer type, VARCHAR(MAX) past 8000 bytes. "Troubleshoot serverless SQL pool in
# Azure Synapse Analytics", section "String or binary data would be truncated":
_TRUNCATION = ("https://learn.microsoft.com/azure/synapse-analytics/sql/resources-self-help-sql-on-demand"
               "#string-or-binary-data-would-be-truncated")
SHA256_TSQL = "VARCHAR(64)"  # a pseudonym, hash key or hashdiff: 64 hex digits, one byte each
_SHA256_SUFFIXES = (PSEUDONYM_SUFFIX, "_hk")
_SHA256_NAMES = frozenset({"hashdiff"})
STRING_FLOOR = 256  # bytes: the least a string column is declared, and what a column without a value gets
_VARCHAR_LIMIT = 8000  # the longest VARCHAR(n); longer is VARCHAR(MAX)
_UNSIZED_TSQL = "VARCHAR(8000)"  # a string whose values could not be read (see string_lengths)


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


def is_sha256_column(name: str, sha256: Collection[str] = ()) -> bool:
    """Whether the column ``name`` holds SHA-256 hex by its name (a pseudonym, a hash key, a hashdiff) or is
    one of ``sha256``, the further such columns a view set knows of."""
    return name.endswith(_SHA256_SUFFIXES) or name in _SHA256_NAMES or name in sha256


def varchar(longest: int | None) -> str:
    """The serverless SQL type of a string column whose longest value is ``longest`` UTF-8 bytes (None: the
    column has no value): twice that, rounded up to a power of two, at least 256 and at most 8000 bytes;
    ``VARCHAR(MAX)`` past 8000 bytes, which ``VARCHAR(8000)`` would fail on (see :data:`_TRUNCATION`)."""
    if longest is None:
        return f"VARCHAR({STRING_FLOOR})"
    if longest > _VARCHAR_LIMIT:
        return "VARCHAR(MAX)"
    size = 1 << max(2 * longest - 1, 0).bit_length()  # the least power of two >= 2 * longest
    return f"VARCHAR({min(max(size, STRING_FLOOR), _VARCHAR_LIMIT)})"


def tsql_type(delta_type: object, longest: int | None = None) -> str:
    """The serverless SQL type for a Delta schema type (a name such as ``"long"``, or a nested dict); a
    ``string`` is :func:`varchar` of ``longest``, its longest value in UTF-8 bytes (None: no value)."""
    if isinstance(delta_type, dict):
        return _NESTED_TSQL
    text = str(delta_type)
    if text == "string":
        return varchar(longest)
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


def _fields(table: DeltaTable) -> list[tuple[str, object]]:
    return [(field["name"], field["type"]) for field in json.loads(table.schema().to_json())["fields"]]


@contextlib.contextmanager
def _lake_table(lake: LakePaths, stage: str, source: str, table: str) -> Iterator[DeltaTable | None]:
    """The lake's Delta table (delta-rs), or None when it is not there or not known here (an account-only
    lake). On a cloud lake reached through a working copy it is the account's own table, and storage errors
    inside the block (reading its files too) are raised as the lake's errors."""
    if lake.account is None:
        path = lake.table(stage, source, table)
        if not os.path.isdir(os.path.join(path, "_delta_log")):
            yield None
            return
        from deltalake import DeltaTable

        yield DeltaTable(path)
        return
    if lake.root is None:
        yield None
        return
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    url = f"abfss://{stage}@{lake.account}.dfs.core.windows.net/{source}/{table}"
    credentials = lake_credentials(lake)
    with storage_errors(credentials):
        try:
            found: DeltaTable | None = DeltaTable(url, storage_options=credentials.delta_storage_options())
        except TableNotFoundError:
            found = None
        yield found


def table_columns(lake: LakePaths, stage: str, source: str, table: str) -> list[tuple[str, object]] | None:
    """:func:`delta_columns` of a lake's table: read from the account itself (delta-rs) on a cloud lake
    reached through a working copy; None (not known here) for an account-only lake, as on Synapse."""
    with _lake_table(lake, stage, source, table) as found:
        return None if found is None else _fields(found)


def string_lengths(table: DeltaTable, names: list[str]) -> dict[str, int | None] | None:
    """The longest value of each string column in ``names``, in UTF-8 bytes (None: the column has no value),
    scanning those columns only; None when delta-rs cannot read the table's data through pyarrow (deletion
    vectors, column mapping: features serverless SQL cannot read either)."""
    if not names:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake.exceptions import DeltaProtocolError

    try:
        dataset = table.to_pyarrow_dataset()
    except DeltaProtocolError:
        return None
    longest: dict[str, int | None] = dict.fromkeys(names)
    for batch in dataset.to_batches(columns=names):
        for name in names:
            values = batch.column(name)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                values = values.cast(pa.large_string())  # string_view, dictionary: no binary_length kernel
            top = pc.max(pc.binary_length(values)).as_py()  # bytes, not characters
            if top is not None and (longest[name] is None or top > longest[name]):
                longest[name] = top
    return longest


def table_types(lake: LakePaths, stage: str, source: str, table: str, *,
                sha256: Collection[str] = ()) -> tuple[tuple[str, str], ...] | None:
    """``(column, serverless SQL type)`` of a lake's table, strings sized as the module docstring says (their
    lengths read where :func:`table_columns` reads the schema); None when the table is not known here.
    ``sha256`` names further columns that hold SHA-256 hex (see :func:`is_sha256_column`)."""
    with _lake_table(lake, stage, source, table) as found:
        if found is None:
            return None
        columns = [(column_name(name, table), kind) for name, kind in _fields(found)]
        sized = [name for name, kind in columns if kind == "string" and not is_sha256_column(name, sha256)]
        longest = string_lengths(found, sized)
    typed = []
    for name, kind in columns:
        if kind == "string" and is_sha256_column(name, sha256):
            typed.append((name, SHA256_TSQL))
        elif kind == "string" and longest is None:
            typed.append((name, _UNSIZED_TSQL))
        else:
            typed.append((name, tsql_type(kind, (longest or {}).get(name))))
    return tuple(typed)


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
              workspace: str = "dev", sha256: Collection[str] = ()) -> list[ViewDef]:
    """The view plan for a module's ``(stage, table)`` list; columns and string lengths are read from the
    Delta tables (on the account itself for a cloud lake), see :func:`table_types`."""
    sql_name(source, "source")
    defs = []
    for stage, table in tables:
        database = database_name(workspace, stage, source)
        sql_name(table, "table")
        typed = table_types(lake, stage, source, table, sha256=sha256)
        defs.append(ViewDef(database, stage, source, table, typed))
    return defs


def _with_clause(view: ViewDef) -> str:
    if not view.columns:
        return ""
    return " WITH (" + ", ".join(f"[{name}] {kind}" for name, kind in view.columns) + ")"


def data_source_name(stage: str) -> str:
    return f"oea_{stage}"


def views_script(lake: LakePaths, source: str, tables: list[tuple[str, str]], *, account: str | None = None,
                 workspace: str = "dev", data_source: bool = False, about: str | None = None,
                 sha256: Collection[str] = ()) -> str:
    """The T-SQL script creating the databases (if missing) and one ``CREATE OR ALTER VIEW`` per table.

    ``about`` names what the views cover in the script's first line (default: the ``source`` module);
    ``sha256`` names columns, beyond those named as such, that hold SHA-256 hex (``VARCHAR(64)``).

    ``data_source`` adds a managed-identity database-scoped credential and one external data
    source per stage, and the views read paths relative to it; otherwise views read full URLs
    with the caller's identity.
    """
    by_db: dict[str, list[ViewDef]] = {}
    for view in view_defs(lake, source, tables, workspace=workspace, sha256=sha256):
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
