"""What a flow file becomes: a ``Flow`` of ``Step``s with their dependencies expanded to step names.

Only ``spec.load_flow`` builds these; everything past it (the runner, the graph) reads them, never
the YAML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from graphlib import TopologicalSorter
from typing import Any

DEFAULT_TIMEOUT = 3600.0  # seconds a step may run, unless the flow or the step says otherwise


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class Check:
    name: str
    sql: str
    severity: str = "error"
    params: dict[str, Any] = field(default_factory=dict)
    max: int = 0


@dataclass(frozen=True)
class Secret:
    """Where a datasource's user or password is read when a step needs it: an environment variable or a
    Key Vault secret. It holds the reference, never the value."""

    env: str | None = None
    vault: str | None = None
    secret: str | None = None


@dataclass(frozen=True)
class Datasource:
    """A database sql steps read through Spark's JDBC reader (``type: jdbc``, the only type)."""

    name: str
    url: str
    user: Secret | None = None
    password: Secret | None = None
    driver: str | None = None
    type: str = "jdbc"


@dataclass
class Step:
    """One step, with its dependencies expanded to step names; ``kind`` names its ``steps.StepKind``."""

    name: str
    kind: str
    stage: str
    group: str
    target: str
    parameters: dict[str, Any]
    inputs: dict[str, Any]
    output: dict[str, Any] | None
    checks: list[Check]
    retry: Retry
    depends_on: set[str]
    line: int
    timeout: float = DEFAULT_TIMEOUT
    source: dict[str, Any] | None = None  # a sql step's `source` view: {datasource, table | query} or {type, table}
    pre_views: dict[str, str] = field(default_factory=dict)  # view name -> SELECT, registered in order


@dataclass(kw_only=True)
class PipelineSettings:
    """The pipeline's own settings, as its flow file gives them; steps inherit ``retry`` and ``timeout``."""

    name: str
    description: str
    retry: Retry
    notifications: dict[str, Any]
    checkpoint: bool
    batch_id: str | None
    max_parallel: int
    variables: dict[str, Any]
    timeout: float = DEFAULT_TIMEOUT
    datasources: dict[str, Datasource] = field(default_factory=dict)
    checkpoint_path: str | None = None  # where run logs live (see runlog.runs_dir); None: the lake's default


@dataclass(kw_only=True)
class Flow(PipelineSettings):
    """A flow file read: its pipeline's settings (those of its own file), its steps and its stages."""

    path: str
    steps: dict[str, Step]
    stages: list[str]

    @classmethod
    def of(cls, settings: PipelineSettings, *, path: str, steps: dict[str, Step], stages: list[str]) -> Flow:
        """The flow of ``settings`` (each setting as it is) with its ``steps`` and ``stages``."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(PipelineSettings)}, path=path, steps=steps,
                   stages=stages)

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def graph(self) -> dict[str, set[str]]:
        """Each step's name -> the steps it depends on (what ``graphlib.TopologicalSorter`` takes)."""
        return {name: step.depends_on for name, step in self.steps.items()}

    def downstream(self, name: str) -> set[str]:
        """``name`` and every step that depends on it, directly or not."""
        found = {name}
        for step in TopologicalSorter(self.graph()).static_order():  # a step comes after all it depends on
            if self.steps[step].depends_on & found:
                found.add(step)
        return found
