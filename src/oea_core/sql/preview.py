"""A local preview of the serverless SQL views: DuckDB over the lake's Delta tables.

Each serverless database becomes a DuckDB database of the same name with a ``dbo`` schema,
and each view selects the table's columns cast to the types the serverless view declares,
so ``SELECT * FROM sdb_dev_s2p_clever.dbo.daily_participation_pseudo`` reads here what Power
BI reads there. A view whose name is unique across the databases is also reachable unqualified.

The preview stays a preview: it runs one read-only query (a statement DuckDB's parser types as
SELECT: ``SELECT``, ``WITH … SELECT``, ``FROM …``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``)
and refuses anything else in one line. Once the views are registered, DuckDB's external access
(files, URLs, extensions, Python replacement scans) is switched off and the configuration locked,
so table functions such as ``read_text`` or ``read_parquet`` fail inside a SELECT too.
"""

from __future__ import annotations

import re
import tempfile
from typing import TYPE_CHECKING

from ..errors import SqlPreviewError
from ..extras import require
from ..lake.lock import pull_source
from .view_sets import sha256_columns, view_set_names, view_tables
from .views import ViewDef, view_defs

if TYPE_CHECKING:
    from ..lake.paths import LakePaths

# serverless SQL type -> DuckDB type (the casts keep the preview's types those Power BI sees)
_DUCK_TYPES = {"VARCHAR": "VARCHAR", "BIGINT": "BIGINT", "INT": "INTEGER", "SMALLINT": "SMALLINT",
               "TINYINT": "TINYINT", "BIT": "BOOLEAN", "FLOAT": "DOUBLE", "REAL": "FLOAT", "DATE": "DATE",
               "DATETIME2": "TIMESTAMP", "VARBINARY": "BLOB", "DECIMAL": "DECIMAL"}


# Run once the views exist; the lock comes last so no later statement can undo the others.
_CONFINE = ("SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false",
            "SET allow_community_extensions = false", "SET python_enable_replacements = false",
            "SET enable_external_access = false", "SET lock_configuration = true")


def _duck_type(tsql: str) -> str:
    base = tsql.split("(", 1)[0]
    if base == "DECIMAL":
        return tsql.replace(" ", "")
    return _DUCK_TYPES[base]


def _select_list(view: ViewDef, nested: set[str]) -> str:
    parts = []
    for name, kind in view.columns or ():
        column = f'"{name}"'
        expr = f"to_json({column})::VARCHAR" if name in nested else f"CAST({column} AS {_duck_type(kind)})"
        parts.append(f"{expr} AS {column}")
    return ", ".join(parts) or "*"


