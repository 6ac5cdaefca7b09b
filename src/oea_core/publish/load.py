"""Loading Delta tables, unchanged, into the dev database's ``source`` schema.

Each table is read by delta-rs (no Spark; tables either engine wrote) at one version and streamed in
batches into a binary ``COPY`` of a typed table (:mod:`.columns`). Dropping the old table, creating the new
one, the copy, and the record of the version loaded (``source._oea_published``) are one transaction: a
failed load leaves the previous table and its record. A table whose Delta version is the one recorded is
not touched at all.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import psycopg
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from psycopg import sql

from ..errors import PublishError
from ..privacy.redaction import redact
from .columns import pg_columns

log = logging.getLogger("oea")

SOURCE_SCHEMA = "source"
PUBLISHED = "_oea_published"  # table_name -> the Delta version loaded
BATCH_ROWS = 50_000
_BOOKKEEPING = f"""
CREATE SCHEMA IF NOT EXISTS {SOURCE_SCHEMA};
CREATE TABLE IF NOT EXISTS {SOURCE_SCHEMA}.{PUBLISHED} (
    table_name text PRIMARY KEY, lake_table text NOT NULL, delta_version bigint NOT NULL, rows bigint NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE {SOURCE_SCHEMA}.{PUBLISHED} ADD COLUMN IF NOT EXISTS delta_identity text;
"""


@dataclass(frozen=True)
class SourceTable:
    """A lake table (``path``, shown as ``lake_table``: ``stage3p/star/dim_student``) and its name in ``source``."""

    name: str
    lake_table: str
    path: str


@dataclass(frozen=True)
class Loaded:
    """What happened to one table: loaded (``rows``) or unchanged (``loaded`` False), at ``version``."""

    table: str
    version: int
    rows: int
    loaded: bool
    seconds: float = 0.0
    identity: str = ""  # the Delta table's metaData.id, its path and version: what "unchanged" compares


def prepare(conn: psycopg.Connection) -> None:
    """The ``source`` schema and the record of loaded versions, if missing."""
    with conn.transaction():
        conn.execute(_BOOKKEEPING)


def recorded_versions(conn: psycopg.Connection) -> dict[str, str | None]:
    """The identity (see :func:`delta_identity`) of each table ``source`` holds, as recorded when it was loaded
    (None for a table loaded before identities were recorded: it is loaded again)."""
    query = sql.SQL("SELECT p.table_name, p.delta_identity FROM {}.{} p JOIN pg_tables t ON t.schemaname = %s "
                    "AND t.tablename = p.table_name").format(sql.Identifier(SOURCE_SCHEMA), sql.Identifier(PUBLISHED))
    return {name: identity for name, identity in conn.execute(query, (SOURCE_SCHEMA,)).fetchall()}


def delta_identity(delta: DeltaTable, path: str) -> str:
    """Which table, in which lake, at which version: a star rebuilt from scratch (version 0 again, a new
    ``metaData.id``) or another lake's table of the same name is never taken for the one loaded before."""
    return json.dumps({"id": delta.metadata().id, "path": os.path.abspath(path), "version": delta.version()},
                      sort_keys=True)


def check_columns(table: SourceTable) -> None:
    """PublishError if ``table``'s columns cannot all land in PostgreSQL (a type without a counterpart, two
    names PostgreSQL would cut to the same 63 bytes): run over every table before any is loaded."""
    try:
        delta = DeltaTable(table.path)
        pg_columns(delta.to_pyarrow_dataset().schema, table.lake_table)
    except DeltaError as exc:
        raise PublishError(f"{table.lake_table} cannot be read as a Delta table ({exc}): check the lake, or rebuild "
                           "the table", table=table.lake_table) from exc


def load_table(conn: psycopg.Connection, table: SourceTable, recorded: str | None) -> Loaded:
    """Load ``table`` into ``source`` unless its identity (:func:`delta_identity`) is ``recorded``."""
    try:
        delta = DeltaTable(table.path)
        version = delta.version()
        identity = delta_identity(delta, table.path)
    except DeltaError as exc:
        raise PublishError(f"{table.lake_table} cannot be read as a Delta table ({exc}): check the lake, or rebuild "
                           "the table", table=table.lake_table) from exc
    if identity == recorded:
        log.info("%s: unchanged (the same Delta table, version %d), not reloaded", table.name, version)
        return Loaded(table.name, version, 0, False, identity=identity)
    started = time.monotonic()
    try:
        dataset = delta.to_pyarrow_dataset()
        columns = pg_columns(dataset.schema, table.lake_table)
        target = sql.Identifier(SOURCE_SCHEMA, table.name)
        rows = 0
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(
                target, sql.SQL(", ").join(c.definition() for c in columns)))
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                target, sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
            with conn.cursor().copy(copy_sql) as copy:
                copy.set_types([c.copy_type for c in columns])
                for batch in dataset.to_batches(batch_size=BATCH_ROWS):
                    values = [c.values(batch.column(i)) for i, c in enumerate(columns)]
                    for row in zip(*values):
                        copy.write_row(row)
                    rows += batch.num_rows
            conn.execute(sql.SQL("ANALYZE {}").format(target))
            conn.execute(sql.SQL(
                "INSERT INTO {}.{} (table_name, lake_table, delta_version, rows, loaded_at, delta_identity) VALUES "
                "(%s, %s, %s, %s, now(), %s) ON CONFLICT (table_name) DO UPDATE SET lake_table = excluded.lake_table, "
                "delta_version = excluded.delta_version, rows = excluded.rows, loaded_at = excluded.loaded_at, "
                "delta_identity = excluded.delta_identity").format(
                sql.Identifier(SOURCE_SCHEMA), sql.Identifier(PUBLISHED)),
                (table.name, table.lake_table, version, rows, identity))
    except DeltaError as exc:
        raise PublishError(f"{table.lake_table} cannot be read at version {version} ({exc}); nothing of it was "
                           "loaded: check the lake", table=table.lake_table) from exc
    except psycopg.Error as exc:
        raise PublishError(f"loading {table.lake_table} into {SOURCE_SCHEMA}.{table.name} failed ({_first_line(exc)}); "
                           "the previous table is intact: check the database's space and permissions",
                           table=table.lake_table) from exc
    finally:
        del delta  # no pyarrow scan thread outlives the load (see ENGINE_NOTES: exit crash)
    seconds = time.monotonic() - started
    log.info("%s: loaded %d rows from %s (Delta version %d) in %.1f s", table.name, rows, table.lake_table, version,
             seconds)
    return Loaded(table.name, version, rows, True, seconds, identity)


def _first_line(exc: BaseException) -> str:
    text = redact(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
