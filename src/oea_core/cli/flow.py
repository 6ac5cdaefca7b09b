"""``oea flow``: validate, run, graph and status of YAML pipelines."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..flow import FlowRun, RunLog, load_flow, runs_dir
from ..flow.graph import draw
from ..lake.cloud import pull_runs
from ..lake.run_summary import summarize
from ..sources import sources
from .common import command, wait_option

if TYPE_CHECKING:
    import argparse

    from ..lake.paths import LakePaths


def _flow_validate(lake: LakePaths, args: argparse.Namespace) -> int:
    flow = load_flow(args.file)
    print(f"{args.file}: ok: {len(flow.steps)} steps in {len(flow.stages)} stages")
    return 0


def _flow_run(lake: LakePaths, args: argparse.Namespace) -> int:
    started = time.time()
    flow = load_flow(args.file)
    run = FlowRun(flow, lake, batch_id=args.batch_id, max_parallel=args.max_parallel)
    summary = run.run(from_step=args.from_step, only=args.only)
    counts: dict[str, int] = {}
    for step in summary["steps"].values():
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    print(f"flow {flow.name} batch {run.batch_id}: {summary['status']} ("
          + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"); run log: {run.folder}/run_log.json")
    print(f"flow {flow.name}: {summarize(lake, sources.names(), started).line()}")
    return 0


def _flow_graph(lake: LakePaths, args: argparse.Namespace) -> int:
    flow = load_flow(args.file)
    if not args.run_log:
        pull_runs(lake)  # a cloud lake: the runs logged elsewhere too
    run_log = RunLog.load(args.run_log) if args.run_log else RunLog.latest(runs_dir(lake, flow.checkpoint_path), flow.name)
    for path in draw(flow, args.out, run_log):
        print(path)
    return 0


def _flow_status(lake: LakePaths, args: argparse.Namespace) -> int:
    pull_runs(lake)  # a cloud lake: the runs logged elsewhere too
    folder = runs_dir(lake)
    logs = RunLog.read_all(folder)
    if not logs:
        print(f"no flow runs in {folder}")
    for run_log in logs[: args.limit]:
        for line in run_log.status_lines():
            print(line)
    return 0


def flow_commands(commands: argparse._SubParsersAction) -> None:
    flow = commands.add_parser("flow", help="YAML pipelines: validate, run, graph, status")
    flow_commands = flow.add_subparsers(dest="flow_command", required=True, metavar="FLOW_COMMAND")
    command(flow_commands, "validate", _flow_validate,
            help="check a flow file; every problem with its line").add_argument("file")
    run = command(flow_commands, "run", _flow_run, help="run a flow (resumes a batch id that ran before)")
    run.add_argument("file")
    run.add_argument("--batch-id", help="batch id for every step (default: the flow's, else a UTC timestamp)")
    run.add_argument("--from", dest="from_step", metavar="STEP", help="rerun STEP and everything after it")
    run.add_argument("--only", metavar="STEP", help="run only STEP")
    run.add_argument("--max-parallel", type=int, help="steps at once (default: the flow's max_parallel)")
    wait_option(run)
    graph = command(flow_commands, "graph", _flow_graph, help="draw the DAG to SVG and PNG (Graphviz)")
    graph.add_argument("file")
    graph.add_argument("--run-log", help="colour steps by this run log (default: the last run of this flow)")
    graph.add_argument("--out", default="flow_graphs", help="output folder (default %(default)s)")
    status = command(flow_commands, "status", _flow_status, help="the last runs in this lake")
    status.add_argument("--limit", type=int, default=10)
