"""Data-quality checks of the gold layer: each counts offending rows (0 = the check passes).

Vault: hub and link keys are unique; no link row is orphaned (every hub key it names is in the hub);
no satellite row is orphaned; a satellite has one row per key and load. Star: surrogate keys are
unique; each key of an SCD2 dimension has at most one current row, ``is_current`` is exactly "open"
(``valid_to`` = 9999-12-31), and no two validity ranges of a key overlap nor does one end before it
starts; an enrollment's entry date is on or before its exit date; every fact's foreign keys resolve
to a dimension row. A key deleted at its source has no current row (its last row is closed).

The same checks run as SQL in a flow through ``flows/dq/*.sql`` (``unique.sql``, ``referential.sql``,
``scd2_current.sql``, ``scd2_ranges.sql``, ``date_order.sql``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DataQualityError
from .facts import SCHOOL_KEY, STUDENT_KEY
from .model import GOLD_STAGE, LOAD_TS, STAR, VAULT, VAULT_LOADS, Hub, Link, Satellite
from .scd import END_OF_TIME, IS_CURRENT, VALID_FROM, VALID_TO
from .star import DATE_KEY

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pyspark.sql import DataFrame

    from ..delta import DeltaStore
    from ..paths import LakePaths


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


@dataclass(frozen=True)
class Check:
    """A named check over lake tables (``stage3p/<area>/<table>``); ``run`` gets them in ``tables`` order."""

    name: str
    area: str
    tables: tuple[str, ...]
    run: Callable[..., int]


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
    return checks


def _star_checks() -> list[Check]:
    checks = []
    for dim, hk, sk in (("dim_student", "student_hk", STUDENT_KEY), ("dim_school", "school_hk", SCHOOL_KEY)):
        checks += [Check(f"{dim}_keys_unique", STAR, (dim,), lambda df, sk=sk: duplicate_keys(df, [sk])),
                   Check(f"{dim}_current_rows", STAR, (dim,), lambda df, hk=hk: current_row_problems(df, hk)),
                   Check(f"{dim}_ranges", STAR, (dim,), lambda df, hk=hk: range_problems(df, hk))]
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


VAULT_CHECKS = tuple(_vault_checks())
STAR_CHECKS = tuple(_star_checks())


def run_checks(store: DeltaStore, lake: LakePaths, checks: Sequence[Check]) -> dict[str, int]:
    """Each check's count of offending rows; a check whose tables do not all exist is left out."""
    results = {}
    for check in checks:
        paths = [lake.table(GOLD_STAGE, check.area, table) for table in check.tables]
        if all(store.exists(p) for p in paths):
            results[check.name] = check.run(*[store.read(p) for p in paths])
    return results


def raise_on_failures(results: dict[str, int], where: str) -> None:
    """Raise DataQualityError listing every check with offending rows."""
    failed = {name: count for name, count in results.items() if count}
    if failed:
        listed = ", ".join(f"{name}: {count}" for name, count in sorted(failed.items()))
        raise DataQualityError(f"{where}: data-quality checks found offending rows ({listed}); the tables are "
                               f"written; see docs/gold.md for what each check means", failed=failed)
