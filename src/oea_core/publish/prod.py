"""Prod: a copy of dev's ``transformed`` schema, replaced in one transaction, and its read-only role.

``pg_dump -Fc -n transformed`` of dev becomes a SQL script (``pg_restore -f``), run by ``psql
--single-transaction`` in prod between ``DROP SCHEMA IF EXISTS transformed CASCADE`` and the reader's grants.
Until that transaction commits, readers see the old schema (a query that arrives meanwhile waits for it,
then reads the new tables); a failure rolls all of it back. Prod is never transformed in place.

``oea_reader`` may connect to prod and read ``transformed`` and nothing else: no CREATE on any schema, no
temporary tables, every session read-only, and a statement timeout. It is NOLOGIN (a group role to grant to
the applications' users) unless ``OEA_PG_READER_PASSWORD`` gives it a password to log in with.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile

import psycopg
from psycopg import sql

from ..errors import PublishError
from ..privacy.redaction import redact, remember_secret
from .server import find_pg_tool

log = logging.getLogger("oea")

SCHEMA = "transformed"
READER = "oea_reader"
READER_PASSWORD_SETTING = "OEA_PG_READER_PASSWORD"
DEFAULT_TIMEOUT = "30s"
_TIMEOUT = re.compile(r"^\d+\s*(ms|s|min|h)?$")


def check_timeout(value: str) -> str:
    """``value`` if it is a PostgreSQL duration (``30s``, ``2min``, ``500ms``, ``0`` for none); PublishError if not."""
    if not _TIMEOUT.match(value.strip()):
        raise PublishError(f"reader statement timeout {value!r} is not a duration: give e.g. 30s, 2min or 500ms")
    return value.strip()


def ensure_reader(conn: psycopg.Connection, timeout: str) -> None:
    """Create or update ``oea_reader`` (a cluster-wide role): NOLOGIN, or LOGIN with ``OEA_PG_READER_PASSWORD``
    (sent as a SCRAM verifier, so the password itself never reaches the server's logs)."""
    password = os.environ.get(READER_PASSWORD_SETTING) or None
    remember_secret(password)
    role = sql.Identifier(READER)
    try:
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
                log.info("created role %s", READER)
            if password:
                verifier = conn.pgconn.encrypt_password(password.encode(), READER.encode(), b"scram-sha-256")
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(verifier.decode())))
            else:
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(role, sql.Literal(timeout)))
            conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    except psycopg.errors.InsufficientPrivilege:
        user = conn.info.user
        raise PublishError(f"user {user!r} may not create or change the role {READER}: grant it CREATEROLE (ALTER "
                           f"ROLE {user} CREATEROLE) and ADMIN OPTION on {READER} if that exists; prod is unchanged",
                           database=conn.info.dbname) from None


def _grants(database: str) -> str:
    db, schema, reader = (sql.Identifier(n).as_string() for n in (database, SCHEMA, READER))
    return f"""
REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {reader};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {reader};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader};
GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {reader};
ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {reader};
"""


def _run(command: list[str], env: dict[str, str], what: str, database: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in redact(done.stderr).strip().splitlines() if line.strip()]
        detail = " | ".join(lines[-3:]) or f"exit {done.returncode}"
        raise PublishError(f"{what} failed ({detail}); prod database {database!r} is unchanged",
                           database=database)


def replace_prod(dev_env: dict[str, str], prod_env: dict[str, str], dev: str, prod: str) -> None:
    """Replace prod's ``transformed`` schema by dev's, in one transaction, with the reader's grants."""
    with tempfile.TemporaryDirectory(prefix="oea-publish-") as work:
        dump, script, wrapper = (os.path.join(work, name) for name in ("transformed.dump", "transformed.sql",
                                                                       "replace.sql"))
        _run([find_pg_tool("pg_dump"), "-Fc", "--no-owner", "--no-privileges", "-n", SCHEMA, "-f", dump, "-d", dev],
             dev_env, f"pg_dump of {dev}.{SCHEMA}", prod)
        _run([find_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "-f", script, dump], dev_env,
             "pg_restore (to a script)", prod)
        with open(wrapper, "w", encoding="utf-8") as f:
            f.write(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;\n\\i '{script}'\n"
                    "SELECT pg_catalog.set_config('search_path', 'public', false);\n" + _grants(prod))
        _run([find_pg_tool("psql"), "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-d", prod, "-f",
              wrapper], prod_env, f"replacing {prod}.{SCHEMA}", prod)
    log.info("prod %s: schema %s replaced by dev %s's", prod, SCHEMA, dev)


def prod_tables(conn: psycopg.Connection) -> int | None:
    """How many tables prod's ``transformed`` holds (None: no such schema)."""
    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone():
        return None
    row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (SCHEMA,)).fetchone()
    return int(row[0]) if row else 0
