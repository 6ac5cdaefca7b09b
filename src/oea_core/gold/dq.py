"""Data-quality checks of the gold layer: each counts offending rows (0 = the check passes).

Vault: hub and link keys are unique; no link row is orphaned (every hub key it names is in the hub);
no satellite row is orphaned; a satellite has one row per key and load. Star: surrogate keys are
unique; each key of an SCD2 dimension has at most one current row, ``is_current`` is exactly "open"
(``valid_to`` = 9999-12-31), and no two validity ranges of a key overlap nor does one end before it
starts; an enrollment's entry date is on or before its exit date; every fact's foreign keys resolve
to a dimension row. A key deleted at its source has no current row (its last row is closed).
Natural keys are unique: in the source tables the vault is loaded from (two Ed-Fi records claiming one
``schoolId``), and among a dimension's current rows; required attributes (``nameOfInstitution``, an
enrollment's entry grade) are set.

The checks run on the tables as the build is about to leave them, before anything is committed: a
failed check commits nothing.

The same checks run as SQL in a flow through ``flows/dq/*.sql`` (``unique.sql``, ``referential.sql``,
``scd2_current.sql``, ``scd2_ranges.sql``, ``date_order.sql``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DataQualityError
from .facts import SCHOOL_KEY, STUDENT_KEY
from .keys import hash_key_column
from .model import (
    GOLD_STAGE,
    HUB_SCHOOL,
    HUB_SECTION,
    HUB_STUDENT,
    LOAD_TS,
    STAR,
    VAULT,
    VAULT_LOADS,
    Hub,
    Link,
    Satellite,
)
from .scd import END_OF_TIME, IS_CURRENT, IS_DELETED, VALID_FROM, VALID_TO
from .star import DATE_KEY

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pyspark.sql import DataFrame

    from ..delta import DeltaStore
    from ..lake.paths import LakePaths


def duplicate_keys(df: DataFrame, keys: Sequence[str]) -> int:
    """Key values held by more than one row."""
    from pyspark.sql import functions as F

    return df.groupBy(*keys).count().where(F.col("count") > 1).count()


def orphans(child: DataFrame, column: str, parent: DataFrame, parent_column: str | None = None) -> int:
    """Rows of ``child`` whose ``column`` is set but names no row of ``parent``."""
    from pyspark.sql import functions as F

    parents = parent.select(F.col(parent_column or column).alias("_parent")).distinct()
    refs = child.where(F.col(column).isNotNull())
    return refs.join(parents, refs[column] == parents["_parent"], "left_anti").count()


def current_row_problems(dimension: DataFrame, key: str) -> int:
    """Keys with more than one current row, plus rows whose ``is_current`` is not "``valid_to`` is open"."""
    from pyspark.sql import functions as F

    several = dimension.where(F.col(IS_CURRENT)).groupBy(key).count().where(F.col("count") > 1).count()
    open_row = F.col(VALID_TO) == F.lit(END_OF_TIME)
    return several + dimension.where(F.col(IS_CURRENT).isNull() | (F.col(IS_CURRENT) != open_row)).count()


def range_problems(dimension: DataFrame, key: str) -> int:
    """Rows that end before they start, or start before the previous range of their key ends (an overlap)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy(key).orderBy(VALID_FROM, VALID_TO)
    previous_end = F.lag(VALID_TO).over(window)
    return dimension.withColumn("_previous_end", previous_end).where(
        (F.col(VALID_FROM) > F.col(VALID_TO)) | (F.col("_previous_end") > F.col(VALID_FROM))).count()


def dates_out_of_order(df: DataFrame, start: str, end: str) -> int:
    """Rows whose ``start`` date is after their ``end`` date (a null end is open)."""
    from pyspark.sql import functions as F

    return df.where(F.col(end).isNotNull() & (F.col(start) > F.col(end))).count()


def current_duplicates(dimension: DataFrame, columns: Sequence[str], surrogate: str) -> int:
    """Natural-key values (``columns``) held by more than one current row (reserved members left out)."""
    from pyspark.sql import functions as F

    live = F.col(IS_CURRENT) if IS_CURRENT in dimension.columns else ~F.col(IS_DELETED)
    return duplicate_keys(dimension.where(live & (F.col(surrogate) >= 0)), columns)


