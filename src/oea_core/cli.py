"""The ``oea`` command: ``oea [--lake PATH] <command> ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .delta import ENGINE_SETTING, LOCAL_DEFAULT, engines
from .errors import OEAError
from .ingest import DEFAULT_MAX_REJECT_SHARE
from .lock import WAIT_SETTING
from .paths import LakePaths
from .salt import redact
from .sources import sources

log = logging.getLogger("oea")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oea", description="Open, tested OEA-style education data lake.")
    parser.add_argument("--lake", help="lake folder or abfss:// URL (default: $OEA_LAKE, then ./lake)")
    parser.add_argument("--engine", choices=engines.names(),
                        help="Delta engine (default: $OEA_ENGINE, else spark-delta on Synapse/Databricks, else "
                             f"{LOCAL_DEFAULT} locally)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    land = commands.add_parser("land", help="copy a source export into stage1np")
    land.add_argument("module", help=f"source module ({', '.join(sources.names())})")
    land.add_argument("src", nargs="?", help="folder holding the export")
    land.add_argument("--batch-id", help="batch id (default: a UTC timestamp)")
    land.add_argument("--api", metavar="URL", help="edfi: land from this Ed-Fi ODS/API (credentials from "
                      "$OEA_EDFI_CLIENT_ID and $OEA_EDFI_CLIENT_SECRET)")
    land.add_argument("--resources", help="edfi --api: comma-separated resources (default: all the module supports)")
    land.add_argument("--page-size", type=int, default=500, help="edfi --api: records per page (default %(default)s)")
    _wait_option(land)

    ingest = commands.add_parser("ingest", help="stage1np -> stage2np/stage2p, new batches only")
    ingest.add_argument("module")
    ingest.add_argument("--max-reject-share", type=float,
                        default=float(os.environ.get("OEA_MAX_REJECT_SHARE", DEFAULT_MAX_REJECT_SHARE)),
                        help="fail when more than this share of rows cannot be read (default %(default)s)")
    _wait_option(ingest)

    views = commands.add_parser("views", help="write the serverless SQL views script to sql_views/")
    views.add_argument("module")
    _view_options(views)

    run = commands.add_parser("run", help="run the module notebooks with papermill, then write the SQL views")
    run.add_argument("--module", action="append", dest="modules",
                     help=f"module to run, repeatable (default: all: {', '.join(sources.names())})")
    run.add_argument("--sample", help="export folder to land (default: test_data/<module>)")
    run.add_argument("--notebooks", help="notebooks folder (default: ./notebooks)")
    _wait_option(run)
    _view_options(run)

    sql = commands.add_parser("sql", help="query the SQL views over the local lake (DuckDB), as Power BI would")
    sql.add_argument("query", nargs="?", help="a SELECT over views: NAME, or <database>.dbo.NAME")
    sql.add_argument("--view", help="show this view (SELECT * FROM it)")
    sql.add_argument("--list", action="store_true", help="list the views")
    sql.add_argument("--csv", action="store_true", help="write every row as CSV to stdout")
    sql.add_argument("--max-rows", type=int, default=40, help="rows shown in the terminal (default %(default)s)")
    sql.add_argument("--module", action="append", dest="modules", help="only this module's views (repeatable)")
    sql.add_argument("--workspace", default=os.environ.get("OEA_WORKSPACE", "dev"),
                     help="workspace name in database names (default %(default)s)")

    lake_parser = commands.add_parser("lake", help="the lake itself: check it for leftovers of interrupted runs")
    lake_commands = lake_parser.add_subparsers(dest="lake_command", required=True, metavar="LAKE_COMMAND")
    check = lake_commands.add_parser("check", help="list staging folders, uncommitted data files and half-landed "
                                     "batches that interrupted runs left")
    check.add_argument("--repair", action="store_true", help="remove them (holding each source's lock)")
    check.add_argument("--module", action="append", dest="modules", help="only this module (repeatable)")
    _wait_option(check)

    synapse = commands.add_parser("synapse", help="Azure Synapse: pipeline templates, the oea_core wheel")
    synapse_commands = synapse.add_subparsers(dest="synapse_command", required=True, metavar="SYNAPSE_COMMAND")
    template = synapse_commands.add_parser("template", help="write pipeline_templates/<module>/<module>_pipeline_"
                                           "template.zip for Synapse's 'Import from pipeline template'")
    template.add_argument("module", help=f"source module ({', '.join(sources.names())})")
    template.add_argument("--out", default="pipeline_templates", help="folder (default %(default)s)")
    template.add_argument("--notebooks", help="notebooks folder (default: the repository's notebooks/)")
    wheel = synapse_commands.add_parser("wheel", help="build the oea_core wheel to upload as a workspace package")
    wheel.add_argument("--out", default="dist", help="folder (default %(default)s)")

    flow = commands.add_parser("flow", help="YAML pipelines: validate, run, graph, status")
    flow_commands = flow.add_subparsers(dest="flow_command", required=True, metavar="FLOW_COMMAND")
    flow_commands.add_parser("validate", help="check a flow file; every problem with its line").add_argument("file")
    flow_run = flow_commands.add_parser("run", help="run a flow (resumes a batch id that ran before)")
    flow_run.add_argument("file")
    flow_run.add_argument("--batch-id", help="batch id for every step (default: the flow's, else a UTC timestamp)")
    flow_run.add_argument("--from", dest="from_step", metavar="STEP", help="rerun STEP and everything after it")
    flow_run.add_argument("--only", metavar="STEP", help="run only STEP")
    flow_run.add_argument("--max-parallel", type=int, help="steps at once (default: the flow's max_parallel)")
    _wait_option(flow_run)
    flow_graph = flow_commands.add_parser("graph", help="draw the DAG to SVG and PNG (Graphviz)")
    flow_graph.add_argument("file")
    flow_graph.add_argument("--run-log", help="colour steps by this run log (default: the last run of this flow)")
    flow_graph.add_argument("--out", default="flow_graphs", help="output folder (default %(default)s)")
    flow_status = flow_commands.add_parser("status", help="the last runs in this lake")
    flow_status.add_argument("--limit", type=int, default=10)

    generate = commands.add_parser("generate", help="write a synthetic export for tests and benchmarks")
    generate.add_argument("module", choices=["clever", "edfi"])
    generate.add_argument("out")
    generate.add_argument("--students", type=int, default=None, help="default: clever 40, edfi 24")
    generate.add_argument("--teachers", type=int, default=4, help="clever")
    generate.add_argument("--staff", type=int, default=None, help="default: clever 2, edfi 6")
    generate.add_argument("--days", type=int, default=3, help="clever")
    generate.add_argument("--schools", type=int, default=2, help="edfi")
    generate.add_argument("--batches", type=int, default=3, help="edfi: batches of changes (first: full load)")
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--no-quirks", action="store_true", help="plain files, no real-world variations")
    return parser


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="when another run holds the lock (of this source, or flow), wait up to SECONDS for it "
                             "(default: $OEA_LOCK_WAIT, else 0: stop at once)")


def _view_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-account", default=os.environ.get("OEA_STORAGE_ACCOUNT"),
                        help="ADLS account the views read (default: $OEA_STORAGE_ACCOUNT, or the lake's)")
    parser.add_argument("--workspace", default=os.environ.get("OEA_WORKSPACE", "dev"),
                        help="workspace name in database names (default %(default)s)")
    parser.add_argument("--out", default="sql_views", help="folder for the script (default %(default)s)")
    parser.add_argument("--data-source", action="store_true",
                        help="read through a managed-identity credential and external data sources")


def _views(lake: LakePaths, name: str, args: argparse.Namespace) -> str:
    from .sql_views import views_script, write_views_script

    module = sources.get(name)(lake=lake)
    account = args.storage_account or lake.account or "yourstorageaccount"
    if not (args.storage_account or lake.account):
        log.warning("no storage account given: the script uses 'yourstorageaccount'; "
                    "pass --storage-account or set OEA_STORAGE_ACCOUNT")
    script = views_script(lake, name, module.output_tables(), account=account, workspace=args.workspace,
                          data_source=args.data_source)
    path = write_views_script(script, args.out, name)
    log.info("wrote %s", path)
    return path


def _sample(name: str, args: argparse.Namespace) -> str:
    """The export to land: --sample (one module), else test_data/<module> here or in the repository."""
    if args.sample:
        if len(args.modules or sources.names()) > 1:
            raise OEAError("--sample names one module's export: add --module NAME")
        return os.path.abspath(args.sample)
    from .notebook_run import default_notebooks_dir

    here = os.path.abspath(os.path.join("test_data", name))
    repo = os.path.join(os.path.dirname(default_notebooks_dir()), "test_data", name)
    return here if os.path.isdir(here) or not os.path.isdir(repo) else repo


def _run(lake: LakePaths, args: argparse.Namespace) -> None:
    from .landing import new_batch_id
    from .notebook_run import run_notebooks

    run_id = new_batch_id()
    for name in args.modules or sources.names():
        notebooks = sources.notebooks(name)
        sample = _sample(name, args)
        out_dir = (lake.state_path("runs", run_id) if lake.is_local else os.path.join("runs", run_id))
        params = {"lake_path": lake.root or f"abfss://stage1np@{lake.account}.dfs.core.windows.net",
                  "source_path": sample}
        executed = run_notebooks(list(notebooks), params, out_dir, args.notebooks)
        log.info("%s: ran %d notebooks; executed copies in %s", name, len(executed), out_dir)
        _views(lake, name, args)


def _dispatch(args: argparse.Namespace) -> int:
    lake = LakePaths.from_setting(args.lake)
    if args.command == "land" and args.module == "edfi":
        _land_edfi(lake, args)
    elif args.command == "land":
        if args.api or not args.src:
            raise OEAError(f"oea land {args.module} takes an export folder (--api is for edfi)")
        result = sources.get(args.module)(lake=lake).land(args.src, batch_id=args.batch_id)
        if result.batch_id:
            print(f"landed {len(result.landed)} files as batch {result.batch_id} "
                  f"({len(result.already_landed)} already landed)")
        else:
            print(f"nothing new: all {len(result.already_landed)} files were landed before")
    elif args.command == "ingest":
        module = sources.get(args.module)(lake=lake)
        try:
            results = module.ingest(max_reject_share=args.max_reject_share)
            if not results:
                print(f"nothing landed for {args.module}: run `oea land {args.module} ...` first")
            for result in results:
                if result.nothing_new:
                    print(f"{result.table}: nothing new")
                elif result.table.endswith("(refined)"):
                    print(f"{result.table}: {result.rows} rows written, {result.rejected} set aside")
                else:
                    print(f"{result.table}: {len(result.batches)} batches, {result.rows} rows written, "
                          f"{result.rejected} rejected")
        finally:
            _stop_spark(module)
    elif args.command == "views":
        print(_views(lake, args.module, args))
    elif args.command == "run":
        _run(lake, args)
    elif args.command == "flow":
        return _flow(lake, args)
    elif args.command == "sql":
        return _sql(lake, args)
    elif args.command == "synapse":
        return _synapse(args)
    elif args.command == "lake":
        return _lake_check(lake, args)
    elif args.command == "generate" and args.module == "edfi":
        from .edfi.generator import generate_edfi, write_edfi_export

        dataset = generate_edfi(students=args.students or 24, staff=args.staff or 6, schools=args.schools,
                                batches=args.batches, seed=args.seed)
        files = write_edfi_export(dataset, args.out, quirks=not args.no_quirks)
        print(f"wrote {len(files)} files to {args.out}: {len(dataset.events())} changes in "
              f"{len(dataset.batches)} batches")
    elif args.command == "generate":
        from .clever.generator import generate_clever_export

        result = generate_clever_export(args.out, students=args.students or 40, teachers=args.teachers,
                                        staff=args.staff or 2, days=args.days, seed=args.seed,
                                        quirks=not args.no_quirks)
        print(f"wrote {len(result.files)} files to {result.root}: "
              + ", ".join(f"{k} {v} rows" for k, v in result.rows.items()))
    return 0


def _flow(lake: LakePaths, args: argparse.Namespace) -> int:
    import json

    from .flow import FlowRun, load_flow, runs_dir
    from .flow.runlog import read_run_logs, run_state

    if args.flow_command == "status":
        folder = runs_dir(lake)
        logs = read_run_logs(folder)
        if not logs:
            print(f"no flow runs in {folder}")
        for doc in logs[: args.limit]:
            state = run_state(doc)
            counts: dict[str, int] = {}
            for step in doc.get("steps", {}).values():
                status = "interrupted" if state == "died" and step["status"] == "running" else step["status"]
                counts[status] = counts.get(status, 0) + 1
            print(f"{doc.get('started') or '?':<25} {doc.get('pipeline', '?'):<16} {doc['batch_id']:<28} {state:<11} "
                  + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
            if state == "died":
                print(f"  its runner (pid {doc.get('pid')} on {doc.get('host')}) is gone; last written "
                      f"{doc.get('updated')}. Rerun with --batch-id {doc['batch_id']} to resume")
            elif state == "unreadable":
                print(f"  {doc.get('error')}")
            for name, step in doc.get("steps", {}).items() if state == "running" else ():
                if step["status"] == "running":
                    print(f"  {name}: running since {step.get('started')}, attempt {step.get('attempts')} "
                          f"(pid {step.get('pid')} on {step.get('host')}, timeout {step.get('timeout')} s)")
            for note in doc.get("notifications") or ():
                if not note.get("ok"):
                    print(f"  {note.get('event')} notification ({note.get('kind')} {note.get('target')}) failed: "
                          f"{note.get('error')}")
        return 0
    flow = load_flow(args.file)
    if args.flow_command == "validate":
        print(f"{args.file}: ok: {len(flow.steps)} steps in {len(flow.stages)} stages")
        return 0
    if args.flow_command == "graph":
        from .flow.graph import draw

        run_log = None
        if args.run_log:
            with open(args.run_log, encoding="utf-8") as handle:
                run_log = json.load(handle)
        else:
            candidates = []
            folder = runs_dir(lake)
            for batch in os.listdir(folder) if os.path.isdir(folder) else []:
                path = os.path.join(folder, batch, "run_log.json")
                if os.path.exists(path):
                    with open(path, encoding="utf-8") as handle:
                        doc = json.load(handle)
                    if doc.get("pipeline") == flow.name:
                        candidates.append(doc)
            run_log = max(candidates, key=lambda d: d.get("started") or "", default=None)
        for path in draw(flow, args.out, run_log):
            print(path)
        return 0
    run = FlowRun(flow, lake, batch_id=args.batch_id, max_parallel=args.max_parallel)
    summary = run.run(from_step=args.from_step, only=args.only)
    counts = {}
    for step in summary["steps"].values():
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    print(f"flow {flow.name} batch {run.batch_id}: {summary['status']} ("
          + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f"); run log: {run.folder}/run_log.json")
    return 0


def _sql(lake: LakePaths, args: argparse.Namespace) -> int:
    import csv

    from .sql_preview import SqlPreview

    if bool(args.query) + bool(args.view) + bool(args.list) != 1:
        raise OEAError('oea sql takes one of: a query ("SELECT ..."), --view NAME, or --list')
    preview = SqlPreview(lake, args.modules, workspace=args.workspace)
    if args.list:
        for name in preview.names():
            print(name)
        return 0
    query = f"SELECT * FROM {preview.resolve(args.view)}" if args.view else args.query
    if args.csv:
        columns, rows = preview.query(query)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        preview.show(query, max_rows=args.max_rows)  # one read-only query, or a one-line SqlPreviewError
    return 0


def _lake_check(lake: LakePaths, args: argparse.Namespace) -> int:
    from .leftovers import find_leftovers, remove_leftovers
    from .lock import lake_lock

    if not lake.is_local:
        raise OEAError("oea lake check reads a local lake for now; give --lake a local folder")
    names = args.modules or sources.names()
    found = {name: find_leftovers(lake, name) for name in names}
    total = sum(len(items) for items in found.values())
    for name, items in found.items():
        for item in items:
            print(f"{item.kind:<12} {item.size:>12,} B  {os.path.relpath(item.path, lake.root)}")
    if not total:
        print(f"no leftovers in {lake.root}" + (f" for {', '.join(names)}" if args.modules else ""))
        return 0
    if not args.repair:
        print(f"{total} leftovers of interrupted runs; `oea lake check --repair` removes them")
        return 1
    freed = 0
    for name in names:
        with lake_lock(lake, name, f"{name} lake repair"):  # no run of the source writes meanwhile
            freed += remove_leftovers(find_leftovers(lake, name))
    left = sum(len(find_leftovers(lake, name)) for name in names)
    print(f"removed {total - left} leftovers ({freed / 1e6:.1f} MB)" + (f"; {left} remain" if left else ""))
    return 1 if left else 0


def _synapse(args: argparse.Namespace) -> int:
    from .synapse import build_wheel, write_template

    if args.synapse_command == "wheel":
        print(build_wheel(args.out))
        return 0
    print(write_template(args.module, args.out, notebooks_dir=args.notebooks))
    return 0


def _land_edfi(lake: LakePaths, args: argparse.Namespace) -> None:
    module = sources.get("edfi")(lake=lake)
    if args.api and args.src:
        raise OEAError("give either an export folder or --api URL, not both")
    client = None
    if args.api:
        from .edfi.api import EdFiClient

        client = EdFiClient(args.api, page_size=args.page_size)
    resources = [r.strip() for r in (args.resources or "").split(",") if r.strip()] or None
    result = module.land(args.src, client=client, resources=resources, batch_id=args.batch_id)
    records = sum(sum(b.records.values()) for b in result.batches)
    if result.batches:
        print(f"landed {len(result.batches)} resource batches ({sum(b.files for b in result.batches)} files"
              + (f", {records} records" if client else "") + f") as {', '.join(result.batch_ids)}"
              + (f"; {len(result.already_landed)} files already landed" if result.already_landed else ""))
    else:
        print("nothing new" + (f": all {len(result.already_landed)} files were landed before"
                               if result.already_landed else ""))


def _stop_spark(module) -> None:
    spark = getattr(module, "_spark", None)
    if spark is not None:
        spark.stop()


class _RedactFilter(logging.Filter):
    """Keeps the salt out of every log line, whatever a library puts in a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 a reported error, 2 an unexpected one)."""
    args = _parser().parse_args(argv)
    # Libraries (py4j, papermill) speak at WARNING and above; our own progress at INFO, per file at DEBUG.
    logging.basicConfig(level=logging.WARNING, format="oea: %(message)s", stream=sys.stderr)
    logging.getLogger("oea").setLevel(
        logging.WARNING if args.quiet else logging.DEBUG if args.debug else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactFilter())
    if args.engine:  # through the environment, so notebook kernels and flow steps use it too
        os.environ[ENGINE_SETTING] = args.engine
    if getattr(args, "wait", None) is not None:  # likewise for the lake lock
        os.environ[WAIT_SETTING] = str(args.wait)
    try:
        if os.environ.get(ENGINE_SETTING):
            engines.get(os.environ[ENGINE_SETTING])  # an unknown name fails before Spark starts
        return _dispatch(args)
    except OEAError as exc:
        if args.debug:
            raise
        print(f"oea: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("oea: interrupted; the lake is unchanged by the unfinished step", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        first_line = redact(str(exc)).splitlines()[0] if str(exc) else ""
        print(f"oea: unexpected error: {type(exc).__name__}: {first_line} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
