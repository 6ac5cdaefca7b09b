"""Data-quality check SQL: parameters are bound or quoted by type, never spliced as text.

A check file is a Jinja template. Each parameter it renders goes through one type filter:

- ``{{ column | ident }}`` (``{{ keys | idents }}`` for a list): a column name, checked against
  ``[A-Za-z_][A-Za-z0-9_]*`` and back-quoted;
- ``{{ min | date }}`` (``YYYY-MM-DD``), ``{{ min_rows | number }}``, ``{{ label | text }}``: bound
  as a typed Spark SQL parameter (``:p1``); a date or number is parsed first.

``{{ delta(stage, source, table) }}`` returns a view name built from checked lake names. Anything
else rendered raw is refused. ``check_problems`` finds bad parameters when the flow is validated;
the filters check again when the check runs (parameters may be templates). ``read_checks`` reads
a step's ``checks:`` entries when the flow is loaded.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from typing import TYPE_CHECKING, Any, cast

import jinja2
from jinja2 import nodes

from ..errors import LakePathError, OEAError
from ..lake.paths import STAGES, check_name
from .model import Check

if TYPE_CHECKING:
    from collections.abc import Callable

    from .problems import Checker, Node

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^-?\d{1,18}(\.\d{1,18})?$")
SEVERITIES = ("error", "warn")
CHECK_KEYS = {"name", "sql", "severity", "params", "max"}
TYPE_FILTERS = ("ident", "idents", "date", "number", "text")
_PASS_THROUGH = ("default", "d")  # filters that keep a parameter's value


class Sql(str):
    """SQL text safe to splice: a quoted identifier, a parameter marker or a view name."""


def ident(value: object) -> Sql:
    """A column name, back-quoted; raises OEAError unless it matches the identifier rule."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise OEAError(f"{value!r} is not a column name: use letters, digits and _, not starting with a digit")
    return Sql(f"`{value}`")


def idents(value: object) -> Sql:
    """A non-empty list of column names, back-quoted and comma-separated."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise OEAError(f"{value!r} is not a list of column names")
    return Sql(", ".join(ident(v) for v in value))


def as_date(value: object) -> dt.date:
    """``value`` as a date (YYYY-MM-DD); raises OEAError if it is not a real date."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise OEAError(f"{value!r} is not a date: give YYYY-MM-DD")


def as_number(value: object) -> int | float:
    """``value`` as an int or a finite float; raises OEAError otherwise."""
    if isinstance(value, bool):
        raise OEAError(f"{value!r} is not a number")
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, str) and _NUMBER.match(value):
        return float(value) if "." in value else int(value)
    raise OEAError(f"{value!r} is not a number")


def as_text(value: object) -> str:
    """``value`` as text (a string or a number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise OEAError(f"{value!r} is not text")
    return str(value)


_CONVERT: dict[str, Callable[[object], object]] = {"date": as_date, "number": as_number, "text": as_text}


def render_check(template: str, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Render a check; returns the SQL and its bound parameters. Raises OEAError naming a bad value."""
    args: dict[str, Any] = {}

    def bind(kind: str) -> Callable[[object], Sql]:
        def bound(value: object) -> Sql:
            name = f"p{len(args) + 1}"
            args[name] = _CONVERT[kind](value)
            return Sql(f":{name}")
        return bound

    def finalize(value: object) -> Sql:
        if isinstance(value, Sql):
            return value
        raise OEAError(f"{str(value)[:80]!r} would be spliced into the SQL as it is: pass each parameter "
                       "through a type filter (| ident, | idents, | date, | number or | text)")

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=finalize)
    env.filters.update({"ident": ident, "idents": idents, **{kind: bind(kind) for kind in _CONVERT}})
    sql = env.from_string(template).render(values)
    return sql, args


