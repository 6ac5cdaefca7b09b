"""A real full disk for tests: a tiny tmpfs mounted for the test and filled up, so writes fail with ENOSPC.

Mounting needs root (and a kernel that allows it); otherwise :func:`tiny_disk` skips the test, saying why.
Use it from a fixture of the test module::

    @pytest.fixture
    def disk(tmp_path):
        with tiny_disk(tmp_path / "disk") as mount:
            yield mount
"""

from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

FILLER = ".filler"


@contextmanager
def tiny_disk(mount: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``mount`` (created) for the block; unmounted after it, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root (os.geteuid() is not 0)")
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs at {mount} for a full disk: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(mount: Path) -> None:
    """Fill the disk at ``mount`` to the last byte (one filler file); writes after it fail with ENOSPC."""
    chunk = b"\0" * 65536
    with open(mount / FILLER, "ab", buffering=0) as handle:
        for size in (65536, 4096, 1):
            while True:
                try:
                    handle.write(chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break


def free(mount: Path) -> None:
    """Remove the filler: the disk has room again."""
    (mount / FILLER).unlink(missing_ok=True)


def files(root: Path) -> dict[str, int]:
    """Every file under ``root`` (but the filler) with its size, to compare a disk before and after."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and p.name != FILLER}
