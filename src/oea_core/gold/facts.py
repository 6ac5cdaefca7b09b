"""The star schema's facts (``stage3p/star/``), as pure transforms over the vault, stage2p and the dimensions.

- ``fact_enrollment``: one row per live enrollment (``link_enrollment`` and its latest
  ``sat_enrollment`` row), student x school, with entry and exit dates (exit ``-1`` when none).
- ``fact_attendance``: one row per attendance event of ``stage2p/edfi/student_school_attendance_events``
  (a day, a student, a school), ``is_absent`` when its category is an absence.
- ``fact_digital_activity``: the students' rows of Clever's ``daily_participation_pseudo`` and
  ``resource_usage_pseudo``, one per student, day, Clever school and resource (``activity_type``
  tells which report). ``sis_id_pseudonym`` meets ``studentUniqueId_pseudonym`` (one salt); a row whose
  student is not in ``dim_student`` keeps student key ``-1``. Clever names its own schools, so the
  school is the one the student was enrolled in on that day (the latest entry), else ``-1``.

Student and school keys are looked up as of the fact's date (:func:`.star.as_of_key`); every fact has a
``date_key``; facts with a date are partitioned by its ``year`` and ``month``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .keys import date_key_column, hash_key_column
from .model import CLEVER_STUDENT_ID, HUB_SCHOOL, HUB_STUDENT, LINK_ENROLLMENT, SAT_ENROLLMENT, STUDENT_ID
from .scd import IS_DELETED
from .star import DATE_KEY, NO_DATE_KEY, as_of_key
from .vault import latest, require_columns

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

STUDENT_KEY = "student_key"
SCHOOL_KEY = "school_key"
ACTIVITY_KEY = "activity_key"
PARTITIONS = ("year", "month")
_STUDENT_HK, _SCHOOL_HK = HUB_STUDENT.hash_key, HUB_SCHOOL.hash_key


def _optional(df: DataFrame, name: str, sql_type: str) -> Column:
    from pyspark.sql import functions as F

    return (F.col(name) if name in df.columns else F.lit(None)).cast(sql_type).alias(name)


def _with_keys(facts: DataFrame, fact_key: str, day: str, dim_student: DataFrame, dim_school: DataFrame) -> DataFrame:
    facts = as_of_key(facts, [fact_key], _STUDENT_HK, day, dim_student, _STUDENT_HK, "student_key", STUDENT_KEY)
    return as_of_key(facts, [fact_key], _SCHOOL_HK, day, dim_school, _SCHOOL_HK, "school_key", SCHOOL_KEY)


def enrollments(link: DataFrame, satellite: DataFrame) -> DataFrame:
    """``enrollment_hk, student_hk, school_hk, entryDate`` and the latest attributes of every live enrollment."""
    from pyspark.sql import functions as F

    hk = LINK_ENROLLMENT.hash_key
    live = latest(satellite, hk).where(~F.col(IS_DELETED)).select(hk, *SAT_ENROLLMENT.attribute_names)
    return link.select(hk, _STUDENT_HK, _SCHOOL_HK, "entryDate").join(live, hk, "inner")


def fact_enrollment(spans: DataFrame, dim_student: DataFrame, dim_school: DataFrame) -> DataFrame:
    """One row per live enrollment, keyed by ``enrollment_hk``; dimensions as of the entry date."""
    from pyspark.sql import functions as F

    hk = LINK_ENROLLMENT.hash_key
    keyed = _with_keys(spans, hk, "entryDate", dim_student, dim_school)
    return keyed.select(
        hk, STUDENT_KEY, SCHOOL_KEY, date_key_column(F.col("entryDate")).alias("entry_date_key"),
        F.coalesce(date_key_column(F.col("exitWithdrawDate")), F.lit(NO_DATE_KEY)).alias("exit_date_key"),
        "entryDate", "exitWithdrawDate", "entryGradeLevelDescriptor", "entryTypeDescriptor",
        "exitWithdrawTypeDescriptor", "primarySchool", "schoolYear")


def fact_attendance(events: DataFrame, dim_student: DataFrame, dim_school: DataFrame,
                    table: str = "student_school_attendance_events") -> DataFrame:
    """One row per attendance event, keyed by ``attendance_event_id`` (the event's pseudonymized id)."""
    from pyspark.sql import functions as F

    require_columns(events, ("id_pseudonym", STUDENT_ID, "schoolId", "eventDate",
                             "attendanceEventCategoryDescriptor"), table)
    rows = events.select(
        F.col("id_pseudonym").alias("attendance_event_id"), hash_key_column(F.col(STUDENT_ID)).alias(_STUDENT_HK),
        hash_key_column(F.col("schoolId")).alias(_SCHOOL_HK), "eventDate", "attendanceEventCategoryDescriptor",
        _optional(events, "eventDuration", "decimal(3,2)"), _optional(events, "schoolYear", "int"),
        _optional(events, "sessionName", "string")).where(F.col("attendance_event_id").isNotNull())
    keyed = _with_keys(rows, "attendance_event_id", "eventDate", dim_student, dim_school)
    category = F.lower(F.col("attendanceEventCategoryDescriptor"))
    return keyed.select(
        "attendance_event_id", STUDENT_KEY, SCHOOL_KEY, date_key_column(F.col("eventDate")).alias(DATE_KEY),
        "eventDate", "attendanceEventCategoryDescriptor", F.coalesce(category.contains("absence"), F.lit(False))
        .alias("is_absent"), "eventDuration", "schoolYear", "sessionName",
        F.year("eventDate").alias("year"), F.month("eventDate").alias("month"))


def clever_activity(participation: DataFrame | None, usage: DataFrame | None) -> DataFrame | None:
    """The students' rows of both Clever reports in one shape, summed per student, day, school and resource."""
    from pyspark.sql import functions as F

    shaped = []
    for report, df in (("participation", participation), ("resource_usage", usage)):
        if df is None:
            continue
        require_columns(df, ("date", CLEVER_STUDENT_ID, "clever_user_id_pseudonym", "clever_school_id"),
                        f"stage2p/clever/{report}")
        if "role" in df.columns:
            df = df.where(F.col("role") == "students")
        shaped.append(df.select(
            F.lit(report).alias("activity_type"), "date", CLEVER_STUDENT_ID, "clever_user_id_pseudonym",
            F.col("clever_school_id").cast("string").alias("clever_school_id"), _optional(df, "school_name", "string"),
            _optional(df, "resource_type", "string"), _optional(df, "resource_name", "string"),
            _optional(df, "resource_id", "string"), _optional(df, "active", "boolean"),
            _optional(df, "num_logins", "int"), _optional(df, "num_resources_accessed", "int"),
            _optional(df, "num_access", "int")))
    if not shaped:
        return None
    rows = shaped[0] if len(shaped) == 1 else shaped[0].unionByName(shaped[1])
    grain = ["activity_type", "date", CLEVER_STUDENT_ID, "clever_user_id_pseudonym", "clever_school_id",
             "resource_id"]
    return rows.groupBy(*grain).agg(
        F.max("school_name").alias("school_name"), F.max("resource_type").alias("resource_type"),
        F.max("resource_name").alias("resource_name"), F.max("active").alias("active"),
        F.sum("num_logins").cast("int").alias("num_logins"),
        F.sum("num_resources_accessed").cast("int").alias("num_resources_accessed"),
        F.sum("num_access").cast("int").alias("num_access")).withColumn(
        ACTIVITY_KEY, hash_key_column(*[F.col(c) for c in grain]))


def school_on_day(facts: DataFrame, fact_key: str, day: str, spans: DataFrame) -> DataFrame:
    """``facts`` with ``school_hk``: the school of the student's enrollment on ``day`` (the latest entry)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    enrolled = spans.select(F.col(_STUDENT_HK).alias("_e_student"), F.col(_SCHOOL_HK).alias("_e_school"),
                            F.col("entryDate").alias("_entry"), F.col("exitWithdrawDate").alias("_exit"))
    during = ((facts[_STUDENT_HK] == F.col("_e_student")) & (F.col("_entry") <= F.col(day))
              & (F.col("_exit").isNull() | (F.col(day) <= F.col("_exit"))))
    window = Window.partitionBy(fact_key).orderBy(F.col("_entry").desc_nulls_last(), F.col("_e_school"))
    return (facts.join(enrolled, during, "left").withColumn("_n", F.row_number().over(window))
            .where(F.col("_n") == 1).withColumnRenamed("_e_school", _SCHOOL_HK)
            .drop("_e_student", "_entry", "_exit", "_n"))


def fact_digital_activity(activity: DataFrame, spans: DataFrame, dim_student: DataFrame,
                          dim_school: DataFrame) -> DataFrame:
    """One row per student, day, Clever school and resource, keyed by ``activity_key``; unknown students ``-1``."""
    from pyspark.sql import functions as F

    rows = activity.withColumn(_STUDENT_HK, hash_key_column(F.col(CLEVER_STUDENT_ID)))
    rows = school_on_day(rows, ACTIVITY_KEY, "date", spans)
    keyed = _with_keys(rows, ACTIVITY_KEY, "date", dim_student, dim_school)
    return keyed.select(
        ACTIVITY_KEY, STUDENT_KEY, SCHOOL_KEY, date_key_column(F.col("date")).alias(DATE_KEY), "date",
        "activity_type", CLEVER_STUDENT_ID, "clever_user_id_pseudonym", "clever_school_id", "school_name",
        "resource_type", "resource_name", "resource_id", "active", "num_logins", "num_resources_accessed",
        "num_access", F.year("date").alias("year"), F.month("date").alias("month"))
