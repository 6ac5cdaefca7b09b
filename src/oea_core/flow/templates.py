"""What a flow's ``{{ templates }}`` see, and rendering them (Jinja with ``StrictUndefined``).

A step's context is the run's values (``base_path``, ``batch_id``, ``pipeline.name``,
``stage.name``, ``group.name``, ``name``, ``inputs``, ``run_dir``, ``flow_dir``), then the flow's
``variables``, each rendered with the run's values; a run's value wins over a variable of the same
name. A variable that is not defined is never rendered as empty text: it is a FlowError naming the
step (or the flow variable) and the variable, and listing the known ones.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import jinja2

from ..errors import FlowError

if TYPE_CHECKING:
    from ..lake.paths import LakePaths
    from .model import Flow, Step


class Templates:
    """Renders the templates of one run: batch ``batch_id`` of ``flow`` over ``lake``, logged in ``run_dir``."""

    def __init__(self, flow: Flow, lake: LakePaths, batch_id: str, run_dir: str) -> None:
        self.flow = flow
        self.lake = lake
        self.batch_id = batch_id
        self.run_dir = run_dir
        self._env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)

    def context(self, step: Step) -> dict[str, Any]:
        """What templates see: the run's values, then the flow's ``variables`` (rendered with those values).

        Raises FlowError naming a flow variable that uses an undefined one."""
        base = {"base_path": self.lake.setting, "batch_id": self.batch_id,
                "pipeline": {"name": self.flow.name}, "stage": {"name": step.stage},
                "group": {"name": step.group}, "name": step.name, "inputs": sorted(step.inputs),
                "run_dir": self.run_dir, "flow_dir": self.flow.folder}
        variables: dict[str, Any] = {}
        for key, value in self.flow.variables.items():
            try:
                variables[key] = self._env.from_string(value).render(base) if isinstance(value, str) else value
            except jinja2.UndefinedError as exc:
                raise FlowError(f"flow variable {key!r}: {exc}; variables may use {', '.join(sorted(base))}") from None
        return {**variables, **base}

    def render(self, step: Step, value: Any, extra: dict[str, Any] | None = None) -> Any:
        """``value`` with every ``{{ template }}`` rendered (in dicts and lists too), ``extra`` added to the context.

        Raises FlowError naming the step and the undefined variable."""
        if isinstance(value, dict):
            return {k: self.render(step, v, extra) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(step, v, extra) for v in value]
        if not isinstance(value, str) or "{{" not in value and "{%" not in value:
            return value  # the context is built only for a value that needs it
        context = {**self.context(step), **(extra or {})}
        try:
            return self._env.from_string(value).render(context)
        except jinja2.UndefinedError as exc:
            match = re.search(r"'([^']+)' is undefined", str(exc))
            variable = match.group(1) if match else str(exc)
            raise FlowError(f"step {step.name}: template variable {variable!r} is not defined (in {value[:80]!r}); "
                            f"known: {', '.join(sorted(context))}") from None
