"""The flow file: a YAML pipeline of stages -> groups -> steps, checked before anything runs.

```yaml
pipeline:
  name: clever
  default_retry: {attempts: 2, delay: 30}
  default_timeout: 1h             # per step unless it gives its own `timeout` (default 1h)
  notifications: {on_failure: {webhook: https://...}, on_success: {command: "echo done"}}
  checkpoint: true
  max_parallel: 2
stages:
  - name: ingest
    groups:
      - name: clever
        steps:
          - name: ingest_clever
            kind: notebook            # notebook | sql | python
            timeout: 20m              # seconds, or a duration: 90s, 20m, 1h30m
            notebook: ../notebooks/clever/Clever_module_ingestion.ipynb
            parameters: {lake_path: "{{ base_path }}"}
            checks:
              - {sql: dq/not_null.sql, severity: error, params: {stage: stage2p, source: clever, ...}}
```

Dependencies: a step depends on the steps it names in ``depends_on`` (step, group or stage
names); in a group with ``parallel: false`` (the default) each step follows the one before;
in a stage with ``parallel: false`` each group follows the one before (default: groups run
side by side); a stage follows the stage before unless it gives its own ``depends_on``.
Every problem in the file is reported at once, each with its line, including check parameters
that are not the type their check SQL takes (see ``checks.py``).
"""

from __future__ import annotations

import importlib
import math
import os
import re
from dataclasses import dataclass, field

from ..errors import FlowError
from .checks import check_problems

