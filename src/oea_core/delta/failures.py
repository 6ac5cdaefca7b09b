"""An engine's write failure as one line that keeps its cause: a full disk says so, naming the table.

Spark reports a failed write as a Py4J error whose text is a Java stack trace (first line "An error
occurred while calling o84.parquet."), delta-rs as a multi-line chain (``Generic LocalFileSystem
error ↳ ... ↳ No space left on device``). :func:`explained` turns either into a DeltaTableError of one
line: the innermost Java cause, or delta-rs's chain joined, or, for a full disk, what to do about it.
"""

from __future__ import annotations

import re
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from ..errors import DeltaTableError
from ..lake.diskspace import disk_full_message, is_disk_full
from ..privacy.redaction import redact

if TYPE_CHECKING:
    from collections.abc import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX = 600  # characters of a cause kept in the message


@contextmanager
def explained(path: str, engine: str) -> Iterator[None]:
    """Re-raise an engine's failure inside the block as a one-line DeltaTableError naming ``path``."""
    try:
        yield
    except DeltaTableError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise DeltaTableError(f"{disk_full_message('Delta table', path)}; the previous version is unchanged "
                                  f"(the {engine} engine's write stopped)", path=path) from exc
        raise DeltaTableError(f"writing Delta table {path} with the {engine} engine failed; the previous version "
                              f"is unchanged: {redact(cause(exc))}", path=path) from exc


def cause(exc: BaseException) -> str:
    """One line saying what went wrong: the innermost Java cause of a Py4J error, else the error's own text."""
    java = getattr(exc, "java_exception", None)
    text = None
    if java is not None:
        with suppress(Exception):  # the JVM is gone: say what Python saw
            text = str(_innermost(java).toString())
    return _one_line(text or str(exc) or repr(exc))


def _innermost(java: Any) -> Any:
    seen = 0
    while java.getCause() is not None and seen < 50:
        java, seen = java.getCause(), seen + 1
    return java


def _one_line(text: str) -> str:
    lines = [line.strip().lstrip("↳").strip() for line in _ANSI.sub("", text).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("at ", "File ", "..."))]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        lines = ["a Python function failed: " + lines[-1]]  # a UDF's error is the traceback's last line
    text = ": ".join(lines)
    return text if len(text) <= _MAX else text[:_MAX] + " ..."
