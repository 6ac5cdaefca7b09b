"""A throwaway OpenSSH server (Debian's real ``/usr/sbin/sshd``) for the tests marked ``sftp``.

``start_sshd`` runs ``sshd -D -e -f <config>`` on a free loopback port with its own host key, an
authorized key and password authentication, and waits until the port accepts. sshd never runs as
root here: run as root (CI), it runs as the system user ``oea-sftp`` (created once with ``useradd``,
its password set with ``chpasswd``), started through ``setpriv`` with the supplementary group
``shadow``. A non-root sshd can only authenticate the user it runs as, and checks a password against
``getspnam``; the ``shadow`` group is what lets it read that user's hash (``/etc/shadow`` is
``root:shadow 0640`` on Debian), so ``UsePAM no`` and plain password authentication work. Not root,
it runs as the current user and has no password to check (``password`` is None).

``DropProxy`` is a loopback TCP proxy that cuts the first connections after a number of bytes from
the server, to test resumed downloads.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

SSHD = "/usr/sbin/sshd"
SFTP_USER = "oea-sftp"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class SshServer:
    """A running sshd: its port, user, password (None when it cannot check one), the client's key file,
    a known_hosts file naming its host key, and the folder its user can read (``data``)."""

    port: int
    pid: int
    user: str
    password: str | None
    key_file: str
    known_hosts: str
    data: str
    host_key_pub: str
    no_password_reason: str = ""

    def url(self, path: str, port: int | None = None) -> str:
        return f"sftp://{self.user}@127.0.0.1:{port or self.port}{path}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_user() -> tuple[str, str | None, str]:
    """``(user, password, why none)``; as root, the system user ``oea-sftp`` with a fresh password."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name, None, "not root: sshd runs as this user and cannot check passwords"
    try:
        pwd.getpwnam(SFTP_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/bin/sh", SFTP_USER], check=True, capture_output=True)
    password = "pw-" + secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input=f"{SFTP_USER}:{password}\n", text=True, check=True, capture_output=True)
    return SFTP_USER, password, ""


def _keygen(path: str, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path], check=True, capture_output=True)


def write_known_hosts(path: str, port: int, host_key_pub: str, *more_ports: int) -> None:
    """A known_hosts file naming ``host_key_pub`` for 127.0.0.1 on ``port`` (and ``more_ports``: a proxy's)."""
    with open(host_key_pub, encoding="utf-8") as handle:
        kind, blob = handle.read().split()[:2]
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"[127.0.0.1]:{p} {kind} {blob}\n" for p in (port, *more_ports))


@contextlib.contextmanager
def start_sshd(workdir: Path) -> Iterator[SshServer]:
    """Run sshd for the tests (see the module docstring); killed on exit."""
    user, password, reason = _ensure_user()
    entry = pwd.getpwnam(user)
    base = str(workdir)
    os.chmod(base, 0o755)
    server_dir = os.path.join(base, "server")
    data = os.path.join(base, "data")
    os.makedirs(server_dir)
    os.makedirs(data)
    _keygen(os.path.join(server_dir, "host_key"))
    client_key = os.path.join(base, "client_key")
    _keygen(client_key)
    shutil.copy(client_key + ".pub", os.path.join(server_dir, "authorized_keys"))
    port = free_port()
    config = os.path.join(server_dir, "sshd_config")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {server_dir}/host_key
PidFile none
UsePAM no
StrictModes no
PubkeyAuthentication yes
AuthorizedKeysFile {server_dir}/authorized_keys
PasswordAuthentication {"yes" if password else "no"}
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {user}
Subsystem sftp internal-sftp
MaxStartups 50
LogLevel INFO
""")
    for parent, _dirs, files in os.walk(base):
        os.chown(parent, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(parent, name), entry.pw_uid, entry.pw_gid)
    command = [SSHD, "-D", "-e", "-f", config]
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--groups=shadow",
                   "--inh-caps=-all", *command]
    log_file = os.path.join(base, "sshd.log")
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                with open(log_file, encoding="utf-8", errors="replace") as handle:
                    raise RuntimeError(f"sshd exited with {process.returncode}: {handle.read()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not accept connections in time")
            time.sleep(0.05)
        known_hosts = os.path.join(base, "known_hosts")
        write_known_hosts(known_hosts, port, os.path.join(server_dir, "host_key.pub"))
        yield SshServer(port, process.pid, user, password, client_key, known_hosts, data,
                        os.path.join(server_dir, "host_key.pub"), reason)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def give_to_server(server: SshServer, path: str) -> None:
    """Make every file and folder under ``path`` belong to the server's user (it reads the data as that user)."""
    entry = pwd.getpwnam(server.user)
    if os.geteuid() != 0:
        return
    for parent, _dirs, files in os.walk(path):
        os.chown(parent, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(parent, name), entry.pw_uid, entry.pw_gid)


class DropProxy:
    """A loopback TCP proxy to ``port`` that closes the first ``drops`` connections once ``after`` bytes
    came from the server; later connections pass everything.

    ``kept`` (the bytes the client has saved so far, e.g. the size of its ``.part`` files) makes the cut wait
    until the client saved more than it had when the connection opened, however loaded the machine is
    (paramiko raises a dropped transport's error before handing out data it already buffered)."""

    def __init__(self, port: int, after: int, kept: Callable[[], int], drops: int = 1) -> None:
        self.target = port
        self.after = after
        self.drops = drops
        self.kept = kept
        self.connections = 0
        self.cut = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.after if self.connections <= self.drops else None
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            start = self.kept()
            threading.Thread(target=self._pipe, args=(upstream, client, limit, start), daemon=True).start()

    def _wait_for_the_client(self, start: int) -> None:
        """Hold the cut until the client saved bytes of this connection (at most 60 s)."""
        deadline = time.monotonic() + 60
        while self.kept() <= start and time.monotonic() < deadline:
            time.sleep(0.05)

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None, start: int = 0) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: max(0, limit - sent)])
                    self._wait_for_the_client(start)
                    self.cut += 1
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()
