"""File paths as Spark reads them: literal paths (never glob patterns), the URI it reports, names it skips.

Spark hands every path to Hadoop, which reads ``? * [ ] { } \\`` as a glob: ``2022-01-0?.csv``
would also match ``2022-01-03.csv``, and ``report[1].csv`` would match nothing. :func:`literal_path`
escapes those characters, so a path always names exactly one file. ``input_file_name()`` reports
a file as Hadoop's URI for it, which quotes some characters and not others (it keeps ``'``,
``*``, ``,`` and non-ASCII letters); :func:`file_uri` builds that same string. Checked against
Spark 3.5 with Hadoop 3.3.
"""

from __future__ import annotations

import os
import unicodedata

_GLOB = frozenset("\\{}[]*?")
# java.net.URI's legal path characters (unreserved, punct, ":@&=+$,", ";" and "/"); others are %-quoted
_URI_PATH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'():@&=+$,;/")


def literal_path(path: str) -> str:
    """``path`` with Hadoop's glob metacharacters escaped, so Spark reads exactly that file or folder."""
    return "".join("\\" + c if c in _GLOB else c for c in path)


def _quote(char: str) -> str:
    if char < "\x80":
        return char if char in _URI_PATH else f"%{ord(char):02X}"
    # java.net.URI keeps other non-ASCII characters as they are, except spaces and control characters
    if unicodedata.category(char) in ("Zs", "Zl", "Zp") or char <= "\x9f":
        return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return char


def file_uri(path: str) -> str:
    """The URI ``input_file_name()`` gives for the file at ``path`` (a local path, or ``scheme://host/path``)."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        authority, slash, local = rest.partition("/")
        return f"{scheme}://{authority}" + "".join(_quote(c) for c in slash + local)
    return "file://" + "".join(_quote(c) for c in os.path.abspath(path))


def spark_skips(name: str) -> bool:
    """Whether Spark's file listing treats a file or folder of this name as hidden (as Spark 3.5 does)."""
    hidden = name.startswith(".") or (name.startswith("_") and "=" not in name) or name.endswith("._COPYING_")
    return hidden and not name.startswith(("_metadata", "_common_metadata"))


def unreadable_reason(name: str) -> str | None:
    """Why Spark would not read a file of this name (None when it would); checked by experiment.

    Spark's file sources skip "hidden" names even when given the path itself, and Hadoop's ``Path``
    reads ``a:b`` as a URI with the scheme ``a``, so reading such a file fails.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8, so Spark cannot name the file"
    if spark_skips(name):
        return ("Spark skips hidden files (names that start with '.' or '_', or end with '._COPYING_'), "
                "so it would never be read")
    if ":" in name:
        return "Hadoop reads a ':' in a file name as a URI scheme, so Spark cannot read the file"
    return None


def shown(text: str) -> str:
    """``text`` for a one-line message: control characters and invalid UTF-8 escaped, the rest as is."""
    return text if text.isprintable() else repr(text)[1:-1]
