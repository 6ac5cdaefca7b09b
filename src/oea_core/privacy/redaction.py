"""Scrubbing secrets out of error messages and logs: every salt and API secret the process has seen.

A value is registered once (:func:`remember_secret`, :func:`remember_salt`) and from then on
:func:`redact` replaces it wherever it occurs, so no message or log line shows it.
"""

from __future__ import annotations

import functools
import re

_SEEN: set[str] = set()  # salts created in this process
_SECRETS: set[str] = set()  # API secrets, tokens and Key Vault values read in this process
# Values this long are redacted wherever they occur; shorter ones only as whole tokens (not next to a
# letter, digit or '_'), so a short value never garbles the words around it ("exist" with salt "x").
_REDACT_ANYWHERE_MIN = 8


def remember_salt(value: str) -> None:
    """Have :func:`redact` hide ``value`` (a salt) as ``<salt>`` from now on."""
    _SEEN.add(value)


def remember_secret(value: str | None) -> None:
    """Have :func:`redact` hide ``value`` (an API secret or token) from now on."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


@functools.lru_cache(maxsize=8)
def _redaction(values: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    parts = [re.escape(v) if len(v) >= _REDACT_ANYWHERE_MIN else rf"(?<!\w){re.escape(v)}(?!\w)"
             for v, _ in values]
    return re.compile("|".join(parts)), dict(values)


def redact(text: str) -> str:
    """``text`` with every salt (``<salt>``) and remembered secret (``<secret>``) replaced, for errors and logs.

    One pass, longest value first, so a replacement is never scanned again.
    """
    labels = {v: "<secret>" for v in _SECRETS} | {v: "<salt>" for v in _SEEN}
    if not labels or not text:
        return text
    pattern, label = _redaction(tuple(sorted(labels.items(), key=lambda kv: (-len(kv[0]), kv[0]))))
    return pattern.sub(lambda m: label[m.group(0)], text)
