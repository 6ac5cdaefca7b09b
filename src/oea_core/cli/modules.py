"""``oea land``, ``ingest``, ``views``, ``run``, ``generate`` and ``sql``: a source module's own commands, and the
views they serve."""

from __future__ import annotations

import csv
import os
import sys
import time
from typing import TYPE_CHECKING, cast

from ..district import generate_district
from ..errors import UsageError
from ..intake.landing import new_batch_id
from ..intake.sftp import is_sftp_url, land_sftp
from ..lake.run_summary import summarize
from ..notebook_run import default_notebooks_dir, execute_notebook
from ..source_module import DEFAULT_MAX_REJECT_SHARE
from ..sources import sources
from ..sql.preview import SqlPreview
from ..sql.view_sets import GOLD_AREAS, view_set_names, view_set_script
from ..sql.views import write_views_script
from .common import command, log, wait_option

if TYPE_CHECKING:
    import argparse

    from ..intake.sftp import LandingModule
    from ..lake.paths import LakePaths


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


def _view_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage-account", default=os.environ.get("OEA_STORAGE_ACCOUNT"),
                        help="ADLS account the views read (default: $OEA_STORAGE_ACCOUNT, or the lake's)")
    parser.add_argument("--workspace", default=os.environ.get("OEA_WORKSPACE", "dev"),
                        help="workspace name in database names (default %(default)s)")
    parser.add_argument("--out", default="sql_views", help="folder for the script (default %(default)s)")
    parser.add_argument("--data-source", action="store_true",
                        help="read through a managed-identity credential and external data sources")


def module_commands(commands: argparse._SubParsersAction) -> None:
    names = sources.names()
    land = commands.add_parser("land", help="copy a source export into stage1np")
    per_module = land.add_subparsers(dest="module", required=True, metavar="MODULE",
                                     help=f"source module: {', '.join(names)}")
    for descriptor in sources:
        parser = command(per_module, descriptor.name, _land, help=f"land a {descriptor.title} export")
        parser.add_argument("src", nargs="?", help="folder holding the export" + (
            ", or sftp://USER@HOST[:PORT]/PATH (credentials in OEA_SFTP_PASSWORD or OEA_SFTP_KEY_FILE)"
            if "sftp" in descriptor.land_from else ""))
        parser.add_argument("--batch-id", help="batch id (default: a UTC timestamp)")
        for option in descriptor.land_options:
            option.add_to(parser)
        wait_option(parser)

    ingest = command(commands, "ingest", _ingest, help="stage1np -> stage2np/stage2p, new batches only")
    ingest.add_argument("module", choices=names, metavar="MODULE", help=f"source module: {', '.join(names)}")
    ingest.add_argument("--max-reject-share", type=float,
                        default=float(os.environ.get("OEA_MAX_REJECT_SHARE", DEFAULT_MAX_REJECT_SHARE)),
                        help="stop at a batch when more than this share of its own rows cannot be read "
                             "(default %(default)s)")
    wait_option(ingest)

    views = command(commands, "views", _views, help="write the serverless SQL views script to sql_views/")
    views.add_argument("module", choices=view_set_names(), metavar="MODULE",
                       help=f"source module: {', '.join(names)}; or a gold area: {', '.join(GOLD_AREAS)}")
    _view_options(views)

    run = command(commands, "run", _run, help="run the module notebooks with papermill, then write the SQL views")
    run.add_argument("--module", action="append", dest="modules", choices=names,
                     help=f"module to run, repeatable (default: all: {', '.join(names)})")
    run.add_argument("--sample", help="export folder to land (default: test_data/<module>)")
    run.add_argument("--notebooks", help="notebooks folder (default: ./notebooks)")
    wait_option(run)
    _view_options(run)

    generate = commands.add_parser("generate", help="write a synthetic export for tests and benchmarks")
    per_module = generate.add_subparsers(dest="module", required=True, metavar="MODULE")
    for descriptor in sources:
        if descriptor.generate is None:
            continue
        parser = command(per_module, descriptor.name, _generate, help=f"a synthetic {descriptor.title} export")
        parser.add_argument("out", help="folder to write")
        for option in descriptor.generate_options:
            option.add_to(parser)
        parser.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
        parser.add_argument("--no-quirks", action="store_true", help="plain files, no real-world variations")
    district = command(per_module, "district", _generate_district,
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


def sql_commands(commands: argparse._SubParsersAction) -> None:
    sql = command(commands, "sql", _sql, help="query the SQL views over the local lake (DuckDB), as Power BI would")
    sql.add_argument("query", nargs="?", help="a SELECT over views: NAME, or <database>.dbo.NAME")
    sql.add_argument("--view", help="show this view (SELECT * FROM it)")
    sql.add_argument("--list", action="store_true", help="list the views")
    sql.add_argument("--csv", action="store_true", help="write every row as CSV to stdout")
    sql.add_argument("--max-rows", type=int, default=40, help="rows shown in the terminal (default %(default)s)")
    sql.add_argument("--module", action="append", dest="modules", choices=view_set_names(),
                     help=f"only this module's or gold area's ({', '.join(GOLD_AREAS)}) views (repeatable)")
    sql.add_argument("--workspace", default=os.environ.get("OEA_WORKSPACE", "dev"),
                     help="workspace name in database names (default %(default)s)")
