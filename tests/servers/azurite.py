"""A throwaway Azurite (the Azure Storage emulator) for the tests marked ``azurite``.

``start_azurite`` runs the Blob service of the Azurite that ``scripts/setup.sh`` installs
(``<venv>/share/oea/azurite``, or ``$OEA_AZURITE``) on a free loopback port, in memory, in its own
process group, and waits until it answers. Azurite serves only the Blob API (no ADLS Gen2 ``dfs``
endpoint), which is what adlfs and delta-rs speak. ``tests/conftest.py`` turns it into the
session-scoped ``azurite`` fixture and marks the tests that take it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from oea_core.lake.storage import EMULATOR_ACCOUNT, EMULATOR_KEY

if TYPE_CHECKING:
    from collections.abc import Iterator

AZURITE_SETTING = "OEA_AZURITE"
START_TIMEOUT = 60.0  # seconds; it starts in about 2 s on an idle 2-core machine


@dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite Blob service: its port, endpoint and connection string, and its process (group) id."""

    port: int
    pid: int
    account: str = EMULATOR_ACCOUNT
    account_key: str = EMULATOR_KEY

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.account_key};"
                f"BlobEndpoint={self.blob_endpoint};")

    def lake_url(self, container: str = "stage1np") -> str:
        """The lake URL as a user writes it; the connection string sends its requests to this server."""
        return f"abfss://{container}@{self.account}.dfs.core.windows.net"


def azurite_home() -> Path:
    return Path(os.environ.get(AZURITE_SETTING) or Path(sys.prefix) / "share" / "oea" / "azurite")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 400/403 without credentials: it is up
    except OSError:
        return False
    return True


@contextlib.contextmanager
def start_azurite(workdir: Path, *, attempts: int = 3) -> Iterator[AzuriteServer]:
    """Run Azurite's Blob service until the block ends, then stop its whole process group."""
    binary = azurite_home() / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise RuntimeError(f"Azurite is not installed at {binary.parent.parent.parent}: run ./scripts/setup.sh "
                           f"(it needs npm), or set {AZURITE_SETTING} to a folder holding node_modules/.bin/azurite-blob")
    for attempt in range(attempts):
        port = _free_port()  # another process may take it before Azurite does: then try another
        log = workdir / f"azurite-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                 "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        server = AzuriteServer(port, process.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline and not _answers(server.blob_endpoint):
            time.sleep(0.1)
        if process.poll() is None and _answers(server.blob_endpoint):
            break
        _stop(process)
        text = log.read_text(errors="replace")
        if "EADDRINUSE" not in text or attempt == attempts - 1:
            raise RuntimeError(f"Azurite did not start on port {port} within {START_TIMEOUT:.0f} s: {text[-2000:]}")
    try:
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after 10 s; the group is Azurite's alone (start_new_session)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # any member of the group the leader left behind
        os.killpg(process.pid, signal.SIGKILL)
