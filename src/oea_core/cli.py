"""The ``oea`` command: ``oea [--lake PATH] <command> ...``, one handler per command.

Each command's parser sets its handler with ``set_defaults(handler=...)``; a handler takes the
lake and the parsed arguments and returns the exit code. Module-specific options come from the
module's descriptor (``oea land edfi --api``, ``oea generate clever --days``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, cast

from .delta import ENGINE_SETTING, LOCAL_DEFAULT, engines
from .district import generate_district
from .errors import OEAError, UsageError
from .flow import FlowRun, RunLog, load_flow, runs_dir
from .flow.graph import draw
from .intake.landing import new_batch_id
from .intake.sftp import is_sftp_url, land_sftp
from .lake.cloud import pull_runs
from .lake.leftovers import find_leftovers, remove_leftovers
from .lake.lock import WAIT_SETTING, lake_lock, pull_source, source_run
from .lake.paths import LakePaths
from .lake.run_summary import summarize
from .notebook_run import default_notebooks_dir, execute_notebook
from .privacy.redaction import redact
from .publish import publish_postgres
from .publish.prod import DEFAULT_TIMEOUT
from .source_module import DEFAULT_MAX_REJECT_SHARE
from .sources import sources
from .sql.preview import SqlPreview
from .sql.view_sets import GOLD_AREAS, view_set_names, view_set_script
from .sql.views import write_views_script
from .submissions import SubmissionLimits, open_inbox, schema_text, submit_bundle, watch_inbox
from .submissions.inbox import DEFAULT_INTERVAL
from .synapse import build_wheel, write_template

if TYPE_CHECKING:
    from .intake.sftp import LandingModule

log = logging.getLogger("oea")
Handler = Callable[[LakePaths, argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 1, like every other reported error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# land, ingest, views, run ----------------------------------------------------------------------
def _land(lake: LakePaths, args: argparse.Namespace) -> int:
    descriptor = sources.get(args.module)
    module = descriptor.create(lake=lake)
    if is_sftp_url(args.src):
        if "sftp" not in descriptor.land_from:
            raise UsageError(f"oea land {args.module} cannot land from SFTP ({args.src}); it lands from "
                             f"{' or '.join(descriptor.land_from)}")
        # land_from names sftp only for a module whose land takes file_facts (LandingModule)
        print(land_sftp(cast("LandingModule", module), args.src, batch_id=args.batch_id).summary())
        return 0
    result = module.land(args.src, batch_id=args.batch_id, **descriptor.land_kwargs(args))
    print(result.summary())
    return 0


def _ingest(lake: LakePaths, args: argparse.Namespace) -> int:
    with sources.create(args.module, lake=lake) as module:
        results = module.ingest(max_reject_share=args.max_reject_share)
        if not results:
            print(f"nothing landed for {args.module}: run `oea land {args.module} ...` first")
        for result in results:
            print(result.describe())
    return 0


def _write_views(lake: LakePaths, name: str, args: argparse.Namespace) -> str:
    account = args.storage_account or lake.account or "yourstorageaccount"
    if not (args.storage_account or lake.account):
        log.warning("no storage account given: the script uses 'yourstorageaccount'; "
                    "pass --storage-account or set OEA_STORAGE_ACCOUNT")
    script = view_set_script(lake, name, account=account, workspace=args.workspace, data_source=args.data_source)
    path = write_views_script(script, args.out, name)
    log.info("wrote %s", path)
    return path


def _views(lake: LakePaths, args: argparse.Namespace) -> int:
    print(_write_views(lake, args.module, args))
    return 0


def _sample(name: str, args: argparse.Namespace) -> str:
    """The export to land: --sample (one module), else test_data/<module> here or in the repository."""
    if args.sample:
        if len(args.modules or sources.names()) > 1:
            raise UsageError("--sample names one module's export: add --module NAME")
        return os.path.abspath(args.sample)
    here = os.path.abspath(os.path.join("test_data", name))
    repo = os.path.join(os.path.dirname(default_notebooks_dir()), "test_data", name)
    return here if os.path.isdir(here) or not os.path.isdir(repo) else repo


def _run(lake: LakePaths, args: argparse.Namespace) -> int:
    started = time.time()
    run_id = new_batch_id()
    out_dir = lake.state_path("runs", run_id) if lake.root else os.path.join("runs", run_id)
    notebooks_dir = args.notebooks or default_notebooks_dir()
    for name in args.modules or sources.names():
        descriptor = sources.get(name)
        values = {"lake_path": lake.setting,
                  "source_path": _sample(name, args)}
        if descriptor.notebooks:
            for step in descriptor.notebooks:
                execute_notebook(os.path.join(notebooks_dir, step.path), os.path.join(out_dir, f"{step.name}.ipynb"),
                                 {key: values[key] for key in step.takes})
            log.info("%s: ran %d notebooks; executed copies in %s", name, len(descriptor.notebooks), out_dir)
        else:  # a module without notebooks runs its own land and ingest
            with descriptor.create(lake=lake) as module:
                log.info("%s: %s", name, module.land(values["source_path"]).summary())
                for result in module.ingest():
                    log.info("%s: %s", name, result.describe())
        _write_views(lake, name, args)
    print(f"oea run: {summarize(lake, args.modules or sources.names(), started).line()}")
    return 0


# sql, lake, synapse ----------------------------------------------------------------------------
def _sql(lake: LakePaths, args: argparse.Namespace) -> int:
    if bool(args.query) + bool(args.view) + bool(args.list) != 1:
        raise UsageError('oea sql takes one of: a query ("SELECT ..."), --view NAME, or --list')
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
    if lake.root is None:
        raise OEAError(f"oea lake check needs a lake folder or a cloud lake's working copy; {lake.shown} has none "
                       "here: give --lake a folder or an abfss:// URL")
    names = args.modules or sources.names()
    found = _leftovers(lake, names)
    total = sum(len(items) for items in found.values())
    for items in found.values():
        for kind, size, path in items:
            print(f"{kind:<12} {size:>12,} B  {path}")
    if not total:
        print(f"no leftovers in {lake.shown}" + (f" for {', '.join(names)}" if args.modules else ""))
        return 0
    if not args.repair:
        print(f"{total} leftovers of interrupted runs; `oea lake check --repair` removes them")
        return 1
    for name in names:
        if lake.account is not None:  # pulled, cleaned before and after, pushed: the account loses them too
            with source_run(lake, name, f"{name} lake repair"):
                pass
        else:
            with lake_lock(lake, name, f"{name} lake repair"):  # no run of the source writes meanwhile
                remove_leftovers(find_leftovers(lake, name))
    freed = sum(size for items in found.values() for _, size, _ in items)
    left = sum(len(items) for items in _leftovers(lake, names).values())
    print(f"removed {total - left} leftovers ({freed / 1e6:.1f} MB)" + (f"; {left} remain" if left else ""))
    return 1 if left else 0


def _leftovers(lake: LakePaths, names: list[str]) -> dict[str, list[tuple[str, int, str]]]:
    """``(kind, size, path)`` of each source's leftovers. A cloud lake's working copy is pulled first (files no
    commit names come with it); a batch landed without its manifest is listed from the account."""
    found: dict[str, list[tuple[str, int, str]]] = {}
    for name in names:
        folders = pull_source(lake, name, f"{name} lake check")
        found[name] = [(item.kind, item.size, os.path.relpath(item.path, lake.root)) for item in
                       find_leftovers(lake, name)]
        found[name] += [("landing", size, f"{folder.remote_root}/{path}") for folder in folders
                        for path, size in sorted(folder.half_batches.items())]
    return found


def _synapse_template(lake: LakePaths, args: argparse.Namespace) -> int:
    print(write_template(args.module, args.out, notebooks_dir=args.notebooks))
    return 0


def _synapse_wheel(lake: LakePaths, args: argparse.Namespace) -> int:
    print(build_wheel(args.out))
    return 0


# publish ---------------------------------------------------------------------------------------
def _publish_postgres(lake: LakePaths, args: argparse.Namespace) -> int:
    result = publish_postgres(lake, args.dsn, dev_db=args.dev_database, prod_db=args.prod_database,
                              tables=args.tables or (), project_dir=args.project_dir,
                              reader_timeout=args.reader_timeout)
    print(result.summary())
    return 0


# flow ------------------------------------------------------------------------------------------
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


# submit, watch -----------------------------------------------------------------------------------
def _limits(args: argparse.Namespace) -> SubmissionLimits:
    return SubmissionLimits.from_settings(args.max_members, args.max_bytes)


def _submit(lake: LakePaths, args: argparse.Namespace) -> int:
    if args.print_schema:
        sys.stdout.write(schema_text())
        return 0
    if not args.bundle:
        raise UsageError("oea submit needs a BUNDLE (.tar or .tar.gz), or --print-schema")
    if not os.path.isfile(args.bundle):
        raise UsageError(f"oea submit: {args.bundle} is not a file: give the path of a .tar or .tar.gz bundle")
    submission = submit_bundle(lake, args.bundle, limits=_limits(args))  # the bundle stays where it is
    print(submission.line())
    return 0 if submission.status == "accepted" else 1


def _watch(lake: LakePaths, args: argparse.Namespace) -> int:
    summary = watch_inbox(lake, open_inbox(args.inbox), limits=_limits(args), interval=args.interval, once=args.once)
    print(f"oea watch {args.inbox}: {summary.line()}")
    return 1 if summary.left and args.once else 0


# generate --------------------------------------------------------------------------------------
def _generate(lake: LakePaths, args: argparse.Namespace) -> int:
    generate = sources.get(args.module).generate
    assert generate is not None  # only modules with a generator get a subcommand
    print(generate(args.out, args))
    return 0


def _generate_district(lake: LakePaths, args: argparse.Namespace) -> int:
    try:
        result = generate_district(args.out, students=args.students, staff=args.staff, schools=args.schools,
                                   batches=args.batches, days=args.days, seed=args.seed,
                                   history=not args.no_history, quirks=not args.no_quirks)
    except ValueError as exc:
        raise UsageError(f"oea generate district: {exc}") from exc
    print(f"wrote {result.root / 'edfi'}: {len(result.edfi.events())} changes in {len(result.edfi.batches)} batches; "
          f"{result.root / 'clever'}: " + ", ".join(f"{k} {v} rows" for k, v in result.clever.rows.items())
          + f"; Clever students: {len(result.matched_sis_ids)} matching Ed-Fi, {len(result.unmatched_sis_ids)} "
          f"unmatched, {result.deactivated_students} with a blank sis_id (their rows: "
          + ", ".join(f"{k} {v}" for k, v in result.unmatched_rows.items()) + ")")
    return 0


# the parser ------------------------------------------------------------------------------------
def _command(commands: argparse._SubParsersAction, name: str, handler: Handler, *, help: str
             ) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help)
    parser.set_defaults(handler=handler)
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


def _module_commands(commands: argparse._SubParsersAction) -> None:
    names = sources.names()
    land = commands.add_parser("land", help="copy a source export into stage1np")
    per_module = land.add_subparsers(dest="module", required=True, metavar="MODULE",
                                     help=f"source module: {', '.join(names)}")
    for descriptor in sources:
        parser = _command(per_module, descriptor.name, _land, help=f"land a {descriptor.title} export")
        parser.add_argument("src", nargs="?", help="folder holding the export" + (
            ", or sftp://USER@HOST[:PORT]/PATH (credentials in OEA_SFTP_PASSWORD or OEA_SFTP_KEY_FILE)"
            if "sftp" in descriptor.land_from else ""))
        parser.add_argument("--batch-id", help="batch id (default: a UTC timestamp)")
        for option in descriptor.land_options:
            option.add_to(parser)
        _wait_option(parser)

    ingest = _command(commands, "ingest", _ingest, help="stage1np -> stage2np/stage2p, new batches only")
    ingest.add_argument("module", choices=names, metavar="MODULE", help=f"source module: {', '.join(names)}")
    ingest.add_argument("--max-reject-share", type=float,
                        default=float(os.environ.get("OEA_MAX_REJECT_SHARE", DEFAULT_MAX_REJECT_SHARE)),
                        help="stop at a batch when more than this share of its own rows cannot be read "
                             "(default %(default)s)")
    _wait_option(ingest)

    views = _command(commands, "views", _views, help="write the serverless SQL views script to sql_views/")
    views.add_argument("module", choices=view_set_names(), metavar="MODULE",
                       help=f"source module: {', '.join(names)}; or a gold area: {', '.join(GOLD_AREAS)}")
    _view_options(views)

    run = _command(commands, "run", _run, help="run the module notebooks with papermill, then write the SQL views")
    run.add_argument("--module", action="append", dest="modules", choices=names,
                     help=f"module to run, repeatable (default: all: {', '.join(names)})")
    run.add_argument("--sample", help="export folder to land (default: test_data/<module>)")
    run.add_argument("--notebooks", help="notebooks folder (default: ./notebooks)")
    _wait_option(run)
    _view_options(run)

    generate = commands.add_parser("generate", help="write a synthetic export for tests and benchmarks")
    per_module = generate.add_subparsers(dest="module", required=True, metavar="MODULE")
    for descriptor in sources:
        if descriptor.generate is None:
            continue
        parser = _command(per_module, descriptor.name, _generate, help=f"a synthetic {descriptor.title} export")
        parser.add_argument("out", help="folder to write")
        for option in descriptor.generate_options:
            option.add_to(parser)
        parser.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
        parser.add_argument("--no-quirks", action="store_true", help="plain files, no real-world variations")
    district = _command(per_module, "district", _generate_district,
                        help="a matching pair: Ed-Fi changes (OUT/edfi) and Clever reports (OUT/clever) of one district")
    district.add_argument("out", help="folder to write")
    for name, default, what in (("--students", 24, "Ed-Fi students"), ("--staff", 6, "staff (Clever teachers)"),
                                ("--schools", 2, "schools"), ("--batches", 3, "Ed-Fi batches"),
                                ("--days", 20, "Clever days")):
        district.add_argument(name, type=int, default=default, help=f"{what} (default %(default)s)")
    district.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    district.add_argument("--no-history", action="store_true",
                          help="leave out the Ed-Fi history (attribute changes, a school renamed, enrollments ending, "
                               "late deliveries)")
    district.add_argument("--no-quirks", action="store_true", help="plain files, no real-world variations")


def _lake_commands(commands: argparse._SubParsersAction) -> None:
    names = sources.names()
    sql = _command(commands, "sql", _sql, help="query the SQL views over the local lake (DuckDB), as Power BI would")
    sql.add_argument("query", nargs="?", help="a SELECT over views: NAME, or <database>.dbo.NAME")
    sql.add_argument("--view", help="show this view (SELECT * FROM it)")
    sql.add_argument("--list", action="store_true", help="list the views")
    sql.add_argument("--csv", action="store_true", help="write every row as CSV to stdout")
    sql.add_argument("--max-rows", type=int, default=40, help="rows shown in the terminal (default %(default)s)")
    sql.add_argument("--module", action="append", dest="modules", choices=view_set_names(),
                     help=f"only this module's or gold area's ({', '.join(GOLD_AREAS)}) views (repeatable)")
    sql.add_argument("--workspace", default=os.environ.get("OEA_WORKSPACE", "dev"),
                     help="workspace name in database names (default %(default)s)")

    lake = commands.add_parser("lake", help="the lake itself: check it for leftovers of interrupted runs")
    lake_commands = lake.add_subparsers(dest="lake_command", required=True, metavar="LAKE_COMMAND")
    check = _command(lake_commands, "check", _lake_check, help="list staging folders, uncommitted data files and "
                     "half-landed batches that interrupted runs left")
    check.add_argument("--repair", action="store_true", help="remove them (holding each source's lock)")
    check.add_argument("--module", action="append", dest="modules", choices=names, help="only this module (repeatable)")
    _wait_option(check)

    synapse = commands.add_parser("synapse", help="Azure Synapse: pipeline templates, the oea_core wheel")
    synapse_commands = synapse.add_subparsers(dest="synapse_command", required=True, metavar="SYNAPSE_COMMAND")
    template = _command(synapse_commands, "template", _synapse_template, help="write pipeline_templates/<module>/"
                        "<module>_pipeline_template.zip for Synapse's 'Import from pipeline template'")
    template.add_argument("module", choices=names, metavar="MODULE", help=f"source module: {', '.join(names)}")
    template.add_argument("--out", default="pipeline_templates", help="folder (default %(default)s)")
    template.add_argument("--notebooks", help="notebooks folder (default: the repository's notebooks/)")
    wheel = _command(synapse_commands, "wheel", _synapse_wheel,
                     help="build the oea_core wheel to upload as a workspace package")
    wheel.add_argument("--out", default="dist", help="folder (default %(default)s)")


def _submission_commands(commands: argparse._SubParsersAction) -> None:
    submit = _command(commands, "submit", _submit, help="process a tarball bundle once: its pipeline-config.json "
                      "names the pipeline (docs/pipeline-config.md); the file stays where it is")
    submit.add_argument("bundle", nargs="?", help="the .tar or .tar.gz bundle")
    submit.add_argument("--print-schema", action="store_true", help="print the pipeline-config.json JSON Schema")
    watch_ = _command(commands, "watch", _watch, help="process every bundle dropped into INBOX, then move it to "
                      "INBOX/processed/ or INBOX/rejected/")
    watch_.add_argument("inbox", help="a local folder, or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/FOLDER")
    watch_.add_argument("--once", action="store_true", help="process the bundles there now, then stop")
    watch_.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help="seconds between polls (default %(default)s)")
    for parser in (submit, watch_):
        parser.add_argument("--max-members", type=int, help="refuse a bundle of more members (default: "
                            "$OEA_SUBMISSION_MAX_MEMBERS, else 10000)")
        parser.add_argument("--max-bytes", type=int, help="refuse a bundle of more bytes once unpacked (default: "
                            "$OEA_SUBMISSION_MAX_BYTES, else 1 GiB)")
        _wait_option(parser)


def _publish_commands(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser("publish", help="publish the star schema to a database")
    targets = publish.add_subparsers(dest="publish_command", required=True, metavar="TARGET")
    postgres = _command(targets, "postgres", _publish_postgres, help="load the star schema into a PostgreSQL dev "
                        "database, dbt build transform/ there, then replace prod's transformed schema atomically")
    postgres.add_argument("--dsn", default=os.environ.get("OEA_PG_DSN"),
                          help="libpq connection string, without the password (default: $OEA_PG_DSN, else "
                               "libpq's PGHOST, PGPORT, PGUSER; the password from PGPASSWORD or ~/.pgpass)")
    postgres.add_argument("--dev-database", default=os.environ.get("OEA_PG_DEV_DATABASE", "oea_dev"),
                          help="database loaded and transformed (default %(default)s)")
    postgres.add_argument("--prod-database", default=os.environ.get("OEA_PG_PROD_DATABASE", "oea_prod"),
                          help="database the reports read, replaced from dev (default %(default)s)")
    postgres.add_argument("--table", action="append", dest="tables", metavar="STAGE/SOURCE/TABLE",
                          help="also load this pseudonymized table, e.g. stage2p/clever/daily_participation_pseudo "
                               "(repeatable; the star's tables are always loaded)")
    postgres.add_argument("--project-dir", help="the dbt project (default: the repository's transform/)")
    postgres.add_argument("--reader-timeout", default=os.environ.get("OEA_PG_READER_TIMEOUT", DEFAULT_TIMEOUT),
                          help="statement_timeout of the oea_reader role (default %(default)s)")
    _wait_option(postgres)


def _flow_commands(commands: argparse._SubParsersAction) -> None:
    flow = commands.add_parser("flow", help="YAML pipelines: validate, run, graph, status")
    flow_commands = flow.add_subparsers(dest="flow_command", required=True, metavar="FLOW_COMMAND")
    _command(flow_commands, "validate", _flow_validate,
             help="check a flow file; every problem with its line").add_argument("file")
    run = _command(flow_commands, "run", _flow_run, help="run a flow (resumes a batch id that ran before)")
    run.add_argument("file")
    run.add_argument("--batch-id", help="batch id for every step (default: the flow's, else a UTC timestamp)")
    run.add_argument("--from", dest="from_step", metavar="STEP", help="rerun STEP and everything after it")
    run.add_argument("--only", metavar="STEP", help="run only STEP")
    run.add_argument("--max-parallel", type=int, help="steps at once (default: the flow's max_parallel)")
    _wait_option(run)
    graph = _command(flow_commands, "graph", _flow_graph, help="draw the DAG to SVG and PNG (Graphviz)")
    graph.add_argument("file")
    graph.add_argument("--run-log", help="colour steps by this run log (default: the last run of this flow)")
    graph.add_argument("--out", default="flow_graphs", help="output folder (default %(default)s)")
    status = _command(flow_commands, "status", _flow_status, help="the last runs in this lake")
    status.add_argument("--limit", type=int, default=10)


def parser() -> argparse.ArgumentParser:
    """The ``oea`` argument parser."""
    root = _Parser(prog="oea", description="Open, tested OEA-style education data lake.")
    root.add_argument("--lake", help="lake folder or abfss:// URL (default: $OEA_LAKE, then ./lake)")
    root.add_argument("--engine", choices=engines.names(),
                      help="Delta engine (default: $OEA_ENGINE, else spark-delta on Synapse/Databricks, else "
                           f"{LOCAL_DEFAULT} locally)")
    root.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    root.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _module_commands(commands)
    _lake_commands(commands)
    _publish_commands(commands)
    _flow_commands(commands)
    _submission_commands(commands)
    return root


class _RedactFilter(logging.Filter):
    """Keeps the salt out of every log line, whatever a library puts in a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True


def _configure(args: argparse.Namespace) -> None:
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
    if os.environ.get(ENGINE_SETTING):
        engines.get(os.environ[ENGINE_SETTING])  # an unknown name fails before Spark starts


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 a reported error, 2 an unexpected one)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(argv)
        _configure(args)
        handler: Handler = args.handler
        return handler(LakePaths.from_setting(args.lake), args)
    except OEAError as exc:
        if debug:
            raise
        print(f"oea: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("oea: interrupted; the lake is unchanged by the unfinished step", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        first_line = redact(str(exc)).splitlines()[0] if str(exc) else ""
        print(f"oea: unexpected error: {type(exc).__name__}: {first_line} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
