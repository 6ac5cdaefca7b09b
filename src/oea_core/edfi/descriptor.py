"""The Ed-Fi module's descriptor: its notebooks, Synapse pipeline and command-line options."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..source_module import CliOption, ModuleDescriptor, NotebookStep, Pipeline
from .api import DEFAULT_PAGE_SIZE
from .generator import generate_edfi, write_edfi_export
from .module import EdFiModule

if TYPE_CHECKING:
    import argparse

_API = "@if(equals(pipeline().parameters.landFrom, 'api'), pipeline().parameters.apiUrl, '')"


def _resources(text: str) -> list[str] | None:
    return [r.strip() for r in text.split(",") if r.strip()] or None


def _generate(out: str, args: argparse.Namespace) -> str:
    dataset = generate_edfi(students=args.students, staff=args.staff, schools=args.schools, batches=args.batches,
                            seed=args.seed, history=args.history)
    files = write_edfi_export(dataset, out, quirks=not args.no_quirks)
    return f"wrote {len(files)} files to {out}: {len(dataset.events())} changes in {len(dataset.batches)} batches"


DESCRIPTOR = ModuleDescriptor(
    name="edfi",
    title="Ed-Fi ODS/API student records",
    module=EdFiModule,
    notebooks=(
        NotebookStep("edfi/EdFi_1_land.ipynb", "Land Ed-Fi", takes=("lake_path", "source_path"),
                     synapse={"batch_id": Pipeline.RUN_ID, "source_path": Pipeline.SOURCE_FOLDER, "api_url": _API}),
        NotebookStep("edfi/EdFi_2_ingest.ipynb", "Ingest Ed-Fi",
                     synapse={"max_reject_share": Pipeline.MAX_REJECT_SHARE}),
        NotebookStep("edfi/EdFi_3_refine.ipynb", "Refine Ed-Fi",
                     synapse={"max_reject_share": Pipeline.MAX_REJECT_SHARE}),
    ),
    land_from=("test_data", "api"),
    pipeline_parameters={"apiUrl": {"type": "string", "defaultValue": ""}},
    land_options=(
        CliOption(("--api",), {"metavar": "URL", "help": "land from this Ed-Fi ODS/API (credentials from "
                                                           "$OEA_EDFI_CLIENT_ID and $OEA_EDFI_CLIENT_SECRET, or "
                                                           "Key Vault $OEA_KEYVAULT_URL)"}),
        CliOption(("--resources",), {"type": _resources, "help": "with --api: comma-separated resources "
                                                                 "(default: all the module supports)"}),
        CliOption(("--page-size",), {"type": int, "default": DEFAULT_PAGE_SIZE,
                                     "help": "with --api: records per page (default %(default)s)"}),
    ),
    generate=_generate,
    generate_options=(
        CliOption(("--students",), {"type": int, "default": 24, "help": "students (default %(default)s)"}),
        CliOption(("--staff",), {"type": int, "default": 6, "help": "staff (default %(default)s)"}),
        CliOption(("--schools",), {"type": int, "default": 2, "help": "schools (default %(default)s)"}),
        CliOption(("--batches",), {"type": int, "default": 3,
                                   "help": "batches of changes, the first a full load (default %(default)s)"}),
        CliOption(("--history",), {"action": "store_true",
                                   "help": "add the changes a gold layer's history follows (attributes, a school "
                                           "renamed, enrollments ending, late deliveries; needs 3 batches)"}),
    ),
)