STEP_KINDS = ("notebook", "sql", "python")
SEVERITIES = ("error", "warn")
DEFAULT_TIMEOUT = 3600.0  # seconds a step may run, unless the flow or the step says otherwise
_KEYS = {
    "top": {"pipeline", "stages"},
    "pipeline": {"name", "description", "default_retry", "notifications", "checkpoint", "batch_id", "max_parallel",
                 "variables", "default_timeout"},
    "stage": {"name", "description", "depends_on", "parallel", "groups"},
    "group": {"name", "description", "depends_on", "parallel", "steps"},
    "step": {"name", "description", "kind", "depends_on", "notebook", "sql", "callable", "parameters", "inputs",
             "output", "checks", "retry", "timeout"},
    "check": {"name", "sql", "severity", "params", "max"},
    "retry": {"attempts", "delay"},
    "notifications": {"on_failure", "on_success"},
    "notify": {"webhook", "command"},
    "output": {"stage", "source", "table", "mode"},
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


class _Map(dict):
    line = 0
    key_lines: dict


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        result = _Map(loader.construct_mapping(node, deep=True))
        result.line = node.start_mark.line + 1
        result.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class Check:
    name: str
    sql: str
    severity: str = "error"
    params: dict = field(default_factory=dict)
    max: int = 0


@dataclass
class Step:
    """One step, with its dependencies expanded to step names."""

    name: str
    kind: str
    stage: str
    group: str
    target: str
    parameters: dict
    inputs: dict
    output: dict | None
    checks: list[Check]
    retry: Retry
    depends_on: set[str]
    line: int
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Flow:
    name: str
    path: str
    description: str
    retry: Retry
    notifications: dict
    checkpoint: bool
    batch_id: str | None
    max_parallel: int
    variables: dict
    steps: dict[str, Step]
    stages: list[str]
    timeout: float = DEFAULT_TIMEOUT

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def downstream(self, name: str) -> set[str]:
        """``name`` and every step that depends on it, directly or not."""
        found, frontier = {name}, [name]
        while frontier:
            current = frontier.pop()
            for step in self.steps.values():
                if current in step.depends_on and step.name not in found:
                    found.add(step.name)
                    frontier.append(step.name)
        return found


class _Checker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def add(self, where: str, line: int, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {where}: {message}")

    def keys(self, node: dict, kind: str, where: str) -> None:
        for key in node:
            if key not in _KEYS[kind]:
                line = getattr(node, "key_lines", {}).get(key, getattr(node, "line", 0))
                self.add(where, line, f"unknown key {key!r} (known: {', '.join(sorted(_KEYS[kind]))})")

    def mapping(self, node, where: str, line: int) -> bool:
        if not isinstance(node, dict):
            self.add(where, line, f"expected a mapping, got {type(node).__name__}")
            return False
        return True

    def retry(self, node, where: str, line: int, default: Retry) -> Retry:
        if node is None:
            return default
        if not self.mapping(node, where, line):
            return default
        self.keys(node, "retry", where)
        attempts = node.get("attempts", default.attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            self.add(where, node.line, f"attempts must be a whole number of at least 1, not {attempts!r}")
            attempts = default.attempts
        delay = self.duration(node.get("delay", default.delay), where, node.line, default.delay, "delay", 0)
        return Retry(attempts, delay)

    def duration(self, value, where: str, line: int, default: float, what: str, minimum: float) -> float:
        """Seconds from a number or a duration string (``90s``, ``20m``, ``1h30m``)."""
        seconds = parse_duration(value)
        if seconds is None or seconds < minimum:
            self.add(where, line, f"{what} must be seconds (a number{' above' if minimum else ' of at least'} 0) "
                     f"or a duration such as 90s, 20m or 1h30m, not {value!r}")
            return default
        return seconds


def parse_duration(value) -> float | None:
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


def load_flow(path: str | os.PathLike) -> Flow:
    """Read and check a flow file; raises FlowError listing every problem with its line."""
    import yaml

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FlowError(f"flow file {path} does not exist", path=path)
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.load(handle, Loader=_loader())
    except yaml.YAMLError as exc:
        raise FlowError(f"flow file {path} is not valid YAML: {exc}", [str(exc)], path=path) from None
    check = _Checker(path)
    if not isinstance(doc, dict):
        raise FlowError(f"flow file {path} must be a mapping with 'pipeline' and 'stages'", path=path)
    check.keys(doc, "top", "top level")
    pipeline = doc.get("pipeline") or _Map()
    if check.mapping(pipeline, "pipeline", getattr(doc, "line", 1)):
        check.keys(pipeline, "pipeline", "pipeline")
    name = str(pipeline.get("name") or "")
    if not _NAME.match(name):
        check.add("pipeline.name", getattr(pipeline, "line", 1), f"give the pipeline a name (letters, digits, _ . -), "
                  f"not {name!r}")
    default_retry = check.retry(pipeline.get("default_retry"), "pipeline.default_retry", getattr(pipeline, "line", 1),
                                Retry())
    default_timeout = check.duration(pipeline.get("default_timeout", DEFAULT_TIMEOUT), "pipeline.default_timeout",
                                     getattr(pipeline, "key_lines", {}).get("default_timeout", 1), DEFAULT_TIMEOUT,
                                     "default_timeout", 1e-9)
    notifications = pipeline.get("notifications") or {}
    if check.mapping(notifications, "pipeline.notifications", getattr(pipeline, "line", 1)):
        check.keys(notifications, "notifications", "pipeline.notifications")
        for event, target in notifications.items():
            if check.mapping(target, f"pipeline.notifications.{event}", getattr(notifications, "line", 1)):
                check.keys(target, "notify", f"pipeline.notifications.{event}")
    max_parallel = pipeline.get("max_parallel", 2)
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        check.add("pipeline.max_parallel", getattr(pipeline, "line", 1), f"must be at least 1, not {max_parallel!r}")
        max_parallel = 1
    folder = os.path.dirname(os.path.abspath(path))
    steps: dict[str, Step] = {}
    members: dict[str, list[str]] = {}  # stage/group name -> its step names
    raw_deps: dict[str, list[tuple[str, int]]] = {}
    implicit: dict[str, set[str]] = {}
    stage_names: list[str] = []
    stages = doc.get("stages")
    if not isinstance(stages, list) or not stages:
        check.add("stages", getattr(doc, "line", 1), "give a list of stages, each with groups of steps")
        stages = []
    previous_stage: str | None = None
    stage_deps: dict[str, list[tuple[str, int]]] = {}
    for si, stage in enumerate(stages):
        where = f"stages[{si}]"
        if not check.mapping(stage, where, getattr(doc, "line", 1)):
            continue
        check.keys(stage, "stage", where)
        stage_name = str(stage.get("name") or f"stage{si + 1}")
        stage_names.append(stage_name)
        members[stage_name] = []
        stage_deps[stage_name] = ([(d, stage.line) for d in _names(stage.get("depends_on"))]
                                  if "depends_on" in stage else ([(previous_stage, stage.line)] if previous_stage else []))
        previous_stage = stage_name
        previous_group: str | None = None
        for gi, group in enumerate(stage.get("groups") or []):
            gwhere = f"{where}.groups[{gi}]"
            if not check.mapping(group, gwhere, stage.line):
                continue
            check.keys(group, "group", gwhere)
            group_name = str(group.get("name") or f"{stage_name}.group{gi + 1}")
            if group_name in members:
                check.add(gwhere, group.line, f"name {group_name!r} is used twice")
            members[group_name] = []
            group_deps = [(d, group.line) for d in _names(group.get("depends_on"))]
            if stage.get("parallel", True) is False and previous_group:
                group_deps.append((previous_group, group.line))
            previous_group = group_name
            previous_step: str | None = None
            for ti, raw in enumerate(group.get("steps") or []):
                twhere = f"{gwhere}.steps[{ti}]"
                if not check.mapping(raw, twhere, group.line):
                    continue
                step = _step(check, raw, twhere, stage_name, group_name, folder, default_retry, default_timeout)
                if step is None:
                    continue
                if step.name in steps or step.name in members:
                    check.add(twhere, raw.line, f"duplicate step name {step.name!r}")
                    continue
                steps[step.name] = step
                members[stage_name].append(step.name)
                members[group_name].append(step.name)
                dep_line = raw.key_lines.get("depends_on", raw.line)
                raw_deps[step.name] = [(d, dep_line) for d in _names(raw.get("depends_on"))] + group_deps + [
                    (f"@stage:{stage_name}", raw.line)]
                implicit[step.name] = set()
                if group.get("parallel", False) is not True and previous_step:
                    implicit[step.name].add(previous_step)
                previous_step = step.name
    # expand names to steps
    for step_name, deps in raw_deps.items():
        expanded = set(implicit[step_name])
        for dep, line in deps:
            if dep.startswith("@stage:"):
                for stage_dep, stage_line in stage_deps[dep[7:]]:
                    expanded |= _expand(check, stage_dep, stage_line, members, steps, f"stage {dep[7:]}")
                continue
            expanded |= _expand(check, dep, line, members, steps, f"step {step_name}")
        expanded.discard(step_name)
        steps[step_name].depends_on = expanded
    cycle = _find_cycle(steps)
    if cycle:
        check.add("depends_on", steps[cycle[0]].line, f"dependency cycle: {' -> '.join(cycle)}")
    if check.problems:
        raise FlowError(f"flow file {path} has {len(check.problems)} problem(s):\n  " + "\n  ".join(check.problems),
                        check.problems, path=path)
    return Flow(name, path, str(pipeline.get("description") or ""), default_retry, dict(notifications),
                bool(pipeline.get("checkpoint", True)), pipeline.get("batch_id"), max_parallel,
                dict(pipeline.get("variables") or {}), steps, stage_names, default_timeout)


def _names(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _expand(check: _Checker, name: str, line: int, members: dict, steps: dict, who: str) -> set[str]:
    if name in steps:
        return {name}
    if name in members:
        return set(members[name])
    check.add(f"{who}.depends_on", line, f"unknown dependency {name!r}: name a step, group or stage")
    return set()


def _step(check: _Checker, raw: dict, where: str, stage: str, group: str, folder: str,
          default_retry: Retry, default_timeout: float) -> Step | None:
    check.keys(raw, "step", where)
    name = str(raw.get("name") or "")
    if not _NAME.match(name):
        check.add(where, raw.line, f"give the step a name (letters, digits, _ . -), not {name!r}")
        return None
    where = f"step {name}"
    kind = raw.get("kind")
    if kind not in STEP_KINDS:
        check.add(where, raw.key_lines.get("kind", raw.line), f"kind must be one of {', '.join(STEP_KINDS)}, "
                  f"not {kind!r}")
        return None
    target_key = {"notebook": "notebook", "sql": "sql", "python": "callable"}[kind]
    target = raw.get(target_key)
    if not isinstance(target, str) or not target:
        check.add(where, raw.line, f"a {kind} step needs '{target_key}'")
        return None
    if kind == "python":
        _check_callable(check, where, raw.key_lines.get("callable", raw.line), target)
    else:
        target = _check_file(check, where, raw.key_lines.get(target_key, raw.line), folder, target)
    checks = []
    for ci, item in enumerate(raw.get("checks") or []):
        cwhere = f"{where}.checks[{ci}]"
        if not check.mapping(item, cwhere, raw.line):
            continue
        check.keys(item, "check", cwhere)
        severity = item.get("severity", "error")
        if severity not in SEVERITIES:
            check.add(cwhere, item.line, f"severity must be error or warn, not {severity!r}")
        sql = _check_file(check, cwhere, item.line, folder, str(item.get("sql") or ""))
        params = item.get("params") or {}
        if not isinstance(params, dict):
            check.add(f"{cwhere}.params", item.line, "params must be a mapping")
            params = {}
        elif os.path.isfile(sql):
            with open(sql, encoding="utf-8") as handle:
                for problem in check_problems(handle.read(), params):
                    check.add(cwhere, item.line, f"{problem} (check SQL {sql})")
        allowed = item.get("max", 0)
        if isinstance(allowed, bool) or not isinstance(allowed, int) or allowed < 0:
            check.add(cwhere, item.line, f"max must be a whole number of at least 0, not {allowed!r}")
            allowed = 0
        checks.append(Check(str(item.get("name") or f"{os.path.splitext(os.path.basename(sql))[0]}"),
                            sql, severity, dict(params), allowed))
    output = raw.get("output")
    if output is not None and check.mapping(output, f"{where}.output", raw.line):
        check.keys(output, "output", f"{where}.output")
        if not {"stage", "source", "table"} <= set(output):
            check.add(f"{where}.output", output.line, "give stage, source and table")
    if kind == "sql" and output is None:
        check.add(where, raw.line, "a sql step needs 'output' (stage, source, table) for the Delta table it writes")
    inputs = raw.get("inputs") or {}
    if not isinstance(inputs, dict):
        check.add(f"{where}.inputs", raw.line, "inputs must map view names to stage/source/table paths")
        inputs = {}
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        check.add(f"{where}.parameters", raw.line, "parameters must be a mapping")
        parameters = {}
    retry = check.retry(raw.get("retry"), f"{where}.retry", raw.line, default_retry)
    timeout = check.duration(raw.get("timeout", default_timeout), f"{where}.timeout",
                             raw.key_lines.get("timeout", raw.line), default_timeout, "timeout", 1e-9)
    return Step(name, kind, stage, group, target, dict(parameters), dict(inputs),
                dict(output) if isinstance(output, dict) else None, checks, retry, set(), raw.line, timeout)


def _check_file(check: _Checker, where: str, line: int, folder: str, relative: str) -> str:
    if "{{" in relative:
        return relative  # rendered at run time
    path = relative if os.path.isabs(relative) else os.path.normpath(os.path.join(folder, relative))
    if not relative or not os.path.isfile(path):
        check.add(where, line, f"file {relative!r} does not exist (looked for {path})")
    return path


def _check_callable(check: _Checker, where: str, line: int, target: str) -> None:
    module, _, function = target.partition(":")
    if not module or not function:
        check.add(where, line, f"callable must be 'package.module:function', not {target!r}")
        return
    try:
        found = getattr(importlib.import_module(module), function, None)
    except ImportError as exc:
        check.add(where, line, f"cannot import {module!r}: {exc}")
        return
    if not callable(found):
        check.add(where, line, f"{module} has no function {function!r}")


def _find_cycle(steps: dict[str, Step]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(steps[name].depends_on):
            if dep not in steps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in steps:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None
