"""One synthetic district seen by two sources: its Ed-Fi ODS/API changes and its Clever reports, matching.

``generate_district`` writes both exports, each in the layout ``oea land`` takes:
``<out>/edfi/<resource>/incremental/{upserts|deletes|keyChanges}/rundate=YYYY-MM-DD/`` and
``<out>/clever/<report>/<YYYY-MM-DD>-<report>-<role>.csv``. They match as one SIS feeding both would:

- a Clever student's ``sis_id`` is their Ed-Fi ``studentUniqueId``, so under one salt their pseudonyms
  meet (``sis_id_pseudonym`` = ``studentUniqueId_pseudonym``). Every Ed-Fi student is in Clever, with
  the school of their first enrollment, except those the last batch first brought (not synced to
  Clever yet); students Ed-Fi deleted stay in Clever;
- Clever names its schools with its own ids: ``clever_school_id`` is an ObjectId derived from the Ed-Fi
  ``schoolId`` (``clever_schools`` maps one to the other) and ``school_name`` is the Ed-Fi
  ``nameOfInstitution`` of the initial load (Clever keeps the old name after a rename);
- a few Clever students match no Ed-Fi student: ``unmatched_sis_ids`` (``990…``, a prefix Ed-Fi ids
  never have) and ``deactivated_students`` with a blank ``sis_id``. ``unmatched_rows`` counts their
  rows per report, the rows a gold layer must keep under its unknown student.

Clever's days start on the Monday after the Ed-Fi enrollments begin, so they cover the history's
exits and transfers (batch ``n``'s changes are dated ``2023-09-01`` + 7n days).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from .clever.generator import CleverStudent, GeneratedExport, generate_clever_export, object_id_for
from .edfi.generator import EdFiDataset, generate_edfi, write_edfi_export

if TYPE_CHECKING:
    from collections.abc import Mapping

CLEVER_START = date(2023, 9, 4)
UNMATCHED_PREFIX = "990"  # Ed-Fi's generated studentUniqueIds all start with 604


@dataclass(frozen=True)
class DistrictExport:
    """What ``generate_district`` wrote, and how its two exports match."""

    root: Path
    clever: GeneratedExport
    edfi: EdFiDataset
    edfi_files: tuple[str, ...]
    clever_schools: Mapping[str, int]  # clever_school_id -> Ed-Fi schoolId
    matched_sis_ids: tuple[str, ...]  # Clever students' sis_ids that are Ed-Fi studentUniqueIds
    unmatched_sis_ids: tuple[str, ...]  # Clever students' sis_ids that no Ed-Fi student has
    deactivated_students: int  # Clever students with a blank sis_id
    deleted_sis_ids: tuple[str, ...]  # matched, but deleted from Ed-Fi by its last batch
    unmatched_rows: Mapping[str, int]  # per Clever report: student rows whose sis_id is blank or unmatched


def generate_district(out_dir: str | Path, *, students: int = 24, staff: int = 6, schools: int = 2,
                      batches: int = 3, days: int = 20, seed: int = 7, history: bool = True,
                      quirks: bool = True) -> DistrictExport:
    """Write a matching Ed-Fi export (``<out_dir>/edfi``) and Clever export (``<out_dir>/clever``).

    ``students``, ``staff``, ``schools``, ``batches`` and ``history`` go to ``generate_edfi`` (history
    needs 3 batches or more); Clever gets the Ed-Fi students (see the module docstring), plus
    ``max(2, students // 20)`` unmatched and ``max(1, students // 40)`` deactivated students, ``staff``
    teachers and 2 staff, over ``days`` days from ``CLEVER_START``. Raises ValueError on bad counts.
    """
    root = Path(out_dir)
    dataset = generate_edfi(students=students, staff=staff, schools=schools, batches=batches, seed=seed,
                            history=history)
    edfi_files = tuple(write_edfi_export(dataset, root / "edfi", quirks=quirks))
    names = dataset.school_names(0)
    clever_ids = {school_id: object_id_for("clever-school", seed, school_id) for school_id in sorted(names)}
    last = len(dataset.batches) - 1
    matched = [(student_id, school_id) for student_id, school_id, first in dataset.roster()
               if first < last or last == 0]
    extra_schools = sorted(names)
    unmatched = [(f"{UNMATCHED_PREFIX}{i:04d}", extra_schools[i % len(extra_schools)])
                 for i in range(max(2, students // 20))]
    deactivated = [("", extra_schools[i % len(extra_schools)]) for i in range(max(1, students // 40))]
    roster = [CleverStudent(sis_id, clever_ids[school_id], names[school_id])
              for sis_id, school_id in matched + unmatched + deactivated]
    clever = generate_clever_export(root / "clever", students=roster, teachers=staff, staff=2, days=days,
                                    start=CLEVER_START, seed=seed, quirks=quirks)
    deleted = dataset.deleted_students()
    return DistrictExport(
        root=root, clever=clever, edfi=dataset, edfi_files=edfi_files,
        clever_schools={clever_id: school_id for school_id, clever_id in clever_ids.items()},
        matched_sis_ids=tuple(s for s, _ in matched), unmatched_sis_ids=tuple(s for s, _ in unmatched),
        deactivated_students=len(deactivated), deleted_sis_ids=tuple(s for s, _ in matched if s in deleted),
        unmatched_rows=_unmatched_rows(clever, {s for s, _ in matched}))


def _unmatched_rows(export: GeneratedExport, matched: set[str]) -> dict[str, int]:
    """Per report, the students' rows whose ``sis_id`` is blank or not in ``matched`` (read back from the files)."""
    counts: dict[str, int] = {}
    for path in export.files:
        report = path.parent.name
        counts.setdefault(report, 0)
        if path.name.endswith("-students.csv"):
            with open(path, encoding="utf-8-sig", newline="") as handle:
                counts[report] += sum(1 for row in csv.DictReader(handle) if row["sis_id"] not in matched)
    return counts
