"""``publish_postgres``: the lake's star schema (and chosen stage2p tables) to PostgreSQL, dev then prod.

1. Every table of ``stage3p/star`` and each extra table is loaded unchanged into dev's ``source`` schema,
   only when its Delta version changed since it was last loaded (:mod:`.load`).
2. ``dbt build`` of ``transform/`` makes dev's ``transformed`` schema and tests it (:mod:`.dbt`); a failure
   stops here, before prod.
3. Prod's ``transformed`` is replaced by dev's in one transaction, with ``oea_reader``'s grants (:mod:`.prod`).

Before step 1, a star whose last build failed its checks (``oea-framework/gold/star_checks.json``, written
by the gold layer) is refused, and every table's columns are checked (:func:`.load.check_columns`). dbt
models whose source tables the lake lacks are skipped and named (:mod:`.selection`).

Steps 2 and 3 are skipped when the tables and the dbt project are the ones prod was last published from
(recorded in dev, ``source._oea_prod_published``, after step 3 only), so a publish with nothing new changes
nothing, and one whose dbt failed is retried by the next.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import PublishError
from ..lake.cloud import open_cloud
from ..lake.lock import lake_lock
from ..lake.paths import FRAMEWORK_CONTAINER, LakePaths, check_name
from ..privacy.redaction import redact
from .dbt import DbtRun, check_project, dbt_build, manifest_path, project_fingerprint
from .load import SOURCE_SCHEMA, Loaded, SourceTable, check_columns, load_table, prepare, recorded_versions
from .prod import DEFAULT_TIMEOUT, check_timeout, ensure_reader, prod_tables, replace_prod
from .selection import SkippedModel, exclusions, skipped_models
from .server import Server, find_dbt, find_pg_tool

log = logging.getLogger("oea")

STAR = ("stage3p", "star")
PUBLISHABLE_STAGES = ("stage2p", "stage3p")  # pseudonymized stages only
DEFAULT_PROJECT = str(Path(__file__).resolve().parents[3] / "transform")
PROD_RECORD = "_oea_prod_published"
STAR_CHECKS = ("gold", "star_checks.json")  # the gold layer's record of the last build_star's checks
_MAX_NAME = 63  # PostgreSQL's identifier length


@dataclass(frozen=True)
class PublishResult:
    """What a publish did: each table loaded into dev (or found unchanged), the dbt build, and prod."""

    dev_database: str
    prod_database: str
    tables: tuple[Loaded, ...] = ()
    dbt: DbtRun | None = None
    prod_tables: int | None = None  # tables in prod's transformed after it was replaced; None: not replaced
    up_to_date: bool = False  # nothing new since the last publish: dbt and prod skipped
    seconds: float = 0.0
    loaded: dict[str, int] = field(default_factory=dict)  # table -> rows, of the tables loaded
    skipped: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dbt model -> source tables it lacks

    @property
    def rows(self) -> int:
        """Rows loaded into dev, over all tables (what a flow step reports)."""
        return sum(self.loaded.values())

    def summary(self) -> str:
        """One line for the CLI."""
        unchanged = sum(1 for t in self.tables if not t.loaded)
        rows = sum(self.loaded.values())
        skipped = "".join(f"{'; skipped (source table missing): ' if i == 0 else ', '}{model} ({', '.join(missing)})"
                          for i, (model, missing) in enumerate(sorted(self.skipped.items())))
        if self.up_to_date:
            return (f"publish postgres: nothing new since the last publish ({len(self.tables)} tables unchanged); "
                    f"{self.dev_database} and {self.prod_database} untouched{skipped}")
        return (f"publish postgres: {len(self.loaded)} tables loaded ({rows:,} rows) into {self.dev_database}."
                f"{SOURCE_SCHEMA}, {unchanged} unchanged; dbt build: {self.dbt.describe() if self.dbt else '-'} ok; "
                f"{self.prod_database}.transformed replaced ({self.prod_tables} tables) in {self.seconds:.1f} s"
                f"{skipped}")


def parse_table(spec: str) -> tuple[str, str, str]:
    """``(stage, source, table)`` of ``stage2p/<source>/<table>``; PublishError for anything else, and for the
    stages that hold identifying data."""
    parts = spec.strip("/").split("/")
    if len(parts) != 3 or parts[0] not in PUBLISHABLE_STAGES:
        raise PublishError(f"table {spec!r} is not <stage>/<source>/<table> of a pseudonymized stage "
                           f"({', '.join(PUBLISHABLE_STAGES)}): give e.g. stage2p/clever/daily_participation_pseudo"
                           " (the np stages hold identifying data and are never published)", table=spec)
    stage, source, name = parts
    return stage, check_name(source, "source"), check_name(name, "table")


def lake_tables(lake: LakePaths, extra: tuple[str, ...]) -> list[SourceTable]:
    """Every table of ``stage3p/star``, then each of ``extra`` (``stage2p/<source>/<table>``), as loaded in
    ``source`` (star tables by their name, others as ``<source>_<table>``)."""
    folder = lake.path(*STAR)
    star = sorted(name for name in (os.listdir(folder) if os.path.isdir(folder) else [])
                  if os.path.isdir(os.path.join(folder, name, "_delta_log")))
    if not star:
        raise PublishError(f"{lake.shown} has no star schema ({folder} holds no Delta table): build it first "
                           "(build_vault then build_star, or the gold flow)")
    tables = [SourceTable(name, f"stage3p/star/{name}", lake.table(*STAR, name)) for name in star]
    for spec in extra:
        stage, source, name = parse_table(spec)
        path = lake.table(stage, source, name)
        if not os.path.isdir(os.path.join(path, "_delta_log")):
            raise PublishError(f"table {spec} is not a Delta table in {lake.shown}: check the name, or ingest it "
                               "first", table=spec)
        pg_name = name if (stage, source) == STAR else f"{source}_{name}"
        if len(pg_name) > _MAX_NAME:
            raise PublishError(f"table {spec} would be source.{pg_name}, longer than PostgreSQL's {_MAX_NAME} "
                               "characters: publish a shorter-named table", table=spec)
        if pg_name not in {t.name for t in tables}:
            tables.append(SourceTable(pg_name, f"{stage}/{source}/{name}", path))
    return tables


def _pull(lake: LakePaths, extra: tuple[str, ...]) -> None:
    """A cloud lake's working copy: the star, the extra tables' folders and the star's check record brought up
    to date first."""
    if lake.root is None:
        raise PublishError(f"publishing needs the lake's files on this machine; {lake.shown} has no working copy "
                           "here: give --lake the abfss:// URL (a working copy is made) or a local folder")
    if lake.account is None:
        return
    cloud = open_cloud(lake)
    for stage, source in dict.fromkeys([STAR, *(parse_table(spec)[:2] for spec in extra)]):
        cloud.folder(stage, source).pull()
    cloud.folder(FRAMEWORK_CONTAINER, STAR_CHECKS[0], STAR_CHECKS[1:]).pull()


def check_star(lake: LakePaths, untouched: str) -> None:
    """PublishError naming the failed checks when the star's last build failed them (the gold layer's
    ``star_checks.json``); no record (a lake built before there was one) is no recorded failure."""
    path = lake.state_path(*STAR_CHECKS)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path} cannot be read ({exc}): rebuild the star (build_star) to record its checks "
                           f"again; {untouched} untouched") from exc
    if not isinstance(record, dict) or record.get("passed") is not False:
        return
    failed = record.get("failed")
    failed = failed if isinstance(failed, dict) else {}
    named = ", ".join(f"{name} {count}" for name, count in sorted(failed.items())) or "checks not named"
    raise PublishError(f"the star schema of {lake.shown} failed its checks when it was last built (batch "
                       f"{record.get('batch_id', '?')}: {named}): fix the data, rebuild the star (build_star), then "
                       f"publish again; {untouched} untouched")


def _drop_skipped(conn: psycopg.Connection, skipped: tuple[SkippedModel, ...]) -> None:
    """Drop from dev what an earlier build made of the models skipped now, so prod does not keep them."""
    for model in skipped:
        row = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                           "n.nspname = %s AND c.relname = %s", (model.schema, model.relation)).fetchone()
        if row is not None:
            kind = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(str(row[0]), "TABLE")
            conn.execute(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(
                sql.SQL(kind), sql.Identifier(model.schema, model.relation)))
            log.info("dropped %s.%s of dev: its model is skipped now", model.schema, model.relation)


def _fingerprint(versions: dict[str, str], project: str, timeout: str) -> str:
    text = json.dumps({"tables": versions, "project": project, "reader_timeout": timeout}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def publish_postgres(lake: LakePaths | str | None = None, dsn: str | None = None, *, dev_db: str = "oea_dev",
                     prod_db: str = "oea_prod", tables: tuple[str, ...] | list[str] = (),
                     project_dir: str | None = None, reader_timeout: str = DEFAULT_TIMEOUT,
                     context: dict[str, Any] | None = None) -> PublishResult:
    """Publish the lake's star schema (and ``tables``, ``stage2p/<source>/<table>``) to PostgreSQL: load them
    into ``dev_db``'s ``source`` schema, ``dbt build`` ``project_dir`` (default: the repository's ``transform/``)
    there, then replace ``prod_db``'s ``transformed`` schema by dev's, atomically. See docs/publishing.md.

    ``dsn`` is a libpq connection string (None: libpq's PG* variables). As a flow ``python`` step it takes the
    lake from ``context``. Raises PublishError (a connection or
    permission problem, a table that cannot be read, a dbt model or test that failed: prod untouched).
    """
    started = time.monotonic()
    lake = lake if lake is not None else (context or {}).get("lake")
    lake = lake if isinstance(lake, LakePaths) else LakePaths.from_setting(lake)
    extra = tuple(tables)
    project = check_project(os.path.abspath(project_dir or DEFAULT_PROJECT))  # before any work
    timeout = check_timeout(reader_timeout)
    if dev_db == prod_db:
        raise PublishError(f"dev and prod are both database {dev_db!r}: give two databases (--dev-database, "
                           "--prod-database)", database=dev_db)
    for spec in extra:
        parse_table(spec)
    dbt = find_dbt()
    for tool in ("pg_dump", "pg_restore", "psql"):
        find_pg_tool(tool)
    server = Server.from_dsn(dsn)
    try:
        return _publish(server, lake, extra, dbt, project, dev_db, prod_db, timeout, started)
    except psycopg.Error as exc:
        text = redact(str(exc)).strip()
        raise PublishError(f"PostgreSQL refused the publish ({text.splitlines()[0] if text else type(exc).__name__}):"
                           f" check the user's privileges on {dev_db} and {prod_db}; prod is unchanged unless its "
                           "replacement had committed", database=dev_db) from exc


def _publish(server: Server, lake: LakePaths, extra: tuple[str, ...], dbt: str, project: str, dev_db: str,
             prod_db: str, timeout: str, started: float) -> PublishResult:
    with lake_lock(lake, "publish", "publish postgres"):
        _pull(lake, extra)
        check_star(lake, f"{dev_db} and {prod_db}")
        sources = lake_tables(lake, extra)
        for table in sources:  # before any is loaded
            check_columns(table)
        present = {t.name for t in sources}
        exclude = exclusions(project, present)
        work_dir = os.path.join(str(lake.root), ".oea", "dbt", dev_db)
        for database in (dev_db, prod_db):
            server.ensure_database(database)
        with server.connect(dev_db, autocommit=True) as dev:  # each step its own transaction
            prepare(dev)
            dev.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} (prod_database text PRIMARY KEY, fingerprint text "
                                "NOT NULL, published_at timestamptz NOT NULL)").format(
                sql.Identifier(SOURCE_SCHEMA), sql.Identifier(PROD_RECORD)))
            recorded = recorded_versions(dev)
            loaded = tuple(load_table(dev, table, recorded.get(table.name)) for table in sources)
            rows = {t.table: t.rows for t in loaded if t.loaded}
            fingerprint = _fingerprint({t.table: t.identity for t in loaded}, project_fingerprint(project), timeout)
            last = dev.execute(sql.SQL("SELECT fingerprint FROM {}.{} WHERE prod_database = %s").format(
                sql.Identifier(SOURCE_SCHEMA), sql.Identifier(PROD_RECORD)), (prod_db,)).fetchone()
            with server.connect(prod_db) as prod:
                in_prod = prod_tables(prod)
            if last is not None and last[0] == fingerprint and in_prod is not None:
                log.info("nothing new since the last publish to %s: dbt and prod skipped", prod_db)
                skipped = skipped_models(manifest_path(work_dir), present)
                return PublishResult(dev_db, prod_db, loaded, up_to_date=True, loaded=rows,
                                     seconds=time.monotonic() - started,
                                     skipped={s.model: s.missing for s in skipped})
            dev_env = server.tool_env(dev, dev_db)
            run = dbt_build(dbt, project, work_dir, dev_env, dev_db, exclude)
            log.info("dbt build in %s: %s", dev_db, run.describe())
            skipped = skipped_models(manifest_path(work_dir), present)
            for model in skipped:
                log.warning("dbt model %s skipped: the lake has no %s (source.%s)", model.model,
                            ", ".join(model.missing), ", source.".join(model.missing))
            _drop_skipped(dev, skipped)
            with server.connect(prod_db, autocommit=True) as prod:
                ensure_reader(prod, timeout)
                prod_env = server.tool_env(prod, prod_db)
            replace_prod(dev_env, prod_env, dev_db, prod_db)
            with server.connect(prod_db) as prod:
                count = prod_tables(prod)
            dev.execute(sql.SQL("INSERT INTO {}.{} VALUES (%s, %s, now()) ON CONFLICT (prod_database) DO UPDATE SET "
                                "fingerprint = excluded.fingerprint, published_at = excluded.published_at").format(
                sql.Identifier(SOURCE_SCHEMA), sql.Identifier(PROD_RECORD)), (prod_db, fingerprint))
    return PublishResult(dev_db, prod_db, loaded, run, count, loaded=rows, seconds=time.monotonic() - started,
                         skipped={s.model: s.missing for s in skipped})

