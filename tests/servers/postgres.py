"""A real PostgreSQL server for the tests marked postgres (the conftest fixture ``postgres``).

Debian's server binaries (``/usr/lib/postgresql/<major>/bin``, package ``postgresql``) run a throwaway
cluster: ``initdb`` in a temp folder with a superuser password (SCRAM), then ``pg_ctl start`` listening
on 127.0.0.1 only, on a free port, its socket in that folder. ``initdb`` refuses root, so as root the
cluster runs as the unprivileged user ``postgres`` (the package creates it) through ``setpriv``; otherwise
as the current user. Stopped (``pg_ctl stop -m immediate``) and removed on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SUPERUSER = "oea_admin"


def server_bin() -> str | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    bin: str

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={self.user}"

    def env(self) -> dict[str, str]:
        """libpq's variables for this server (the password in PGPASSWORD, never on a command line)."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password}

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        run = subprocess.run([os.path.join(self.bin, "psql") if os.path.exists(os.path.join(self.bin, "psql"))
                              else "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-c", sql],
                             env={**os.environ, **self.env()}, capture_output=True, text=True, check=True)
        return run.stdout.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as(user: str) -> list[str]:
    if os.geteuid() != 0:
        return []
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]


@contextlib.contextmanager
def start_postgres(workdir: Path) -> Iterator[PostgresServer]:
    """A fresh cluster in ``workdir`` (see the module docstring); stopped and removed on exit."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server: apt-get install postgresql (scripts/setup.sh does)")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    entry = pwd.getpwnam(user)
    base = str(workdir)
    data, sockets = os.path.join(base, "data"), os.path.join(base, "sockets")
    os.makedirs(sockets)
    password = "pg-" + secrets.token_urlsafe(16)
    pwfile = os.path.join(base, "pwfile")
    with open(pwfile, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    for path in (base, sockets, pwfile):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(pwfile, 0o600)
    subprocess.run([*_as(user), os.path.join(bin_dir, "initdb"), "-D", data, "-U", SUPERUSER, "--pwfile", pwfile,
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    os.remove(pwfile)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
    subprocess.run([*_as(user), os.path.join(bin_dir, "pg_ctl"), "-D", data, "-l", os.path.join(base, "server.log"),
                    "-o", options, "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield PostgresServer("127.0.0.1", port, SUPERUSER, password, bin_dir)
    finally:
        subprocess.run([*_as(user), os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
