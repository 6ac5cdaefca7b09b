"""``oea lake check`` (leftovers of interrupted runs) and ``oea synapse`` (pipeline templates, the wheel)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import OEAError
from ..lake.leftovers import find_leftovers, remove_leftovers
from ..lake.lock import lake_lock, pull_source, source_run
from ..sources import sources
from ..synapse import build_wheel, write_template
from .common import command, wait_option

if TYPE_CHECKING:
    import argparse

    from ..lake.paths import LakePaths


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


def lake_commands(commands: argparse._SubParsersAction) -> None:
    names = sources.names()
    lake = commands.add_parser("lake", help="the lake itself: check it for leftovers of interrupted runs")
    lake_commands = lake.add_subparsers(dest="lake_command", required=True, metavar="LAKE_COMMAND")
    check = command(lake_commands, "check", _lake_check, help="list staging folders, uncommitted data files and "
                    "half-landed batches that interrupted runs left")
    check.add_argument("--repair", action="store_true", help="remove them (holding each source's lock)")
    check.add_argument("--module", action="append", dest="modules", choices=names, help="only this module (repeatable)")
    wait_option(check)

    synapse = commands.add_parser("synapse", help="Azure Synapse: pipeline templates, the oea_core wheel")
    synapse_commands = synapse.add_subparsers(dest="synapse_command", required=True, metavar="SYNAPSE_COMMAND")
    template = command(synapse_commands, "template", _synapse_template, help="write pipeline_templates/<module>/"
                       "<module>_pipeline_template.zip for Synapse's 'Import from pipeline template'")
    template.add_argument("module", choices=names, metavar="MODULE", help=f"source module: {', '.join(names)}")
    template.add_argument("--out", default="pipeline_templates", help="folder (default %(default)s)")
    template.add_argument("--notebooks", help="notebooks folder (default: the repository's notebooks/)")
    wheel = command(synapse_commands, "wheel", _synapse_wheel,
                    help="build the oea_core wheel to upload as a workspace package")
    wheel.add_argument("--out", default="dist", help="folder (default %(default)s)")
