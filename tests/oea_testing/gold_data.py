"""Small stage2p tables (Ed-Fi and Clever, pseudonymized with the test salt) for the gold layer's tests."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from oea_core.privacy.pseudonymize import pseudonym
from oea_testing import TEST_SALT

RAW_STUDENTS = ("S-1001", "S-1002", "S-1003")
UNKNOWN_RAW = "S-9999"  # in Clever only
D = dt.date


def pseudo(raw: str | None) -> str | None:
    return pseudonym(raw, TEST_SALT)


DDL = {
    "students": "id_pseudonym string, studentUniqueId_pseudonym string, firstName string, birthSexDescriptor string, "
                "birthCountryDescriptor string, birthStateAbbreviationDescriptor string, "
                "citizenshipStatusDescriptor string, multipleBirthStatus boolean",
    "schools": "id string, schoolId int, nameOfInstitution string, shortNameOfInstitution string, "
               "schoolTypeDescriptor string, operationalStatusDescriptor string, charterStatusDescriptor string, "
               "localEducationAgencyId int",
    "sections": "id string, sectionIdentifier string, localCourseCode string, schoolId int, schoolYear int, "
                "sessionName string, sectionName string, classroomIdentificationCode string, "
                "educationalEnvironmentDescriptor string, availableCredits decimal(9,3)",
    "student_school_associations": "id_pseudonym string, studentUniqueId_pseudonym string, schoolId int, "
                                   "entryDate date, exitWithdrawDate date, entryGradeLevelDescriptor string, "
                                   "entryTypeDescriptor string, exitWithdrawTypeDescriptor string, "
                                   "primarySchool boolean, schoolYear int",
    "student_section_associations": "id_pseudonym string, studentUniqueId_pseudonym string, localCourseCode string, "
                                    "schoolId int, schoolYear int, sectionIdentifier string, sessionName string, "
                                    "beginDate date, endDate date",
    "student_school_attendance_events": "id_pseudonym string, studentUniqueId_pseudonym string, schoolId int, "
                                        "schoolYear int, sessionName string, eventDate date, "
                                        "attendanceEventCategoryDescriptor string, eventDuration decimal(3,2)",
    "daily_participation_pseudo": "date date, sis_id_pseudonym string, clever_user_id_pseudonym string, "
                                  "clever_school_id string, school_name string, active boolean, num_logins int, "
                                  "num_resources_accessed int, role string, year int, month int",
    "resource_usage_pseudo": "date date, sis_id_pseudonym string, clever_user_id_pseudonym string, "
                             "clever_school_id string, school_name string, resource_type string, "
                             "resource_name string, resource_id string, num_access int, role string, year int, "
                             "month int",
}


def student(raw: str, sex: str) -> tuple:
    return (pseudo("id-" + raw), pseudo(raw), "*", sex, "US", "TX", "Citizen", False)


def school(school_id: int, name: str) -> tuple:
    return (f"sch{school_id}", school_id, name, name[:3], "Regular", "Active", "Not a charter", 255901)


def enrollment(raw: str, school_id: int, entry: dt.date, exit_: dt.date | None = None) -> tuple:
    return (pseudo(f"ssa-{raw}-{school_id}"), pseudo(raw), school_id, entry, exit_, "Ninth grade", "Transfer",
            "Graduated" if exit_ else None, True, 2024)


@dataclass(frozen=True)
class EdFiState:
    """One batch's current state of the Ed-Fi tables the gold layer reads."""

    students: tuple = (student("S-1001", "Female"), student("S-1002", "Male"), student("S-1003", "Female"))
    schools: tuple = (school(101, "Lincoln Elementary"), school(102, "Adams Middle"))
    sections: tuple = (("sec1", "MATH-1", "ALG1", 101, 2024, "Fall", "Algebra I", "R12", "Classroom",
                        Decimal("1.000")),)
    student_school_associations: tuple = (
        enrollment("S-1001", 101, D(2023, 8, 21)), enrollment("S-1002", 101, D(2023, 8, 21), D(2024, 1, 15)),
        enrollment("S-1002", 102, D(2024, 1, 16)), enrollment("S-1003", 102, D(2023, 8, 21)))
    student_section_associations: tuple = (
        (pseudo("ssec-1"), pseudo("S-1001"), "ALG1", 101, 2024, "MATH-1", "Fall", D(2023, 8, 21), None),)
    student_school_attendance_events: tuple = (
        (pseudo("att-1"), pseudo("S-1001"), 101, 2024, "Fall", D(2023, 9, 5), "Unexcused Absence", None),
        (pseudo("att-2"), pseudo("S-1003"), 102, 2024, "Fall", D(2023, 9, 6), "Tardy", None))
    clever: dict = field(default_factory=lambda: {
        "daily_participation_pseudo": [
            (D(2023, 9, 5), pseudo("S-1001"), pseudo("c1"), "cs1", "Lincoln", True, 2, 3, "students", 2023, 9),
            (D(2023, 9, 5), pseudo(UNKNOWN_RAW), pseudo("c9"), "cs1", "Lincoln", True, 1, 1, "students", 2023, 9),
            (D(2023, 9, 5), None, pseudo("c8"), "cs1", "Lincoln", False, 0, 0, "students", 2023, 9),
            (D(2023, 9, 5), pseudo("T-1"), pseudo("t1"), "cs1", "Lincoln", True, 5, 5, "teachers", 2023, 9)],
        "resource_usage_pseudo": [
            (D(2023, 9, 5), pseudo("S-1001"), pseudo("c1"), "cs1", "Lincoln", "app", "Khan", "r1", 4, "students",
             2023, 9)]})

    def but(self, **changes: object) -> EdFiState:
        return replace(self, **changes)


