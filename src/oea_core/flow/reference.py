"""The reference format: its spellings become today's keys before the flow is checked, each keeping its line.

- ``pipeline: {stages: ...}`` is ``stages:`` at the top level;
- ``datasources:`` at the top level is ``pipeline: {datasources: ...}`` (read by ``datasources.py``);
- ``delay_seconds`` in ``default_retry`` or a step's ``retry`` is ``delay``;
- a notification written as text is ``{webhook: URL}`` for ``https://``/``http://``, ``{teams: https://...}``
  for ``teams://...``, else ``{command: TEXT}``;
- a step's ``destination: {format: delta, path: <stage>/<source>/<table>, mode}`` is ``output: {stage,
  source, table, mode}``; ``dq_checks: [dq/x.sql]`` is ``checks: [{sql: dq/x.sql}]`` (no params);
- a step with a ``source`` or a ``destination`` and no ``kind`` is a sql step.

``checkpoint: {enabled, path}`` (``checkpoint: true`` today), a step's ``source`` and ``pre_views``
have no older spelling; ``checkpoint``, ``read_source`` and ``read_pre_views`` read them. A setting
spelled both ways is a problem at the line of the reference spelling, which is then left out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..lake.paths import STAGES
from .problems import Node

if TYPE_CHECKING:
    from collections.abc import Callable

    from .model import Datasource
    from .problems import Checker

DESTINATION_KEYS = {"format", "path", "mode"}
SOURCE_KEYS = {"datasource", "type", "table", "query"}
_VIEW = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def normalize_top(check: Checker, doc: Node) -> None:
    """Move ``pipeline.stages`` to the top level and top-level ``datasources`` under ``pipeline``."""
    pipeline = doc.get("pipeline")
    if isinstance(pipeline, Node):
        _adopt(check, pipeline, "stages", doc, "stages", "pipeline.stages", "stages (top level)")
        _adopt(check, doc, "datasources", pipeline, "datasources", "datasources (top level)", "pipeline.datasources")


def normalize_pipeline(check: Checker, pipeline: Node) -> None:
    """``default_retry.delay_seconds`` and notifications written as text, as today's keys."""
    _retry(check, pipeline.get("default_retry"), "pipeline.default_retry")
    notifications = pipeline.get("notifications")
    if isinstance(notifications, Node):
        for event, target in notifications.items():
            if isinstance(target, str):
                notifications[event] = notify_target(target, notifications.line_of(event))


def notify_target(text: str, line: int) -> Node:
    """A notification written as text: a webhook URL, ``teams://`` (a Teams webhook over https) or a command."""
    if text.startswith(("https://", "http://")):
        key, value = "webhook", text
    elif text.startswith("teams://"):
        key, value = "teams", "https://" + text.removeprefix("teams://")
    else:
        key, value = "command", text
    return Node([(key, value)], line, {key: line})


def normalize_step(check: Checker, raw: Node, where: str) -> None:
    """A step's ``destination``, ``dq_checks`` and ``retry.delay_seconds`` as today's keys; ``kind`` sql by default."""
    if "kind" not in raw and ("source" in raw or "destination" in raw):
        raw["kind"] = "sql"
    _retry(check, raw.get("retry"), f"{where}.retry")
    _adopt(check, raw, "destination", raw, "output", f"{where}.destination", f"{where}.output",
           lambda value, line: _destination(check, value, line, f"{where}.destination"))
    _adopt(check, raw, "dq_checks", raw, "checks", f"{where}.dq_checks", f"{where}.checks",
           lambda value, line: _dq_checks(check, value, line, f"{where}.dq_checks"))


def checkpoint(check: Checker, pipeline: Node) -> tuple[bool, str | None]:
    """``checkpoint: true`` (today) or ``{enabled, path}``: whether a run resumes, and where run logs live."""
    value, line = pipeline.get("checkpoint", True), pipeline.line_of("checkpoint")
    if value is None or isinstance(value, bool):
        return bool(value), None
    if not isinstance(value, Node):
        check.add("pipeline.checkpoint", line, f"give true, false or {{enabled: true, path: FOLDER}}, not {value!r}")
        return True, None
    check.keys(value, {"enabled", "path"}, "pipeline.checkpoint")
    enabled, path = value.get("enabled", True), value.get("path")
    if not isinstance(enabled, bool):
        check.add("pipeline.checkpoint.enabled", value.line_of("enabled"), f"must be true or false, not {enabled!r}")
        enabled = True
    if path is not None and (not isinstance(path, str) or not path.strip() or ".." in path.split("/")):
        check.add("pipeline.checkpoint.path", value.line_of("path"), "give the folder of the run logs: absolute, or "
                  f"relative to the lake's folder (without ..), not {path!r}")
        path = None
    return enabled, path


