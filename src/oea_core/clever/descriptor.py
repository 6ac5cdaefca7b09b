"""The Clever module's descriptor: its notebooks, Synapse pipeline and command-line options."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..source_module import CliOption, ModuleDescriptor, NotebookStep, Pipeline
from .generator import generate_clever_export
from .module import CleverModule

if TYPE_CHECKING:
    import argparse

# Synapse lands from the source folder, or from the SFTP server itself with the same code (and so the same
# incremental rule) as `oea land clever sftp://...`.
_SOURCE = (f"@if(equals(pipeline().parameters.landFrom, 'sftp'), {Pipeline.SFTP_URL}, "
           f"concat({Pipeline.SOURCE_ROOT}, pipeline().parameters.sourceFolder))")


def _generate(out: str, args: argparse.Namespace) -> str:
    result = generate_clever_export(out, students=args.students, teachers=args.teachers, staff=args.staff,
                                    days=args.days, seed=args.seed, quirks=not args.no_quirks)
    return (f"wrote {len(result.files)} files to {result.root}: "
            + ", ".join(f"{k} {v} rows" for k, v in result.rows.items()))


DESCRIPTOR = ModuleDescriptor(
    name="clever",
    title="Clever participation and resource usage",
    module=CleverModule,
    notebooks=(
        NotebookStep("clever/Clever_module_ingestion.ipynb", "Land and ingest Clever",
                     takes=("lake_path", "source_path"),
                     synapse={"batch_id": Pipeline.RUN_ID, "source_path": _SOURCE, "land": True,
                              "max_reject_share": Pipeline.MAX_REJECT_SHARE}),
    ),
    land_from=("test_data", "sftp"),
    generate=_generate,
    generate_options=(
        CliOption(("--students",), {"type": int, "default": 40, "help": "students (default %(default)s)"}),
        CliOption(("--teachers",), {"type": int, "default": 4, "help": "teachers (default %(default)s)"}),
        CliOption(("--staff",), {"type": int, "default": 2, "help": "staff (default %(default)s)"}),
        CliOption(("--days",), {"type": int, "default": 3, "help": "school days (default %(default)s)"}),
    ),
)
