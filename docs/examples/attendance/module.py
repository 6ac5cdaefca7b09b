"""The attendance module: ``attendance*.csv`` files -> ``stage2p/attendance/daily_attendance_pseudo``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from oea_core import CsvTableDef, IngestResult, LandingError, LandResult, SourceModule, TableSchema
from oea_core.intake.csv_ingest import ingest_csv_table
from oea_core.intake.landing import land_folder
from oea_core.lake.lock import source_run
from oea_core.source_module import DEFAULT_MAX_REJECT_SHARE

if TYPE_CHECKING:
    from collections.abc import Collection

SOURCE = "attendance"
# OEA's [column, type, op]: student_id is replaced by its pseudonym (its lookup stays in stage2np).
DAILY = CsvTableDef(
    source=SOURCE,
    landed_name="daily_attendance",
    schema=TableSchema.parse("daily_attendance", [
        ["date", "date", "x"],
        ["student_id", "string", "h"],
        ["school_id", "string", "x"],
        ["status", "string", "x"],
        ["minutes_absent", "int", "x"],
    ]),
    required=("date", "student_id"),
    date_partition="date",
)


def classify(relative_path: str) -> tuple[str, str] | None:
    """Every ``attendance*.csv`` is a day of the daily attendance table; other files are not ours."""
    name = os.path.basename(relative_path)
    return (DAILY.landed_name, name) if name.startswith("attendance") else None


class AttendanceModule(SourceModule):
    """Land and ingest a SIS's daily attendance export."""

    source = SOURCE

    def land(self, src: str | os.PathLike[str] | None = None, *, batch_id: str | None = None) -> LandResult:
        if src is None:
            raise LandingError("give the attendance export folder (oea land attendance FOLDER)")
        with source_run(self.lake, SOURCE, "attendance land"):
            return land_folder(self.lake, SOURCE, os.fspath(src), classify, batch_id=batch_id)

    def ingest(self, max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
               batches: Collection[str] | None = None) -> list[IngestResult]:
        salt = self.salt()  # the lake's salt, checked against its fingerprint
        with source_run(self.lake, SOURCE, "attendance ingest"):
            return [ingest_csv_table(self.spark, self.lake, DAILY, salt, store=self.store,
                                     max_reject_share=max_reject_share, batches=batches)]

    def outputs(self) -> list[tuple[str, str]]:
        return [("stage2p", DAILY.pseudo_table), ("stage2np", DAILY.lookup_table)]