def read_source(check: Checker, raw: Node, who: str, datasources: dict[str, Datasource]) -> dict[str, Any] | None:
    """A sql step's ``source``: ``{datasource, table | query}`` or ``{type: delta, table: <stage>/<source>/<table>}``."""
    source = raw.get("source")
    if source is None or not _sql_only(check, raw, "source", who) or not check.mapping(source, f"{who}.source",
                                                                                           raw.line_of("source")):
        return None
    where, line = f"{who}.source", source.line
    check.keys(source, SOURCE_KEYS, where)
    name, table, query = source.get("datasource"), source.get("table"), source.get("query")
    if name is not None:
        if name not in datasources:
            check.add(where, source.line_of("datasource"), f"unknown datasource {name!r}; the flow's datasources: "
                      f"{', '.join(datasources) or 'none'} (under pipeline.datasources)")
        if (table is None) == (query is None) or not isinstance(table or query, str) or "type" in source:
            check.add(where, line, "give the datasource's table or a query (text), one of the two, and no type")
        return {"datasource": name, "query": query} if query is not None else {"datasource": name, "table": table}
    if source.get("type") != "delta" or query is not None or _lake_path(table) is None:
        check.add(where, line, "give {datasource: NAME, table: T} or {datasource: NAME, query: SQL} (a datasource "
                  "under pipeline.datasources), or {type: delta, table: <stage>/<source>/<table>} (a lake table)")
    return {"type": "delta", "table": table}


def read_pre_views(check: Checker, raw: Node, who: str) -> dict[str, str]:
    """A sql step's ``pre_views``: ``{view: SELECT ...}`` or a list of ``{name, sql}``, in order."""
    value, where, line = raw.get("pre_views"), f"{who}.pre_views", raw.line_of("pre_views")
    if value is None or not _sql_only(check, raw, "pre_views", who):
        return {}
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            if check.mapping(item, f"{where}[{index}]", line):
                check.keys(item, {"name", "sql"}, f"{where}[{index}]")
                items.append((item.get("name"), item.get("sql"), item.line))
    elif isinstance(value, Node):
        items = [(name, sql, value.line_of(name)) for name, sql in value.items()]
    else:
        check.add(where, line, "give a mapping of view names to SELECTs, or a list of {name, sql}")
        return {}
    views: dict[str, str] = {}
    for name, sql, at in items:
        if not isinstance(name, str) or not _VIEW.match(name) or name in views:
            check.add(where, at, f"a view name must be letters, digits and _, once each; not {name!r}")
        elif not isinstance(sql, str) or not sql.strip():
            check.add(where, at, f"view {name}: give its SELECT as text")
        else:
            views[name] = sql
    return views


def _sql_only(check: Checker, raw: Node, key: str, who: str) -> bool:
    if raw.get("kind") != "sql":
        check.add(f"{who}.{key}", raw.line_of(key), f"{key} is read by sql steps only, not {raw.get('kind')} steps")
        return False
    return True


def _adopt(check: Checker, node: Node, key: str, target: Node, new: str, spelled: str, today: str,
           convert: Callable[[Any, int], Any] | None = None) -> None:
    """Move ``node[key]`` (converted) to ``target[new]`` with its line; a problem when ``target`` has ``new`` too."""
    if key not in node:
        return
    line = node.line_of(key)
    value = node.pop(key)
    if new in target:
        check.add(spelled, line, f"the same setting is spelled both ways, '{today}' (line {target.line_of(new)}) and "
                  f"'{spelled}' (line {line}); keep one")
        return
    target[new] = convert(value, line) if convert else value
    target.key_lines[new] = line


def _retry(check: Checker, retry: object, where: str) -> None:
    if isinstance(retry, Node):
        _adopt(check, retry, "delay_seconds", retry, "delay", f"{where}.delay_seconds", f"{where}.delay")


def _destination(check: Checker, value: object, line: int, where: str) -> Node:
    """``output`` for a ``destination``; a bad one (its problems recorded) gives an empty output, not a second problem."""
    empty = ("", "", "")
    if not check.mapping(value, where, line):
        return Node(zip(("stage", "source", "table"), empty, strict=True), line)
    check.keys(value, DESTINATION_KEYS, where)
    if value.get("format", "delta") != "delta":
        check.add(where, value.line_of("format"), f"format must be delta, not {value.get('format')!r}")
    parts = _lake_path(value.get("path"))
    if parts is None:
        check.add(where, value.line_of("path"), f"path must be <stage>/<source>/<table>, not {value.get('path')!r}")
    output = Node(zip(("stage", "source", "table"), parts or empty, strict=True), value.line)
    if "mode" in value:
        output["mode"] = value["mode"]
    return output


def _dq_checks(check: Checker, value: object, line: int, where: str) -> list[Any]:
    """Each SQL file path as a check with just its ``sql`` (no params); a mapping is read as today's check."""
    if not isinstance(value, list):
        check.add(where, line, "give a list of SQL file paths")
        return []
    return [Node([("sql", item)], line, {"sql": line}) if isinstance(item, str) else item for item in value]


def _lake_path(path: object) -> tuple[str, str, str] | None:
    parts = path.strip("/").split("/") if isinstance(path, str) else []
    if len(parts) != 3 or not all(parts) or (parts[0] not in STAGES and "{{" not in parts[0]):
        return None
    return parts[0], parts[1], parts[2]

