"""The star schema's dimensions (``stage3p/star/``) and the lookups facts use to reach them.

- ``dim_student`` and ``dim_school``: SCD type 2 (:mod:`.scd`) over the vault's latest satellite
  rows, surrogate keys ``student_key`` and ``school_key``; each holds an unknown member (key ``-1``,
  hash key all zeros, current, valid for all time).
- ``dim_section``: SCD type 1 over ``stage2p/edfi/sections`` (``section_key``).
- ``dim_date``: one row per day (``date_key`` = ``yyyymmdd``) of every calendar year a fact
  touches, plus ``-1`` for "no date" (an enrollment not exited). Rows are only ever added.

A fact reaches an SCD2 dimension *as of the fact's date*: the version with the latest ``valid_from``
on or before that date, else (a date before the key's first version) its first version; a key the
dimension does not hold gets ``-1``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .changes import plan_append
from .keys import UNKNOWN_HASH_KEY, UNKNOWN_KEY, date_key_column
from .model import GOLD_STAGE, STAR, Hub, Satellite
from .scd import END_OF_TIME, HASHDIFF, IS_CURRENT, IS_DELETED, VALID_FROM, VALID_TO
from .vault import latest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import DataFrame, SparkSession

    from ..delta import DeltaStore, WriteResult
    from ..lake.paths import LakePaths
    from .changes import Pending

BEGINNING_OF_TIME = dt.date(1900, 1, 1)
NO_DATE_KEY = -1
DATE_KEY = "date_key"


def star_app_id(table: str, batch_id: str) -> str:
    return f"oea.gold/star/{table}/{batch_id}"


def star_path(lake: LakePaths, table: str) -> str:
    return lake.table(GOLD_STAGE, STAR, table)


def current_attributes(hub: DataFrame, satellite: DataFrame, hub_spec: Hub, sat_spec: Satellite) -> DataFrame:
    """``<hk>, <business key...>, <attributes...>`` of every key whose latest satellite row is not a deletion."""
    from pyspark.sql import functions as F

    hk = hub_spec.hash_key
    live = latest(satellite, hk).where(~F.col(IS_DELETED))
    return hub.select(hk, *hub_spec.business_key).join(live.select(hk, *sat_spec.attribute_names), hk, "inner")


def unknown_member(snapshot: DataFrame, key: str, surrogate: str, attributes: Sequence[str]) -> DataFrame:
    """The SCD2 row of the unknown member: surrogate key -1, text attributes ``'Unknown'``, valid for all time."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    values = []
    for name in attributes:
        data_type = snapshot.schema[name].dataType
        text = isinstance(data_type, StringType) and not name.endswith("_pseudonym")
        values.append((F.lit("Unknown") if text else F.lit(None)).cast(data_type).alias(name))
    return snapshot.sparkSession.range(1).select(
        F.lit(UNKNOWN_KEY).cast("bigint").alias(surrogate), F.lit(UNKNOWN_HASH_KEY).alias(key), *values,
        F.lit("").alias(HASHDIFF), F.lit(BEGINNING_OF_TIME).alias(VALID_FROM), F.lit(END_OF_TIME).alias(VALID_TO),
        F.lit(True).alias(IS_CURRENT))


def as_of_key(facts: DataFrame, fact_key: Sequence[str], hash_key: str, day: str, dimension: DataFrame,
              dimension_hash_key: str, surrogate: str, out: str) -> DataFrame:
    """``facts`` with ``out``: the surrogate key of the dimension version in force on ``day`` (see the module)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    versions = dimension.where(F.col(surrogate) >= 0).select(
        F.col(dimension_hash_key).alias("_dim_hk"), F.col(VALID_FROM).alias("_vf"), F.col(surrogate).alias("_sk"))
    joined = facts.join(versions, facts[hash_key] == versions["_dim_hk"], "left")
    covered = F.col("_vf") <= F.col(day)
    window = Window.partitionBy(*fact_key).orderBy(covered.desc_nulls_last(),
                                                   F.when(covered, F.col("_vf")).desc_nulls_last(),
                                                   F.col("_vf").asc_nulls_last())
    return (joined.withColumn("_n", F.row_number().over(window)).where(F.col("_n") == 1)
            .withColumn(out, F.coalesce(F.col("_sk"), F.lit(UNKNOWN_KEY).cast("bigint")))
            .drop("_dim_hk", "_vf", "_sk", "_n"))


def date_rows(spark: SparkSession, first: dt.date, last: dt.date) -> DataFrame:
    """``dim_date`` rows for every day of the calendar years from ``first`` to ``last``, plus the "no date" row.

    ``school_year`` is the year a school year ends in (July to June, as Ed-Fi's ``schoolYear``).
    """
    from pyspark.sql import functions as F

    start, end = dt.date(first.year, 1, 1), dt.date(last.year, 12, 31)
    days = spark.range(1).select(F.explode(F.sequence(F.lit(start), F.lit(end))).alias("date"))
    d = F.col("date")
    rows = days.select(
        date_key_column(d).alias(DATE_KEY), d, F.year(d).alias("year"), F.quarter(d).alias("quarter"),
        F.month(d).alias("month"), F.date_format(d, "MMMM").alias("month_name"), F.dayofmonth(d).alias("day"),
        F.dayofweek(d).alias("day_of_week"), F.date_format(d, "EEEE").alias("day_name"),
        F.dayofweek(d).isin(1, 7).alias("is_weekend"),
        (F.year(d) + F.when(F.month(d) >= 7, 1).otherwise(0)).alias("school_year"))
    none = spark.range(1).select(*[
        (F.lit(NO_DATE_KEY) if f.name == DATE_KEY else F.lit("No date") if f.name in ("month_name", "day_name")
         else F.lit(None)).cast(f.dataType).alias(f.name) for f in rows.schema.fields])
    return rows.unionByName(none)


def write_dim_date(store: DeltaStore, lake: LakePaths, dates: Sequence[dt.date | None], batch_id: str) -> WriteResult:
    """Add the days of the years ``dates`` span (and the "no date" row) that ``dim_date`` lacks."""
    return plan_dim_date(store, lake, dates, batch_id).commit()


def plan_dim_date(store: DeltaStore, lake: LakePaths, dates: Sequence[dt.date | None], batch_id: str) -> Pending:
    """:func:`write_dim_date`, not yet committed."""
    path = star_path(lake, "dim_date")
    known = [d for d in dates if d is not None]
    first, last = (min(known), max(known)) if known else (dt.date.today(), dt.date.today())
    rows = date_rows(store.spark, first, last)
    if store.exists(path):
        rows = rows.join(store.read(path).select(DATE_KEY), DATE_KEY, "left_anti")
    return plan_append(store, path, rows, app_id=star_app_id("dim_date", batch_id), metadata={"batch_id": batch_id})
