"""Drawing a flow's DAG with Graphviz, steps coloured by a run's status (a ``RunLog``, or None for no colours).

The run's status and its steps' are shown as ``oea flow status`` shows them: a run whose runner is
gone is ``died``, and its steps that were running are ``interrupted`` (see ``RunLog.state``).
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from ..errors import OEAError
from ..extras import require

if TYPE_CHECKING:
    from .model import Flow
    from .runlog import RunLog

COLOURS = {"success": "#8fd19e", "cached": "#c9e7cf", "failed": "#f4a3a3", "skipped": "#d9d9d9",
           "running": "#ffe08a", "pending": "#ffffff", "not_selected": "#ffffff", "interrupted": "#f7c59f"}


def flow_dot(flow: Flow, run: RunLog | None = None) -> Any:
    """The flow as a ``graphviz.Digraph``: a cluster per stage, a node per step, edges for dependencies."""
    graphviz = require("graphviz")
    statuses = run.step_statuses() if run is not None else {}
    title = flow.name + (f"  (batch {run.doc.get('batch_id')}: {run.state})" if run is not None else "")
    dot = graphviz.Digraph(flow.name, graph_attr={"rankdir": "LR", "label": title, "labelloc": "t",
                                                   "fontname": "Helvetica"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica"})
    for stage in flow.stages:
        with dot.subgraph(name=f"cluster_{stage}") as sub:
            sub.attr(label=stage, style="dashed")
            for step in (s for s in flow.steps.values() if s.stage == stage):
                status = statuses.get(step.name, "pending")
                label = f"{step.name}\n{step.kind}" + (f"\n{status}" if run is not None else "")
                sub.node(step.name, label=label, fillcolor=COLOURS.get(status, "#ffffff"))
    for step in flow.steps.values():
        for dep in sorted(step.depends_on):
            dot.edge(dep, step.name)
    return dot


def draw(flow: Flow, out_dir: str, run: RunLog | None = None) -> list[str]:
    """Write ``<out_dir>/<flow>.svg`` and ``.png``, coloured by ``run`` when given; returns their paths.

    Raises OEAError when Graphviz's ``dot`` is not installed.
    """
    if shutil.which("dot") is None:
        raise OEAError("Graphviz's `dot` is not installed: apt-get install graphviz (scripts/setup.sh does it)")
    os.makedirs(out_dir, exist_ok=True)
    dot = flow_dot(flow, run)
    base = os.path.join(out_dir, flow.name)
    return [str(dot.render(base, format=fmt, cleanup=True)) for fmt in ("svg", "png")]
