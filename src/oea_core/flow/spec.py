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
            kind: notebook            # a registered step kind: notebook | sql | python (see steps.py)
            timeout: 20m              # seconds, or a duration: 90s, 20m, 1h30m
            notebook: ../notebooks/clever/Clever_module_ingestion.ipynb
            parameters: {lake_path: "{{ base_path }}"}
            checks:
              - {sql: dq/not_null.sql, severity: error, params: {stage: stage2p, source: clever, ...}}
```

Dependencies: a step depends on the steps it names in ``depends_on`` (step, group or stage
names, so no two of these may share a name); in a group with ``parallel: false`` (the
default) each step follows the one before; in a stage with ``parallel: false`` each group
follows the one before (default: groups run side by side); a stage follows the stage before
unless it gives its own ``depends_on``.
A stage list item ``{include: other_flow.yaml}`` puts that file's stages there (see ``_include``).
Every problem in the file is reported at once, each with its line, including check parameters
that are not the type their check SQL takes. Each level (pipeline, stage, group, step) is read by
a function of its own below; a step's checks by ``checks.read_checks``. The reference format's
spellings are made today's keys first (see ``reference.py``); its datasources are read by
``datasources.py``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from ..errors import FlowError
from .checks import SEVERITIES, read_checks
from .datasources import read_datasources
from .model import DEFAULT_TIMEOUT, Flow, PipelineSettings, Retry, Step
from .problems import Checker, Node, yaml_loader
from .reference import (
    checkpoint,
    normalize_pipeline,
    normalize_step,
    normalize_top,
    read_pre_views,
    read_source,
)
from .steps import step_kinds

__all__ = ["DEFAULT_TIMEOUT", "SEVERITIES", "load_flow"]

_KEYS = {
    "top": {"pipeline", "stages"},
    "pipeline": {"name", "description", "default_retry", "notifications", "checkpoint", "batch_id", "max_parallel",
                 "variables", "default_timeout", "datasources"},
    "include": {"include"},
    "stage": {"name", "description", "depends_on", "parallel", "groups"},
    "group": {"name", "description", "depends_on", "parallel", "steps"},
    "step": {"name", "description", "kind", "depends_on", "parameters", "inputs", "output", "checks", "retry",
             "timeout", "source", "pre_views"},  # and each registered kind's target key
    "notifications": {"on_failure", "on_success"},
    "notify": {"webhook", "teams", "command"},
    "output": {"stage", "source", "table", "mode"},
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
Named = list[tuple[str, int]]  # dependency names as written, each with its line


@dataclass
class _Graph:
    """The steps as they are read, with the names their dependencies use until every name is known."""

    folder: str
    pipeline: PipelineSettings
    steps: dict[str, Step] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    names: dict[str, tuple[str, int]] = field(default_factory=dict)  # stage, group or step name -> what, line
    members: dict[str, list[str]] = field(default_factory=dict)  # stage or group name -> its steps
    stage_deps: dict[str, Named] = field(default_factory=dict)
    group_deps: dict[str, Named] = field(default_factory=dict)
    step_deps: dict[str, Named] = field(default_factory=dict)
    previous: dict[str, set[str]] = field(default_factory=dict)  # step -> the step before it in its group


def load_flow(path: str | os.PathLike[str]) -> Flow:
    """Read and check a flow file; raises FlowError listing every problem with its line."""
    path = os.fspath(path)
    doc = _read(path)
    check = Checker(path)
    normalize_top(check, doc)
    check.keys(doc, _KEYS["top"], "top level")
    graph = _Graph(os.path.dirname(os.path.abspath(path)), _pipeline(check, doc))
    stages = doc.get("stages")
    if not isinstance(stages, list) or not stages:
        check.add("stages", doc.line, "give a list of stages, each with groups of steps")
        stages = []
    _stages(check, graph, stages, doc.line, [os.path.abspath(path)])
    _link(check, graph)
    if check.problems:
        raise FlowError(f"flow file {path} has {len(check.problems)} problem(s):\n  " + "\n  ".join(check.problems),
                        check.problems, path=path)
    return Flow.of(graph.pipeline, path=path, steps=graph.steps, stages=graph.stages)


def _stages(check: Checker, graph: _Graph, stages: list[Any], line: int, files: list[str]) -> None:
    """Read each stage, or the stages of the flow file an ``{include: FILE}`` item names (``files``: the
    files being read, outermost first, so that an include cycle is a problem)."""
    for index, stage in enumerate(stages):
        if isinstance(stage, Node) and "include" in stage:
            _include(check, graph, stage, f"stages[{index}]", files)
        else:
            _stage(check, graph, index, stage, line)


def _include(check: Checker, graph: _Graph, item: Node, where: str, files: list[str]) -> None:
    """The stages of another flow file, in place of ``item``: they follow the stage before and are read
    with that file's folder and pipeline defaults (retry, timeout, datasources); its variables are added
    where this flow does not set them. Its notifications and checkpoint are the including flow's."""
    check.keys(item, _KEYS["include"], where)
    line, name = item.line_of("include"), item.get("include")
    if not isinstance(name, str) or not name:
        check.add(f"{where}.include", line, "give the path of a flow file, relative to this one")
        return
    path = os.path.abspath(os.path.join(graph.folder, name))
    if path in files:
        check.add(f"{where}.include", line, f"{name} includes itself (through {' -> '.join(files)}); remove the cycle")
        return
    try:
        doc = _read(path)
    except FlowError as exc:
        check.add(f"{where}.include", line, str(exc))
        return
    inner = Checker(path)
    normalize_top(inner, doc)
    inner.keys(doc, _KEYS["top"], "top level")
    pipeline = _pipeline(inner, doc)
    outer = graph.pipeline
    for key, value in pipeline.variables.items():
        outer.variables.setdefault(key, value)
    for key, source in pipeline.datasources.items():
        outer.datasources.setdefault(key, source)
    graph.folder, graph.pipeline = os.path.dirname(path), pipeline
    try:
        stages = doc.get("stages")
        if not isinstance(stages, list) or not stages:
            inner.add("stages", doc.line, "give a list of stages, each with groups of steps")
        else:
            _stages(inner, graph, stages, doc.line, [*files, path])
    finally:
        graph.folder, graph.pipeline = os.path.dirname(files[-1]), outer
    check.problems.extend(inner.problems)


def _read(path: str) -> Node:
    import yaml

    if not os.path.exists(path):
        raise FlowError(f"flow file {path} does not exist", path=path)
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.load(handle, Loader=yaml_loader())  # a SafeLoader that records lines
    except yaml.YAMLError as exc:
        raise FlowError(f"flow file {path} is not valid YAML: {exc}", [str(exc)], path=path) from None
    if not isinstance(doc, Node):
        raise FlowError(f"flow file {path} must be a mapping with 'pipeline' and 'stages'", path=path)
    return doc


def _pipeline(check: Checker, doc: Node) -> PipelineSettings:
    pipeline = doc.get("pipeline") or Node(line=doc.line)
    if check.mapping(pipeline, "pipeline", doc.line):
        normalize_pipeline(check, pipeline)
        check.keys(pipeline, _KEYS["pipeline"], "pipeline")
    else:
        pipeline = Node(line=doc.line)
    name = str(pipeline.get("name") or "")
    if not _NAME.match(name):
        check.add("pipeline.name", pipeline.line, f"give the pipeline a name (letters, digits, _ . -), not {name!r}")
    retry = check.retry(pipeline.get("default_retry"), "pipeline.default_retry", pipeline.line, Retry())
    timeout = check.duration(pipeline.get("default_timeout", DEFAULT_TIMEOUT), "pipeline.default_timeout",
                             pipeline.line_of("default_timeout"), DEFAULT_TIMEOUT, "default_timeout", 1e-9)
    max_parallel = pipeline.get("max_parallel", 2)
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        check.add("pipeline.max_parallel", pipeline.line, f"must be at least 1, not {max_parallel!r}")
        max_parallel = 1
    resume, runs = checkpoint(check, pipeline)
    return PipelineSettings(
        name=name, description=str(pipeline.get("description") or ""), retry=retry, timeout=timeout,
        notifications=_notifications(check, pipeline), checkpoint=resume, batch_id=pipeline.get("batch_id"),
        max_parallel=max_parallel, variables=_mapping(check, pipeline, "variables", "pipeline", "variables must be a mapping"),
        datasources=read_datasources(check, pipeline.get("datasources"), pipeline.line_of("datasources")),
        checkpoint_path=runs)


def _notifications(check: Checker, pipeline: Node) -> dict[str, Any]:
    notifications = pipeline.get("notifications") or Node(line=pipeline.line)
    if not check.mapping(notifications, "pipeline.notifications", pipeline.line):
        return {}
    check.keys(notifications, _KEYS["notifications"], "pipeline.notifications")
    for event, target in notifications.items():
        if check.mapping(target, f"pipeline.notifications.{event}", notifications.line):
            check.keys(target, _KEYS["notify"], f"pipeline.notifications.{event}")
    return dict(notifications)


def _stage(check: Checker, graph: _Graph, index: int, stage: object, line: int) -> None:
    where = f"stages[{index}]"
    if not check.mapping(stage, where, line):
        return
    check.keys(stage, _KEYS["stage"], where)
    name = str(stage.get("name") or f"stage{index + 1}")
    _claim(check, graph, "stage", name, where, stage.line_of("name"))
    before = graph.stages[-1] if graph.stages else None
    graph.stages.append(name)
    graph.members.setdefault(name, [])  # a second use of the name is a problem; its steps join the first's
    if "depends_on" in stage:
        graph.stage_deps.setdefault(name, [(d, stage.line) for d in _names(stage.get("depends_on"))])
    else:
        graph.stage_deps.setdefault(name, [(before, stage.line)] if before else [])
    previous: str | None = None
    for group_index, group in enumerate(stage.get("groups") or []):
        after = previous if stage.get("parallel", True) is False else None
        previous = _group(check, graph, stage, f"{where}.groups[{group_index}]", group,
                          f"{name}.group{group_index + 1}", after) or previous


def _group(check: Checker, graph: _Graph, stage: Node, where: str, group: object, default_name: str,
           after: str | None) -> str | None:
    """Read a group and its steps (``after``: the group it follows); returns its name, None if it is not a mapping."""
    if not check.mapping(group, where, stage.line):
        return None
    check.keys(group, _KEYS["group"], where)
    stage_name = graph.stages[-1]
    name = str(group.get("name") or default_name)
    _claim(check, graph, "group", name, where, group.line_of("name"))
    graph.members.setdefault(name, [])
    deps = [(d, group.line) for d in _names(group.get("depends_on"))]
    graph.group_deps.setdefault(name, deps + ([(after, group.line)] if after else []))
    previous: str | None = None
    for index, raw in enumerate(group.get("steps") or []):
        step_where = f"{where}.steps[{index}]"
        if not check.mapping(raw, step_where, group.line):
            continue
        step = _step(check, raw, step_where, stage_name, name, graph)
        if step is None:
            continue
        graph.steps[step.name] = step
        graph.members[stage_name].append(step.name)
        graph.members[name].append(step.name)
        graph.step_deps[step.name] = [(d, raw.line_of("depends_on")) for d in _names(raw.get("depends_on"))]
        sequential = group.get("parallel", False) is not True
        graph.previous[step.name] = {previous} if sequential and previous else set()
        previous = step.name
    return name


def _step(check: Checker, raw: Node, where: str, stage: str, group: str, graph: _Graph) -> Step | None:
    """The step in ``raw``; None when it cannot be one (no name, a name in use, an unknown kind, no target)."""
    normalize_step(check, raw, f"step {raw['name']}" if isinstance(raw.get("name"), str) else where)
    check.keys(raw, _KEYS["step"] | step_kinds.target_keys(), where)
    name = str(raw.get("name") or "")
    if not _NAME.match(name):
        check.add(where, raw.line, f"give the step a name (letters, digits, _ . -), not {name!r}")
        return None
    unique = _claim(check, graph, "step", name, where, raw.line_of("name"))
    kind, who = raw.get("kind"), f"step {name}"
    if not isinstance(kind, str) or kind not in step_kinds:
        check.add(who, raw.line_of("kind"), f"kind must be one of {', '.join(step_kinds.names())}, not {kind!r}")
        return None
    target = step_kinds.get(kind).validate(check, who, raw, graph.folder)
    if target is None:
        return None
    pipeline = graph.pipeline
    step = Step(name, kind, stage, group, target,
                parameters=_mapping(check, raw, "parameters", who, "parameters must be a mapping"),
                inputs=_mapping(check, raw, "inputs", who, "inputs must map view names to stage/source/table paths"),
                output=_output(check, raw, who), checks=read_checks(check, raw, who, graph.folder),
                retry=check.retry(raw.get("retry"), f"{who}.retry", raw.line, pipeline.retry), depends_on=set(),
                line=raw.line, timeout=check.duration(raw.get("timeout", pipeline.timeout), f"{who}.timeout",
                                                      raw.line_of("timeout"), pipeline.timeout, "timeout", 1e-9),
                source=read_source(check, raw, who, pipeline.datasources), pre_views=read_pre_views(check, raw, who))
    return step if unique else None  # read all the same, so that all its problems are reported


def _claim(check: Checker, graph: _Graph, what: str, name: str, where: str, line: int) -> bool:
    """Record ``name`` as the name of a ``what`` (stage, group or step) at ``line``; a problem if it is taken."""
    if name in graph.names:
        other, first = graph.names[name]
        check.add(where, line, f"duplicate {what} name {name!r}, already the name of the {other} at line {first}; "
                  "give each stage, group and step a name of its own (depends_on refers to them by name)")
        return False
    graph.names[name] = (what, line)
    return True


def _mapping(check: Checker, raw: Node, key: str, where: str, message: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        check.add(f"{where}.{key}", raw.line, message)
        return {}
    return dict(value)


def _output(check: Checker, raw: Node, where: str) -> dict[str, Any] | None:
    output = raw.get("output")
    if output is None or not check.mapping(output, f"{where}.output", raw.line):
        return None
    check.keys(output, _KEYS["output"], f"{where}.output")
    if not {"stage", "source", "table"} <= set(output):
        check.add(f"{where}.output", output.line, "give stage, source and table")
    return dict(output)


def _link(check: Checker, graph: _Graph) -> None:
    """Expand every dependency name to steps, then look for a cycle."""
    stages = {name: _expand(check, deps, graph, f"stage {name}") for name, deps in graph.stage_deps.items()}
    groups = {name: _expand(check, deps, graph, f"group {name}") for name, deps in graph.group_deps.items()}
    for name, step in graph.steps.items():
        own = _expand(check, graph.step_deps[name], graph, f"step {name}")
        step.depends_on = (graph.previous[name] | own | groups[step.group] | stages[step.stage]) - {name}
    cycle = _cycle(graph.steps)
    if cycle:
        check.add("depends_on", graph.steps[cycle[0]].line, f"dependency cycle: {' -> '.join(cycle)}")


def _expand(check: Checker, deps: Named, graph: _Graph, who: str) -> set[str]:
    found: set[str] = set()
    for name, line in deps:
        if name in graph.steps:
            found.add(name)
        elif name in graph.members:
            found |= set(graph.members[name])
        else:
            check.add(f"{who}.depends_on", line, f"unknown dependency {name!r}: name a step, group or stage")
    return found


def _cycle(steps: dict[str, Step]) -> list[str] | None:
    """A dependency cycle, each step followed by one it depends on, or None."""
    try:
        TopologicalSorter({name: step.depends_on for name, step in steps.items()}).prepare()
    except CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists each step before the one that depends on it
    return None


def _names(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]
