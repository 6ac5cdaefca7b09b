"""``oea publish``: the star schema into a database."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..publish import publish_postgres
from ..publish.prod import DEFAULT_TIMEOUT
from .common import command, wait_option

if TYPE_CHECKING:
    import argparse

    from ..lake.paths import LakePaths


def _publish_postgres(lake: LakePaths, args: argparse.Namespace) -> int:
    result = publish_postgres(lake, args.dsn, dev_db=args.dev_database, prod_db=args.prod_database,
                              tables=args.tables or (), project_dir=args.project_dir,
                              reader_timeout=args.reader_timeout)
    print(result.summary())
    return 0


def publish_commands(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser("publish", help="publish the star schema to a database")
    targets = publish.add_subparsers(dest="publish_command", required=True, metavar="TARGET")
    postgres = command(targets, "postgres", _publish_postgres, help="load the star schema into a PostgreSQL dev "
                       "database, dbt build transform/ there, then replace prod's transformed schema atomically")
    postgres.add_argument("--dsn", default=os.environ.get("OEA_PG_DSN"),
                          help="libpq connection string, without the password (default: $OEA_PG_DSN, else "
                               "libpq's PGHOST, PGPORT, PGUSER; the password from PGPASSWORD or ~/.pgpass)")
    postgres.add_argument("--dev-database", default=os.environ.get("OEA_PG_DEV_DATABASE", "oea_dev"),
                          help="database loaded and transformed (default %(default)s)")
    postgres.add_argument("--prod-database", default=os.environ.get("OEA_PG_PROD_DATABASE", "oea_prod"),
                          help="database the reports read, replaced from dev (default %(default)s)")
    postgres.add_argument("--table", action="append", dest="tables", metavar="STAGE/SOURCE/TABLE",
                          help="also load this pseudonymized table, e.g. stage2p/clever/daily_participation_pseudo "
                               "(repeatable; the star's tables are always loaded)")
    postgres.add_argument("--project-dir", help="the dbt project (default: the repository's transform/)")
    postgres.add_argument("--reader-timeout", default=os.environ.get("OEA_PG_READER_TIMEOUT", DEFAULT_TIMEOUT),
                          help="statement_timeout of the oea_reader role (default %(default)s)")
    wait_option(postgres)