def write_state(spark, store, lake, state: EdFiState) -> None:
    """Overwrite the stage2p tables with ``state`` (as a refine that found changes would)."""
    for table, ddl in DDL.items():
        if table in state.clever:
            rows, source = state.clever[table], "clever"
        else:
            rows, source = getattr(state, table), "edfi"
        store.write(spark.createDataFrame(list(rows), ddl), lake.table("stage2p", source, table),
                    mode="overwrite")


@dataclass(frozen=True)
class SmallGold:
    """One small lake's gold build (``EdFiState()``, batch b1, delta-rs): the lake as it was right after the
    vault's build (``vault_root``) and after the star's (``root``), and each build's result."""

    vault_root: Path
    root: Path
    vault: object  # GoldResult
    star: object


def build_small_gold(spark, folder: Path) -> SmallGold:
    """Write ``EdFiState()`` and build the vault (load_ts 2024-01-01 06:00 UTC) and the star (2023-08-01) for
    batch b1, keeping a copy of the lake between the two builds. Read-only: tests copy what they change."""
    from oea_core import LakePaths
    from oea_core.delta import DeltaRsStore
    from oea_core.gold import build_star, build_vault

    rs = DeltaRsStore(spark)
    lake = LakePaths.from_setting(folder / "lake")
    write_state(spark, rs, lake, EdFiState())
    vault = build_vault(lake, "b1", load_ts=dt.datetime(2024, 1, 1, 6, tzinfo=dt.timezone.utc), store=rs)
    shutil.copytree(str(lake.root), folder / "vault-lake")
    star = build_star(lake, "b1", effective_date="2023-08-01", store=rs)
    return SmallGold(folder / "vault-lake", Path(str(lake.root)), vault, star)


PARTIAL_TABLES = ("students", "schools", "student_school_associations")  # what OEA's own Ed-Fi test set has


def write_partial(spark, store, lake, state: EdFiState) -> None:
    """Write only the Ed-Fi tables of an export holding students, schools and their enrollments."""
    for table in PARTIAL_TABLES:
        store.write(spark.createDataFrame(list(getattr(state, table)), DDL[table]),
                    lake.table("stage2p", "edfi", table), mode="overwrite")


def fails_its_checks(context: dict) -> int:
    """A flow python step whose data fails a gold check (deterministic: retrying cannot help)."""
    from oea_core.errors import DataQualityError

    path = os.path.join(os.path.dirname(context["run_dir"]), "dq.count")
    count = int(Path(path).read_text()) if os.path.exists(path) else 0
    with open(path, "w") as handle:
        handle.write(str(count + 1))
    raise DataQualityError("star batch b1: data-quality checks found offending rows (x: 1)", failed={"x": 1})
