"""The PostgreSQL server a publish writes to: its connection settings, its databases, and the client tools.

Settings come from ``--dsn`` (a libpq connection string or URI) and libpq's own ``PG*`` variables, the
password from the DSN, ``PGPASSWORD`` or the password file (``~/.pgpass``, ``PGPASSFILE``). A password is
remembered as a secret (:mod:`oea_core.privacy.redaction`) as soon as it is seen, so no error or log line shows it,
and it reaches dbt, pg_dump and psql only through their environment (``PGPASSWORD``), never a command line.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
from dataclasses import dataclass

import psycopg
from psycopg import conninfo, errors, sql

from ..errors import PublishError
from ..privacy.redaction import redact, remember_secret

log = logging.getLogger("oea")

DBT_SETTING = "OEA_DBT"
PG_BIN_SETTING = "OEA_PG_BIN"
MAINTENANCE_DB = "postgres"
# libpq connection keywords and the environment variables that set them
_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
        "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
        "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS",
        "service": "PGSERVICE", "target_session_attrs": "PGTARGETSESSIONATTRS"}


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server reached with ``dsn`` (libpq fills in what it leaves out from ``PG*``)."""

    dsn: str = ""

    @classmethod
    def from_dsn(cls, dsn: str | None) -> Server:
        """Check ``dsn`` (None: libpq's variables only) and remember any password in it as a secret."""
        try:
            parts = conninfo.conninfo_to_dict(dsn or "")
        except psycopg.ProgrammingError as exc:
            raise PublishError(f"the PostgreSQL DSN does not parse ({_first_line(exc)}): give "
                               "'host=... port=... user=...' or 'postgresql://user@host:port/'") from None
        remember_secret(str(parts.get("password") or "") or None)
        remember_secret(os.environ.get("PGPASSWORD"))
        return cls(dsn or "")

    def connect(self, database: str, *, autocommit: bool = False) -> psycopg.Connection:
        """A connection to ``database``; PublishError naming the database and user when it fails."""
        try:
            conn = psycopg.connect(conninfo.make_conninfo(self.dsn, dbname=database), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            raise PublishError(f"cannot connect to PostgreSQL database {database!r} ({_first_line(exc)}): check "
                               "--dsn or the PG* variables (PGHOST, PGPORT, PGUSER) and the password (PGPASSWORD "
                               "or ~/.pgpass)", database=database) from None
        remember_secret(conn.info.password or None)
        return conn

    def ensure_database(self, database: str) -> bool:
        """Create ``database`` unless it exists (True when created); the user needs CREATEDB for that."""
        with self.connect(MAINTENANCE_DB, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except errors.InsufficientPrivilege:
                user = conn.info.user
                raise PublishError(f"database {database!r} does not exist and user {user!r} may not create it: "
                                   f"create it (CREATE DATABASE {database}) or let the user create databases "
                                   f"(ALTER ROLE {user} CREATEDB)", database=database) from None
            except errors.DuplicateDatabase:  # another publish created it meanwhile
                return False
        log.info("created database %s", database)
        return True

    def tool_env(self, conn: psycopg.Connection, database: str) -> dict[str, str]:
        """The environment for a client tool (dbt, pg_dump, psql) reaching ``database`` as ``conn`` did:
        libpq's variables, the password in ``PGPASSWORD``."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update({_ENV[key]: str(value) for key, value in conninfo.conninfo_to_dict(self.dsn).items()
                    if key in _ENV and value is not None})
        for name in ("PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSERVICEFILE", "PGSERVICE", "PGCONNECT_TIMEOUT"):
            if name in os.environ and name not in env:
                env[name] = os.environ[name]
        info = conn.info
        env.update({"PGHOST": info.host, "PGPORT": str(info.port), "PGUSER": info.user, "PGDATABASE": database})
        env.pop("PGHOSTADDR", None)
        env.pop("PGSERVICE", None)  # every setting is explicit now
        if info.password:
            env["PGPASSWORD"] = info.password
        return env


def _first_line(exc: BaseException) -> str:
    text = redact(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def find_dbt() -> str:
    """dbt: ``$OEA_DBT``, else the one ``scripts/setup.sh`` installs (``<sys.prefix>/share/oea/dbt/bin/dbt``),
    else ``dbt`` on PATH; PublishError when there is none."""
    configured = os.environ.get(DBT_SETTING)
    if configured:
        if not os.access(configured, os.X_OK):
            raise PublishError(f"{DBT_SETTING}={configured} is not an executable dbt: fix {DBT_SETTING} or unset it")
        return configured
    bundled = os.path.join(sys.prefix, "share", "oea", "dbt", "bin", "dbt")
    found = bundled if os.access(bundled, os.X_OK) else shutil.which("dbt")
    if found is None:
        raise PublishError(f"dbt is not installed (not at {bundled}, not on PATH): run scripts/setup.sh, which "
                           f"installs it (requirements-dbt.txt) in its own environment, or set {DBT_SETTING}")
    return found


def find_pg_tool(name: str) -> str:
    """A PostgreSQL client tool (pg_dump, pg_restore, psql): in ``$OEA_PG_BIN``, else the newest
    ``/usr/lib/postgresql/*/bin``, else on PATH; PublishError when there is none."""
    configured = os.environ.get(PG_BIN_SETTING)
    if configured:
        path = os.path.join(configured, name)
        if not os.access(path, os.X_OK):
            raise PublishError(f"{PG_BIN_SETTING}={configured} has no {name}: fix {PG_BIN_SETTING} or unset it")
        return path
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    found = versions[-1] if versions else shutil.which(name)
    if found is None:
        raise PublishError(f"{name} (PostgreSQL's client tools) is not installed: apt-get install postgresql-client "
                           f"(scripts/setup.sh installs postgresql), or set {PG_BIN_SETTING} to their folder")
    return found
