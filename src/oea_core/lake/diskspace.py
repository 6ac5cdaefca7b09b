"""A full disk, told the same way everywhere: one line naming the path and saying to free space.

``is_disk_full`` recognizes ENOSPC and EDQUOT as an ``OSError``, and the same failure as an engine
reports it in its text (Java's ``IOException: No space left on device``, delta-rs's I/O errors).
"""

from __future__ import annotations

import errno

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_TEXTS = (b"no space left on device", b"disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from, says the disk (or the quota) is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        text = str(exc).lower().encode("utf-8", "replace")
        if any(words in text for words in _DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_message(what: str, path: str) -> str:
    """``cannot write <what> <path>: the disk is full ...; free space ... and rerun``, one line."""
    return (f"cannot write {what} {path}: the disk is full (no space left on device); free space on the disk "
            "holding it, then rerun")
