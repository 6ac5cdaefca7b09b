"""Running a step's data-quality checks once it has written: each check a count of offending rows.

A check's SQL file is rendered by ``checks.render_check`` (its parameters bound or quoted by
type) with the step's template context, its rendered ``params``, ``delta(stage, source, table)``
and, for a step with an ``output``, ``output``: the view of the table it wrote. Each check runs in
the run's Spark session within what is left of the step's timeout (``StepRun.spark_deadline``).
Only the count is kept: offending rows may hold identifiers, which do not belong in a run log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import jinja2

from ..errors import FlowError, OEAError
from .checks import Sql, render_check

if TYPE_CHECKING:
    from .context import StepRun
    from .model import Check, Step

log = logging.getLogger("oea")


def run_checks(run: StepRun, step: Step, deadline: float) -> list[dict[str, Any]]:
    """Run ``step``'s checks in order, each before ``deadline`` (``time.monotonic()``); returns their results.

    A result is ``{name, severity, value, max, passed}``. Raises FlowError for a check that cannot be
    rendered, StepTimeout when the deadline passes."""
    results = []
    for check in step.checks:
        with run.spark_deadline(step, deadline):
            results.append(_check(run, step, check))
        if not results[-1]["passed"]:
            level = logging.ERROR if check.severity == "error" else logging.WARNING
            log.log(level, "%s: check %s (%s) found %s offending", step.name, check.name, check.severity,
                    results[-1]["value"])
    return results


def _check(run: StepRun, step: Step, check: Check) -> dict[str, Any]:
    params = run.render(step, check.params)
    values = {**run.context(step), **params, "params": params,
              "delta": lambda *names: Sql(run.lake_view(*names))}
    if step.output:
        output = run.render(step, step.output)
        values["output"] = Sql(run.lake_view(output["stage"], output["source"], output["table"]))
    path = run.render(step, check.sql)
    with open(path, encoding="utf-8") as handle:
        template = handle.read()
    try:
        text, args = render_check(template, values)
    except (OEAError, jinja2.UndefinedError) as exc:
        raise FlowError(f"step {step.name}: check {check.name} ({path}): {exc}") from exc
    frame = run.spark.sql(text, args=args or None)
    if frame.columns == ["count"]:
        value = int(frame.collect()[0][0] or 0)
    else:
        value = frame.count()
    return {"name": check.name, "severity": check.severity, "value": value, "max": check.max,
            "passed": value <= check.max}
