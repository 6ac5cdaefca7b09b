"""The star schema built from the vault: facts join to dimensions as of their date, Clever meets Ed-Fi."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from oea_core.delta import DeltaRsStore
from oea_core.gold import STAR_CHECKS, build_star, build_vault, hash_key, run_checks, surrogate_key
from oea_core.gold.model import STAR_TABLES
from oea_testing.gold_data import RAW_STUDENTS, EdFiState, pseudo, school, student, write_state

D = dt.date
T1, T2, T3 = (dt.datetime(2024, 1, day, 6, tzinfo=dt.timezone.utc) for day in (1, 2, 3))
FIRST, SECOND = D(2023, 8, 1), D(2023, 9, 1)


@pytest.fixture
def rs(spark):
    return DeltaRsStore(spark)


def star(store, lake, table):
    return store.read(lake.table("stage3p", "star", table)).collect()


def student_key(raw, valid_from=FIRST):
    return surrogate_key(hash_key(pseudo(raw)), valid_from)


def school_key(school_id, valid_from=FIRST):
    return surrogate_key(hash_key(school_id), valid_from)


def test_facts_join_to_dimensions_and_clever_rows_without_a_student_stay_under_the_unknown_key(spark, rs,
                                                                                              small_gold, gold_lake):
    # small_gold's build: write_state(EdFiState()), build_vault(b1, load_ts=T1), build_star(b1, "2023-08-01")
    lake, result = gold_lake, small_gold.star
    assert result.checks and not any(result.checks.values()), result.checks
    assert result.unknown_students == 2  # an unknown sis_id and a blank one; the teacher's row is not a student's
    commit = rs.last_commit(lake.table("stage3p", "star", "fact_digital_activity"))
    assert json.loads(commit["userMetadata"]) == {"batch_id": "b1", "unknown_students": 2}
    students = {r.student_key: r for r in star(rs, lake, "dim_student")}
    assert set(students) == {-1, *(student_key(raw) for raw in RAW_STUDENTS)}
    assert students[-1].is_current and students[-1].birthSexDescriptor == "Unknown"
    assert sorted((r.student_key, r.school_key, r.entry_date_key, r.exit_date_key)
                  for r in star(rs, lake, "fact_enrollment")) == sorted([
        (student_key("S-1001"), school_key(101), 20230821, -1),
        (student_key("S-1002"), school_key(101), 20230821, 20240115),
        (student_key("S-1002"), school_key(102), 20240116, -1),
        (student_key("S-1003"), school_key(102), 20230821, -1)])
    assert sorted((r.student_key, r.school_key, r.date_key, r.is_absent) for r in star(rs, lake, "fact_attendance")) \
        == sorted([(student_key("S-1001"), school_key(101), 20230905, True),
                   (student_key("S-1003"), school_key(102), 20230906, False)])
    activity = sorted((r.activity_type, r.student_key, r.school_key, r.num_logins, r.num_access)
                      for r in star(rs, lake, "fact_digital_activity"))
    assert activity == sorted([("participation", student_key("S-1001"), school_key(101), 2, None),
                               ("participation", -1, -1, 1, None), ("participation", -1, -1, 0, None),
                               ("resource_usage", student_key("S-1001"), school_key(101), None, 4)])
    dates = {r.date_key: r for r in star(rs, lake, "dim_date")}
    assert dates[20230905].school_year == 2024 and dates[-1].date is None and len(dates) == 365 + 366 + 1

    # the checks run on the lake's tables: a fact whose student is not a dimension row, a key current twice
    def append(table, row, **changes):
        path = lake.table("stage3p", "star", table)
        rs.write(spark.createDataFrame([row.asDict() | changes], rs.schema(path)), path)

    append("fact_enrollment", star(rs, lake, "fact_enrollment")[0], enrollment_hk="f" * 64, student_key=12345)
    append("dim_student", students[student_key("S-1002")], student_key=54321)
    failed = {name: count for name, count in run_checks(rs, lake, STAR_CHECKS).items() if count}
    assert failed == {"fact_enrollment_student_key_resolves": 1, "dim_student_current_rows": 1,
                      "dim_student_ranges": 1, "dim_student_natural_key_unique": 1}


def test_facts_take_the_dimension_version_of_their_date_and_reruns_or_unchanged_batches_write_nothing(spark, rs,
                                                                                                     lake):
    state = EdFiState()
    write_state(spark, rs, lake, state)
    build_vault(lake, "b1", load_ts=T1, store=rs, checks=False)
    build_star(lake, "b1", effective_date=FIRST, store=rs, checks=False)
    changed = state.but(students=(student("S-1001", "Male"), student("S-1002", "Male")),  # S-1003 deleted
                        schools=(school(101, "Lincoln High"), school(102, "Adams Middle")),
                        student_school_associations=state.student_school_associations[:3],
                        student_school_attendance_events=state.student_school_attendance_events[:1])
    write_state(spark, rs, lake, changed)
    build_vault(lake, "b2", load_ts=T2, store=rs)
    result = build_star(lake, "b2", effective_date=SECOND, store=rs)
    assert not any(result.checks.values()), result.checks
    touched = {t: (r.inserted, r.updated, r.deleted) for t, r in result.tables.items()}
    assert touched["dim_student"] == (1, 2, 0)  # S-1001 closed and opened, S-1003 closed
    assert touched["fact_enrollment"] == (0, 0, 1)  # only the changed keys: S-1003's enrollment
    assert touched["fact_attendance"] == (0, 1, 1)  # S-1001's absence re-keyed, S-1003's event gone
    history = sorted((r.birthSexDescriptor, r.valid_from, r.valid_to, r.is_current)
                     for r in star(rs, lake, "dim_student") if r.studentUniqueId_pseudonym == pseudo("S-1001"))
    assert history == [("Female", FIRST, SECOND, False), ("Male", SECOND, D(9999, 12, 31), True)]
    gone = [r for r in star(rs, lake, "dim_student") if r.studentUniqueId_pseudonym == pseudo("S-1003")]
    assert [(r.valid_to, r.is_current) for r in gone] == [(SECOND, False)]
    enrollments = star(rs, lake, "fact_enrollment")  # entered before the change: the first versions
    assert sorted((r.student_key, r.school_key) for r in enrollments) == sorted([
        (student_key("S-1001"), school_key(101)), (student_key("S-1002"), school_key(101)),
        (student_key("S-1002"), school_key(102))])
    (absence,) = star(rs, lake, "fact_attendance")  # on 2023-09-05, after the change: the second versions
    assert (absence.student_key, absence.school_key) == (student_key("S-1001", SECOND), school_key(101, SECOND))
    versions = {t: rs.version(lake.table("stage3p", "star", t)) for t in STAR_TABLES}
    assert build_star(lake, "b2", effective_date=SECOND, store=rs).rows == 0  # a rerun
    build_vault(lake, "b3", load_ts=T3, store=rs)
    assert build_star(lake, "b3", effective_date=D(2023, 10, 1), store=rs).rows == 0  # nothing changed
    assert {t: rs.version(lake.table("stage3p", "star", t)) for t in STAR_TABLES} == versions