def missing_values(df: DataFrame, column: str, where: str | None = None) -> int:
    """Rows (of those ``where`` selects) whose required ``column`` is null or blank."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    rows = df.where(where) if where else df
    value = F.col(column)
    blank = F.trim(value) == "" if isinstance(df.schema[column].dataType, StringType) else F.lit(False)
    return rows.where(value.isNull() | blank).count()


def source_duplicates(source: DataFrame, columns: Sequence[str]) -> int:
    """Natural keys held by more than one row of a source table (two records claiming one key)."""
    from pyspark.sql import functions as F

    keyed = source.select(hash_key_column(*[F.col(c) for c in columns]).alias("_key")).where(F.col("_key").isNotNull())
    return duplicate_keys(keyed, ["_key"])


@dataclass(frozen=True)
class Check:
    """A named check over lake tables (``stage3p/<area>/<table>``); ``run`` gets them in ``tables`` order."""

    name: str
    area: str
    tables: tuple[str, ...]
    run: Callable[..., int]
    source: str | None = None  # the tables are stage2p/<source>/<table>, not stage3p/<area>/<table>


def _vault_checks() -> list[Check]:
    checks = []
    for load in VAULT_LOADS:
        target = load.target
        if isinstance(target, (Hub, Link)):
            checks.append(Check(f"{target.table}_keys_unique", VAULT, (target.table,),
                                lambda df, hk=target.hash_key: duplicate_keys(df, [hk])))
        if isinstance(target, Link):
            for hub in target.hubs:
                checks.append(Check(f"{target.table}_{hub.table}_orphans", VAULT, (target.table, hub.table),
                                    lambda link, parent, hk=hub.hash_key: orphans(link, hk, parent)))
        if isinstance(target, Satellite):
            hk = target.parent.hash_key
            checks.append(Check(f"{target.table}_orphans", VAULT, (target.table, target.parent.table),
                                lambda sat, parent, hk=hk: orphans(sat, hk, parent)))
            checks.append(Check(f"{target.table}_rows_unique", VAULT, (target.table,),
                                lambda sat, hk=hk: duplicate_keys(sat, [hk, LOAD_TS])))
            checks.append(Check(f"{target.table}_source_keys_unique", VAULT, load.tables[:1],
                                lambda src, key=target.parent.key_columns: source_duplicates(src, key),
                                source=load.source))
    return checks


def _star_checks() -> list[Check]:
    checks = []
    for dim, hk, sk in (("dim_student", "student_hk", STUDENT_KEY), ("dim_school", "school_hk", SCHOOL_KEY)):
        checks += [Check(f"{dim}_keys_unique", STAR, (dim,), lambda df, sk=sk: duplicate_keys(df, [sk])),
                   Check(f"{dim}_current_rows", STAR, (dim,), lambda df, hk=hk: current_row_problems(df, hk)),
                   Check(f"{dim}_ranges", STAR, (dim,), lambda df, hk=hk: range_problems(df, hk))]
    for dim, hub, sk in (("dim_student", HUB_STUDENT, STUDENT_KEY), ("dim_school", HUB_SCHOOL, SCHOOL_KEY),
                         ("dim_section", HUB_SECTION, "section_key")):
        checks.append(Check(f"{dim}_natural_key_unique", STAR, (dim,),
                            lambda df, key=hub.business_key, sk=sk: current_duplicates(df, key, sk)))
    for table, column, where in REQUIRED:
        checks.append(Check(f"{table}_{column}_required", STAR, (table,),
                            lambda df, column=column, where=where: missing_values(df, column, where)))
    checks += [Check("dim_section_keys_unique", STAR, ("dim_section",), lambda df: duplicate_keys(df, ["section_key"])),
               Check("dim_date_keys_unique", STAR, ("dim_date",), lambda df: duplicate_keys(df, [DATE_KEY])),
               Check("fact_enrollment_entry_before_exit", STAR, ("fact_enrollment",),
                     lambda df: dates_out_of_order(df, "entryDate", "exitWithdrawDate"))]
    foreign = {"fact_enrollment": (("entry_date_key", "dim_date", DATE_KEY), ("exit_date_key", "dim_date", DATE_KEY)),
               "fact_attendance": (("date_key", "dim_date", DATE_KEY),),
               "fact_digital_activity": (("date_key", "dim_date", DATE_KEY),)}
    for fact, dates in foreign.items():
        for column, dim, key in ((STUDENT_KEY, "dim_student", STUDENT_KEY), (SCHOOL_KEY, "dim_school", SCHOOL_KEY),
                                 *dates):
            checks.append(Check(f"{fact}_{column}_resolves", STAR, (fact, dim),
                                lambda f, d, column=column, key=key: orphans(f, column, d, key)))
    return checks


# Attributes Ed-Fi requires (School.nameOfInstitution, StudentSchoolAssociation.entryGradeLevelDescriptor),
# on the rows the check reads (current, not the unknown member).
REQUIRED = (("dim_school", "nameOfInstitution", f"{IS_CURRENT} AND {SCHOOL_KEY} >= 0"),
            ("fact_enrollment", "entryDate", None), ("fact_enrollment", "entryGradeLevelDescriptor", None))
VAULT_CHECKS = tuple(_vault_checks())
STAR_CHECKS = tuple(_star_checks())


def run_checks(store: DeltaStore, lake: LakePaths, checks: Sequence[Check],
               tables: Mapping[str, DataFrame] | None = None) -> dict[str, int]:
    """Each check's count of offending rows, on ``tables`` (a gold table as the build will leave it, by
    name) where given, else on the lake's tables; a check whose tables do not all exist is left out."""
    results = {}
    for check in checks:
        frames = [_table(store, lake, check, table, tables or {}) for table in check.tables]
        if all(frame is not None for frame in frames):
            results[check.name] = check.run(*frames)
    return results


def _table(store: DeltaStore, lake: LakePaths, check: Check, table: str,
           tables: Mapping[str, DataFrame]) -> DataFrame | None:
    if check.source is None and table in tables:
        return tables[table]
    path = (lake.table("stage2p", check.source, table) if check.source
            else lake.table(GOLD_STAGE, check.area, table))
    return store.read(path) if store.exists(path) else None


def raise_on_failures(results: dict[str, int], where: str) -> None:
    """Raise DataQualityError listing every check with offending rows (nothing was committed)."""
    failed = {name: count for name, count in results.items() if count}
    if failed:
        listed = ", ".join(f"{name}: {count}" for name, count in sorted(failed.items()))
        raise DataQualityError(f"{where}: data-quality checks found offending rows ({listed}); nothing was "
                               f"written, the tables are as they were: fix the data at its source and run "
                               f"again; see docs/gold.md for what each check means", failed=failed)