class SqlPreview:
    """A DuckDB connection holding the views of ``modules`` (default: every source module and the gold areas,
    ``vault`` and ``star``) over a local lake; tables not built yet have no view."""

    def __init__(self, lake: LakePaths, modules: list[str] | None = None, workspace: str = "dev") -> None:
        duckdb = require("duckdb")
        from deltalake import DeltaTable

        if lake.root is None:
            raise SqlPreviewError(f"the SQL preview reads a local lake or a cloud lake's working copy; "
                                  f"{lake.shown} has none here: give --lake a folder or an abfss:// URL")
        self.con = duckdb.connect()
        self.views: dict[str, list[str]] = {}
        for name in modules or view_set_names():
            pull_source(lake, name, f"{name} sql preview")  # a cloud lake's working copy: the account's state
            outputs = view_tables(lake, name)
            for view in view_defs(lake, name, outputs, workspace=workspace, sha256=sha256_columns(name)):
                if view.columns is None:
                    continue
                path = lake.table(view.stage, name, view.table)
                source = f"_delta_{view.database}_{view.table}"
                self.con.register(source, DeltaTable(path).to_pyarrow_dataset())
                nested = self._nested_columns(source)
                if view.database not in self.views:
                    self.con.execute(f'ATTACH \':memory:\' AS "{view.database}"')
                    self.con.execute(f'CREATE SCHEMA "{view.database}".dbo')
                    self.views[view.database] = []
                self.con.execute(f'CREATE VIEW "{view.database}".dbo."{view.table}" AS '
                                 f'SELECT {_select_list(view, nested)} FROM temp.main."{source}"')
                self.views[view.database].append(view.table)
        counts: dict[str, int] = {}
        for tables in self.views.values():
            for table in tables:
                counts[table] = counts.get(table, 0) + 1
        for database, tables in self.views.items():
            for table in tables:
                if counts[table] == 1:
                    self.con.execute(f'CREATE VIEW memory.main."{table}" AS SELECT * FROM "{database}".dbo."{table}"')
        self._confine()

    def _confine(self) -> None:
        # DuckDB always allows its spill folder (default: ./.tmp under the working directory) even with
        # external access off; a private folder keeps that from exposing whatever lies there.
        self._spill = tempfile.TemporaryDirectory(prefix="oea-sql-", ignore_cleanup_errors=True)
        self.con.execute("SET temp_directory = '{}'".format(self._spill.name.replace("'", "''")))
        for statement in _CONFINE:
            self.con.execute(statement)

    def _nested_columns(self, source: str) -> set[str]:
        described = self.con.sql(f'DESCRIBE "{source}"').fetchall()
        return {row[0] for row in described if re.search(r"[\[\]]|STRUCT|MAP", str(row[1]))}

    def names(self) -> list[str]:
        """Every view, as ``<database>.dbo.<view>``."""
        return [f"{db}.dbo.{t}" for db, tables in sorted(self.views.items()) for t in sorted(tables)]

    def resolve(self, view: str) -> str:
        """The quoted DuckDB name for ``view`` (``name``, ``db.name`` or ``db.dbo.name``)."""
        parts = [p.strip("[]\"") for p in view.split(".")]
        matches = [n for n in self.names() if n.split(".")[-1] == parts[-1]
                   and (len(parts) == 1 or n.split(".")[0] == parts[0])]
        if len(matches) != 1:
            known = ", ".join(self.names()) or "none: run `oea run` (or land and ingest) first"
            what = "is ambiguous" if matches else "is not a view"
            raise SqlPreviewError(f"{view!r} {what}; views: {known}")
        db, _, table = matches[0].split(".")
        return f'"{db}".dbo."{table}"'

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run one read-only query; returns ``(column names, rows)``. Raises SqlPreviewError, in one line,
        for anything but one SELECT-type statement or when DuckDB fails (a file read, a bad column)."""
        duckdb = require("duckdb")
        try:
            result = self.con.sql(_one_select(sql))
            return list(result.columns), result.fetchall()
        except duckdb.Error as error:
            raise _failed(error, sql) from error

    def show(self, sql: str, max_rows: int = 40) -> None:
        """Print one read-only query's result as a terminal table; raises like :meth:`query`."""
        duckdb = require("duckdb")
        try:
            self.con.sql(_one_select(sql)).show(max_rows=max_rows, max_width=10_000)
        except duckdb.Error as error:
            raise _failed(error, sql) from error


def _one_select(sql: str) -> str:
    """``sql`` when DuckDB's own parser reads it as exactly one SELECT-type statement; else a refusal."""
    duckdb = require("duckdb")
    try:
        statements = duckdb.extract_statements(sql)
        kinds = [statement.type.name for statement in statements]
    except duckdb.ParserException as error:
        raise _failed(error, sql) from error
    except ValueError as error:  # a statement type the Python client has no name for (UPDATE EXTENSIONS)
        raise _refused("a statement of a type DuckDB's client cannot name") from error
    if not kinds:
        raise _refused("an empty query")
    if len(kinds) > 1:
        raise _refused(f"{len(kinds)} statements (send one)")
    if kinds[0] == duckdb.StatementType.MULTI.name:
        raise _refused("a statement DuckDB runs as several (a PIVOT needs its values: ON col IN (...))")
    if kinds[0] != duckdb.StatementType.SELECT.name:
        raise _refused(f"{'an' if kinds[0][0] in 'AEIOU' else 'a'} {kinds[0]} statement")
    return sql


def _refused(what: str) -> SqlPreviewError:
    return SqlPreviewError(f"the SQL preview refused {what}: it runs one read-only query over the views "
                           "(SELECT, WITH ... SELECT, FROM ..., VALUES, DESCRIBE, SHOW, SUMMARIZE), "
                           "never commands, settings or file access")


def _failed(error: Exception, sql: str) -> SqlPreviewError:
    """One line: DuckDB's first line (its caret drawing dropped) and the query with whitespace collapsed."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = "; the preview reads only its views (oea sql --list), not files" if "Permission" in first else ""
    return SqlPreviewError(f"the query failed: {first}{hint}; query: {' '.join(sql.split())}")
