"""The Clever module: Clever Participation Reports (daily-participation, resource-usage).

Outputs ``stage2p/clever/<table>_pseudo`` (partitioned by year and month of ``date``),
``stage2np/clever/<table>_lookup`` and, when rows cannot be read, ``stage2np/clever/<table>_rejected``.
The user's role (students, teachers, staff) is taken from the file's folder or name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from typing import TYPE_CHECKING, Any

from ..errors import LandingError
from ..intake.csv_ingest import CsvTableDef, app_id, ingest_csv_tables
from ..intake.landing import LandResult, land_folder
from ..intake.sftp import is_sftp_url, land_sftp
from ..lake.lock import LANDING, source_run
from ..schema import TableSchema, safe_table_name
from ..source_module import DEFAULT_MAX_REJECT_SHARE, IngestResult, SourceModule

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from pyspark.sql import SparkSession

    from ..lake.paths import LakePaths
    from ..privacy.salt import Salt

log = logging.getLogger("oea")
SOURCE = "clever"
ROLES = ("students", "teachers", "staff")
_SEPARATORS = re.compile("[" + re.escape("/" + os.sep + (os.altsep or "")) + "]")  # a POSIX name may hold "\\"
_ROLE = re.compile(r"(?<![a-z])(student|teacher|staff)s?(?![a-z])", re.IGNORECASE)

# OEA's [column, type, op] form; columns are matched by header name, so order is only documentation.
SCHEMAS = {
    "daily-participation": [
        ["date", "date", "x"],
        ["sis_id", "string", "h"],
        ["clever_user_id", "string", "h"],
        ["clever_school_id", "string", "x"],
        ["school_name", "string", "x"],
        ["active", "boolean", "x"],
        ["num_logins", "int", "x"],
        ["num_resources_accessed", "int", "x"],
    ],
    "resource-usage": [
        ["date", "date", "x"],
        ["sis_id", "string", "h"],
        ["clever_user_id", "string", "h"],
        ["clever_school_id", "string", "x"],
        ["school_name", "string", "x"],
        ["resource_type", "string", "x"],
        ["resource_name", "string", "x"],
        ["resource_id", "string", "x"],
        ["num_access", "int", "x"],
    ],
}


def role_from_path(path: str) -> str | None:
    """``students``, ``teachers`` or ``staff`` from a file's folder or name; None when absent."""
    for part in reversed(_SEPARATORS.split(path)):
        match = _ROLE.search(part)
        if match:
            word = match.group(1).lower()
            return "staff" if word == "staff" else word + "s"
    return None


def table_defs() -> dict[str, CsvTableDef]:
    """The module's tables by report name; each schema is checked here (SchemaError on a bad op/type)."""
    return {
        report: CsvTableDef(
            source=SOURCE,
            landed_name=report,
            schema=TableSchema.parse(safe_table_name(report), spec),
            file_columns=lambda path: {"role": role_from_path(path) or "unknown"},
            passthrough=("role",),
            required=("date",),
            date_partition="date",
        )
        for report, spec in SCHEMAS.items()
    }


def classify(relative_path: str) -> tuple[str, str] | None:
    """Where a file of a Clever export goes: ``(report, <role>/<file name>)``; None for other files."""
    parts = _SEPARATORS.split(relative_path)
    report = next((p for p in parts[:-1] if p in SCHEMAS), None) or next(
        (r for r in SCHEMAS if r in parts[-1]), None)
    if report is None:
        return None
    role = role_from_path(relative_path)
    if role is None:
        raise LandingError(
            f"cannot tell the role of {relative_path}: put it under a students/teachers/staff folder "
            "or name it like <date>-daily-participation-students.csv", path=relative_path)
    return report, f"{role}/{parts[-1]}"


class CleverModule(SourceModule):
    """Land, ingest and query the Clever module's tables in one lake."""

    source = SOURCE

    def __init__(self, lake: LakePaths | str | None = None, spark: SparkSession | None = None,
                 salt: Salt | None = None, engine: str | None = None) -> None:
        super().__init__(lake, spark, salt, engine)
        self.tables = table_defs()

    def land(self, src: str | os.PathLike[str] | None = None, *, batch_id: str | None = None,
             file_facts: Mapping[str, Mapping[str, Any]] | None = None) -> LandResult:
        """Copy a Clever export folder into ``stage1np/clever/<report>/<batch>/<role>/``; ``file_facts`` go into
        the manifest entries (see :func:`~oea_core.intake.landing.land_folder`). ``src`` may be an ``sftp://`` URL:
        :func:`~oea_core.intake.sftp.land_sftp` downloads what is new and lands it through this method."""
        if src is None:
            raise LandingError("give the Clever export folder to land (oea land clever FOLDER)")
        if isinstance(src, str) and is_sftp_url(src):  # the notebook's source_path (Synapse's sftpUrl)
            result = land_sftp(self, src, batch_id=batch_id)
            log.info("%s", result.summary())
            return result.land or LandResult(SOURCE, None)
        with source_run(self.lake, SOURCE, "clever land", stages=LANDING):
            return land_folder(self.lake, SOURCE, os.fspath(src), classify, batch_id=batch_id,
                               file_facts=file_facts)

    def ingest(self, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
               batches: Collection[str] | None = None) -> list[IngestResult]:
        """Ingest every new landed batch of every report (only ``batches`` when given: then all or nothing)."""
        with source_run(self.lake, SOURCE, "clever ingest"):  # a cloud lake's working copy is pulled first
            salt = self.salt()
            store = self.store
            log.info("clever ingest with the %s Delta engine", store.name)
            return ingest_csv_tables(self.spark, self.lake, list(self.tables.values()), salt, store=store,
                                     max_reject_share=max_reject_share, batches=batches)

    def discard_batches(self, batches: Collection[str]) -> list[str]:
        """Remove the landed ``batches`` from stage1np where no table holds them; the folders removed."""
        with source_run(self.lake, SOURCE, "clever discard", stages=LANDING):
            store = self.store
            removed = []
            for table_def in self.tables.values():
                p_path = self.lake.table("stage2p", SOURCE, table_def.pseudo_table)
                for batch in batches:
                    folder = self.lake.path("stage1np", SOURCE, table_def.landed_name, batch)
                    if not os.path.isdir(folder):
                        continue
                    if store.exists(p_path) and store.applied(p_path, app_id(SOURCE, table_def.table, batch)):
                        continue
                    shutil.rmtree(folder)
                    removed.append(folder)
            return removed

    def outputs(self) -> list[tuple[str, str]]:
        """``(stage, table)`` of every table the module writes for analysts (for SQL views)."""
        tables = []
        for table_def in self.tables.values():
            tables += [("stage2p", table_def.pseudo_table), ("stage2np", table_def.lookup_table)]
        return tables