def check_problems(template: str, params: dict[str, Any]) -> list[str]:
    """Problems with ``params`` for this check template, found without running it (templated values are skipped)."""
    env = jinja2.Environment()
    try:
        tree = env.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return [f"the check SQL is not a valid template: {exc}"]
    checkers: dict[str, Callable[[object], object]] = {"ident": ident, "idents": idents, **_CONVERT}
    problems: list[str] = []

    def given(name: str) -> object:
        value = params.get(name)
        templated = isinstance(value, str) and ("{{" in value or "{%" in value)
        return None if name not in params or templated else value

    for node in tree.find_all(nodes.Filter):
        if node.name in checkers:
            for name in _names(node.node):
                value = given(name)
                if value is not None:
                    try:
                        checkers[node.name](value)
                    except OEAError as exc:
                        problems.append(f"params.{name}: {exc}")
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "delta":
            for position, arg in enumerate(call.args[:3]):
                for name in _names(arg):
                    value = given(name)
                    if value is not None:
                        problems.extend(_lake_name(name, value, position))
    for output in tree.find_all(nodes.Output):
        for child in output.nodes:
            if not isinstance(child, nodes.TemplateData) and not _typed(child):
                problems.append(f"the check SQL renders {_source(child)} without a type filter "
                                "(| ident, | idents, | date, | number or | text)")
    return list(dict.fromkeys(problems))


def _names(node: nodes.Node | None) -> list[str]:
    """Parameter names whose value reaches ``node``, through ``| default(...)``."""
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Filter) and node.name in _PASS_THROUGH:
        return _names(node.node) + [n for arg in node.args for n in _names(arg)]
    return []


def _lake_name(name: str, value: object, position: int) -> list[str]:
    if position == 0:
        return [] if value in STAGES else [f"params.{name}: unknown stage {value!r}; the stages are {STAGES}"]
    try:
        check_name(cast("str", value), "source" if position == 1 else "table")  # it refuses a value that is not text
    except LakePathError as exc:
        return [f"params.{name}: {exc}"]
    return []


def _typed(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Filter):
        return node.name in TYPE_FILTERS
    if isinstance(node, nodes.Call):
        return isinstance(node.node, nodes.Name) and node.node.name == "delta"
    return isinstance(node, nodes.Name) and node.name == "output"  # the view of the step's output table


def _source(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return f"{{{{ {node.name} }}}}"
    if isinstance(node, nodes.Filter):
        return f"a value through | {node.name}"
    return "a value"


def read_checks(check: Checker, raw: Node, where: str, folder: str) -> list[Check]:
    """A step's ``checks:`` entries as the flow is loaded (each SQL file beside the flow, its params the
    types the SQL takes); problems go to ``check`` with their lines."""
    checks: list[Check] = []
    for index, item in enumerate(raw.get("checks") or []):
        if check.mapping(item, f"{where}.checks[{index}]", raw.line):
            checks.append(_check(check, item, f"{where}.checks[{index}]", folder))
    return checks


def _check(check: Checker, item: Node, where: str, folder: str) -> Check:
    check.keys(item, CHECK_KEYS, where)
    severity = item.get("severity", "error")
    if severity not in SEVERITIES:
        check.add(where, item.line, f"severity must be error or warn, not {severity!r}")
    sql = check.file(where, item.line, folder, str(item.get("sql") or ""))
    params = item.get("params") or {}
    if not isinstance(params, dict):
        check.add(f"{where}.params", item.line, "params must be a mapping")
        params = {}
    elif os.path.isfile(sql):
        with open(sql, encoding="utf-8") as handle:
            for problem in check_problems(handle.read(), params):
                check.add(where, item.line, f"{problem} (check SQL {sql})")
    allowed = item.get("max", 0)
    if isinstance(allowed, bool) or not isinstance(allowed, int) or allowed < 0:
        check.add(where, item.line, f"max must be a whole number of at least 0, not {allowed!r}")
        allowed = 0
    name = str(item.get("name") or os.path.splitext(os.path.basename(sql))[0])
    return Check(name, sql, severity, dict(params), allowed)
