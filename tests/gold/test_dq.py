"""The gold layer's data-quality checks: each passes on good data and counts the rows made to break it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from oea_core.errors import DataQualityError
from oea_core.flow.checks import Sql, check_problems, render_check
from oea_core.gold import END_OF_TIME
from oea_core.gold.dq import (
    current_row_problems,
    dates_out_of_order,
    duplicate_keys,
    orphans,
    raise_on_failures,
    range_problems,
)

DQ = Path(__file__).resolve().parents[2] / "flows" / "dq"
D1, D2, D3, END = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1), END_OF_TIME
SCD2 = "k string, valid_from date, valid_to date, is_current boolean"
GOOD_HISTORY = [("a", D1, D2, False), ("a", D2, END, True), ("b", D1, D3, False)]


def keys_unique(spark, rows):
    return duplicate_keys(spark.createDataFrame(rows, "k string"), ["k"])


def links_resolve(spark, rows):
    hub = spark.createDataFrame([("x",)], "hk string")
    return orphans(spark.createDataFrame(rows, "student_hk string"), "student_hk", hub, "hk")


def one_current_row(spark, rows):
    return current_row_problems(spark.createDataFrame(rows, SCD2), "k")


def ranges(spark, rows):
    return range_problems(spark.createDataFrame(rows, SCD2), "k")


def entry_before_exit(spark, rows):
    return dates_out_of_order(spark.createDataFrame(rows, "entry date, exit date"), "entry", "exit")


@pytest.mark.parametrize(("check", "good", "bad", "offending"), [
    (keys_unique, [("a",), ("b",)], [("a",), ("a",), ("b",)], 1),
    (links_resolve, [("x",), (None,)], [("x",), ("y",), ("z",)], 2),
    (one_current_row, GOOD_HISTORY, [("a", D1, END, True), ("a", D2, END, True)], 1),
    (one_current_row, GOOD_HISTORY, [("a", D1, D2, True), ("a", D2, END, False)], 2),  # flags not "open"
    (ranges, GOOD_HISTORY + [("c", D1, D1, False)], [("a", D1, D3, False), ("a", D2, END, True)], 1),  # overlap
    (ranges, GOOD_HISTORY, [("a", D2, D1, False)], 1),  # ends before it starts
    (entry_before_exit, [(D1, D2), (D1, D1), (D1, None)], [(D2, D1), (D1, D2)], 1),
], ids=["keys_unique", "orphans", "two_current_rows", "current_flag", "overlap", "reversed_range", "entry_exit"])
def test_a_check_passes_on_good_data_and_counts_the_offending_rows(spark, check, good, bad, offending):
    assert check(spark, good) == 0
    assert check(spark, bad) == offending


def test_failed_checks_raise_one_error_naming_each_with_its_count():
    raise_on_failures({"hub_student_keys_unique": 0}, "vault batch b1")
    with pytest.raises(DataQualityError, match=r"vault batch b1: .*\(fact_a_resolves: 2, hub_x_keys_unique: 1\)") as err:
        raise_on_failures({"hub_x_keys_unique": 1, "fact_a_resolves": 2, "ok": 0}, "vault batch b1")
    assert err.value.failed == {"hub_x_keys_unique": 1, "fact_a_resolves": 2}


@pytest.mark.parametrize(("sql", "params"), [
    ("scd2_current.sql", {"key": "student_hk"}),
    ("scd2_ranges.sql", {"key": "school_hk"}),
    ("date_order.sql", {"start_column": "entryDate", "end_column": "exitWithdrawDate"}),
])
def test_the_flow_sql_versions_of_the_gold_checks_are_valid_check_templates(sql, params):
    template = (DQ / sql).read_text(encoding="utf-8")
    assert check_problems(template, {"stage": "stage3p", "source": "star", "table": "dim_student", **params}) == []
    assert check_problems(template, {"stage": "stage3p", "source": "star", "table": "t", **{
        name: "x` OR TRUE --" for name in params}})


@pytest.mark.parametrize(("sql", "params", "schema", "good", "bad", "offending"), [
    ("scd2_current.sql", {"key": "k"}, SCD2, GOOD_HISTORY, [("a", D1, END, True), ("a", D2, END, True),
                                                            ("b", D1, D2, True)], 2),
    ("scd2_ranges.sql", {"key": "k"}, SCD2, GOOD_HISTORY, [("a", D1, D3, False), ("a", D2, END, True)], 1),
    ("date_order.sql", {"start_column": "entry", "end_column": "exit"}, "entry date, exit date",
     [(D1, D2), (D1, None)], [(D2, D1)], 1),
])
def test_the_flow_sql_checks_count_what_the_python_checks_count(spark, sql, params, schema, good, bad, offending):
    template = (DQ / sql).read_text(encoding="utf-8")
    counts = []
    for rows in (good, bad):
        spark.createDataFrame(rows, schema).createOrReplaceTempView("gold_check_input")
        text, args = render_check(template, {"stage": "stage3p", "source": "star", "table": "t", **params,
                                             "delta": lambda *_: Sql("gold_check_input")})
        counts.append(spark.sql(text, args=args).first()["count"])
    assert counts == [0, offending]
