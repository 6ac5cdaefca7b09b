"""Checking a flow file's YAML: mappings that know their lines, and a ``Checker`` that collects every problem.

Nothing here stops at the first problem: each check records what is wrong (``file:line: where:
message``) and returns a usable default, so ``load_flow`` can report every problem at once.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from typing import TYPE_CHECKING, Any, TypeGuard, cast

from .model import Retry

if TYPE_CHECKING:
    from collections.abc import Iterable

    import yaml

_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
RETRY_KEYS = frozenset({"attempts", "delay"})


class Node(dict[str, Any]):
    """A YAML mapping that knows its line and the line of each of its keys."""

    def __init__(self, items: Iterable[tuple[str, Any]] = (), line: int = 0,
                 key_lines: dict[str, int] | None = None) -> None:
        super().__init__(items)
        self.line = line
        self.key_lines = key_lines or {}

    def line_of(self, key: str) -> int:
        """The line of ``key``, else of the mapping."""
        return self.key_lines.get(key, self.line)


def yaml_loader() -> type[yaml.SafeLoader]:
    """A safe YAML loader that builds every mapping as a ``Node``."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Node:
        # typed as text keys: a key of another type is reported as unknown wherever it appears
        items = cast("dict[str, Any]", loader.construct_mapping(node, deep=True))
        return Node(items.items(), node.start_mark.line + 1,
                    {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k.value, str)})

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


class Checker:
    """Collects problems in the flow file at ``path``, each with its line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def add(self, where: str, line: int, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {where}: {message}")

    def keys(self, node: Node, known: Iterable[str], where: str) -> None:
        """A problem for each key of ``node`` not in ``known``, listing the known ones."""
        known = set(known)
        for key in node:
            if key not in known:
                self.add(where, node.line_of(key), f"unknown key {key!r} (known: {', '.join(sorted(known))})")

    def mapping(self, node: object, where: str, line: int) -> TypeGuard[Node]:
        """Is ``node`` a mapping? If not, a problem."""
        if not isinstance(node, Node):
            self.add(where, line, f"expected a mapping, got {type(node).__name__}")
            return False
        return True

    def retry(self, node: object, where: str, line: int, default: Retry) -> Retry:
        if node is None or not self.mapping(node, where, line):
            return default
        self.keys(node, RETRY_KEYS, where)
        attempts = node.get("attempts", default.attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            self.add(where, node.line, f"attempts must be a whole number of at least 1, not {attempts!r}")
            attempts = default.attempts
        delay = self.duration(node.get("delay", default.delay), where, node.line, default.delay, "delay", 0)
        return Retry(attempts, delay)

    def duration(self, value: object, where: str, line: int, default: float, what: str, minimum: float) -> float:
        """Seconds from a number or a duration string (``90s``, ``20m``, ``1h30m``)."""
        seconds = parse_duration(value)
        if seconds is None or seconds < minimum:
            self.add(where, line, f"{what} must be seconds (a number{' above' if minimum else ' of at least'} 0) "
                     f"or a duration such as 90s, 20m or 1h30m, not {value!r}")
            return default
        return seconds

    def file(self, where: str, line: int, folder: str, relative: str) -> str:
        """``relative`` resolved against the flow's folder; a problem if no such file (templates pass)."""
        if "{{" in relative:
            return relative  # rendered at run time
        path = relative if os.path.isabs(relative) else os.path.normpath(os.path.join(folder, relative))
        if not relative or not os.path.isfile(path):
            self.add(where, line, f"file {relative!r} does not exist (looked for {path})")
        return path

    def callable(self, where: str, line: int, target: str) -> None:
        """A problem unless ``target`` (``package.module:function``) imports and is callable."""
        module, _, function = target.partition(":")
        if not module or not function:
            self.add(where, line, f"callable must be 'package.module:function', not {target!r}")
            return
        try:
            found = getattr(importlib.import_module(module), function, None)
        except ImportError as exc:
            self.add(where, line, f"cannot import {module!r}: {exc}")
            return
        if not callable(found):
            self.add(where, line, f"{module} has no function {function!r}")


def parse_duration(value: object) -> float | None:
    """Seconds in ``value`` (a number, or a string like ``90``, ``90s``, ``20m``, ``1h30m``); None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = value.replace(" ", "").lower() if isinstance(value, str) else ""
    if _SECONDS.match(text):
        return float(text)
    match = _DURATION.match(text) if text else None
    if match is None:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
