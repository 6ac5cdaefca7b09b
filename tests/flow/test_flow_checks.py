"""Check parameters are bound by type, never spliced: hostile values are refused, at validate time or at run time."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest
from test_flow_run import flow_file

from oea_core.errors import OEAError
from oea_core.flow import FlowError, FlowRun, load_flow
from oea_core.flow.checks import check_problems, render_check

REPO = Path(__file__).resolve().parents[2]
DQ = REPO / "flows" / "dq"
INJECTION = "2099-01-01' AND FALSE AND 'a' = '"
BASE = {"stage": "stage2p", "source": "demo", "table": "t"}


def check_flow(tmp_path, sql: str, params: dict, pipeline: str = "name: t") -> Path:
    body = f"""\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - name: noop
                kind: python
                callable: "oea_testing.flow_helpers:record"
                parameters: {{marker: x}}
                checks:
                  - {{name: c, sql: {sql}, params: {json.dumps(params)}}}
    """
    return flow_file(tmp_path, body, pipeline=pipeline)


def test_the_reported_injection_is_refused_when_the_flow_is_validated(tmp_path):
    path = check_flow(tmp_path, DQ / "date_range.sql", {**BASE, "column": "d", "min": INJECTION, "max": "2030-12-31"})
    with pytest.raises(FlowError) as info:
        load_flow(path)
    (problem,) = info.value.problems
    assert f"flow.yaml:13: step noop.checks[0]: params.min: {INJECTION!r} is not a date: give YYYY-MM-DD" in problem
    assert "date_range.sql" in problem


@pytest.mark.parametrize("sql, params, problem", [
    ("not_null.sql", {"column": "d` IS NULL OR TRUE OR `d"}, "params.column: 'd` IS NULL OR TRUE OR `d' is not a column"),
    ("not_null.sql", {"column": "first name"}, "params.column: 'first name' is not a column name"),
    ("not_null.sql", {"column": "1st"}, "params.column: '1st' is not a column name"),
    ("not_null.sql", {"column": ""}, "params.column: '' is not a column name"),
    ("not_null.sql", {"column": ["d"]}, "params.column: ['d'] is not a column name"),
    ("unique.sql", {"keys": "id"}, "params.keys: 'id' is not a list of column names"),
    ("unique.sql", {"keys": []}, "params.keys: [] is not a list of column names"),
    ("unique.sql", {"keys": ["id", "x`) --"]}, "params.keys: 'x`) --' is not a column name"),
    ("row_count.sql", {"min_rows": "1 OR 1=1"}, "params.min_rows: '1 OR 1=1' is not a number"),
    ("row_count.sql", {"min_rows": "0; DROP TABLE t"}, "params.min_rows: '0; DROP TABLE t' is not a number"),
    ("row_count.sql", {"min_rows": True}, "params.min_rows: True is not a number"),
    ("date_range.sql", {"column": "d", "min": "2024-02-30", "max": "2030-12-31"}, "params.min: '2024-02-30' is not"),
    ("date_range.sql", {"column": "d", "min": "2020-01-01", "max": "2030-12-31 OR 1=1"}, "params.max: '2030-12-31"),
    ("date_range.sql", {"column": "d", "min": 20200101, "max": "2030-12-31"}, "params.min: 20200101 is not a date"),
    ("date_range.sql", {"column": "d", "min": "2020-01-01T00:00", "max": "2030-12-31"}, "params.min: '2020-01-01T0"),
    ("referential.sql", {"column": "k", "parent": "p", "parent_column": "k'--"}, "params.parent_column: \"k'--\""),
    ("referential.sql", {"column": "k", "parent": "../../stage2np/x/y"}, "params.parent: table '../../stage2np/x/y'"),
    ("no_raw_identifiers.sql", {"column": "k", "lookup": "lk", "raw": "raw` OR 1=1 --"}, "params.raw: 'raw` OR"),
    ("not_null.sql", {"column": "d", "table": "t; DROP"}, "params.table: table 't; DROP' is not a valid lake name"),
    ("not_null.sql", {"column": "d", "stage": "stage9"}, "params.stage: unknown stage 'stage9'"),
])
def test_hostile_parameter_values_are_refused_at_validate_time(tmp_path, sql, params, problem):
    with pytest.raises(FlowError) as info:
        load_flow(check_flow(tmp_path, DQ / sql, {**BASE, **params}))
    assert len(info.value.problems) == 1 and problem in info.value.problems[0], info.value.problems


def test_shipped_checks_with_good_values_and_templated_values_validate(tmp_path):
    for sql, params in [("date_range.sql", {"column": "d", "min": "2020-01-01", "max": "2030-12-31"}),
                        ("unique.sql", {"keys": ["a", "b_2"]}), ("row_count.sql", {"min_rows": 5}),
                        ("date_range.sql", {"column": "d", "min": "{{ first_day }}", "max": "2030-12-31"})]:
        load_flow(check_flow(tmp_path, DQ / sql, {**BASE, **params}))


def test_a_check_sql_that_splices_a_parameter_raw_is_refused(tmp_path):
    (tmp_path / "raw.sql").write_text("SELECT COUNT(*) AS count FROM {{ delta(stage, source, table) }} "
                                      "WHERE d < DATE '{{ min }}'")
    with pytest.raises(FlowError, match=r"renders \{\{ min \}\} without a type filter"):
        load_flow(check_flow(tmp_path, tmp_path / "raw.sql", {**BASE, "min": "2020-01-01"}))
    with pytest.raises(OEAError, match="would be spliced into the SQL as it is"):
        render_check("SELECT '{{ v }}'", {"v": INJECTION})


def test_values_become_typed_bound_parameters():
    sql, args = render_check(
        "SELECT {{ c | ident }}, {{ keys | idents }} WHERE d < {{ day | date }} AND n >= {{ n | number }} "
        "AND s = {{ s | text }} AND r < {{ r | number }}",
        {"c": "col_1", "keys": ["a", "B"], "day": "2024-02-29", "n": "12", "s": "it's \\' OR 1=1 --", "r": 0.5})
    assert sql == "SELECT `col_1`, `a`, `B` WHERE d < :p1 AND n >= :p2 AND s = :p3 AND r < :p4"
    assert args == {"p1": dt.date(2024, 2, 29), "p2": 12, "p3": "it's \\' OR 1=1 --", "p4": 0.5}
    assert check_problems("{{ x | date }}", {"x": dt.date(2024, 1, 1)}) == []  # an unquoted YAML date
    (problem,) = check_problems("{{ x | date }}", {"x": INJECTION})
    assert problem == f"params.x: {INJECTION!r} is not a date: give YYYY-MM-DD"


@pytest.mark.spark
def test_an_injected_date_from_a_variable_fails_the_step_and_bound_values_match_exactly(tmp_path, lake, spark,
                                                                                       engine):
    from oea_core.delta import delta_store

    hostile = "it's \\' OR 'a' = 'a"
    frame = spark.createDataFrame([("1999-05-01", hostile), ("2024-01-01", "plain")], "d string, s string")
    delta_store(spark).write(frame.selectExpr("CAST(d AS date) AS d", "s"), lake.table("stage2p", "demo", "t"))
    # the variable is rendered at run time, after validation: the filter refuses it when the check runs
    path = check_flow(tmp_path, DQ / "date_range.sql", {**BASE, "column": "d", "min": "{{ first_day }}",
                                                        "max": "2030-12-31"},
                      pipeline=f"name: t\n  variables: {{first_day: {json.dumps(INJECTION)}}}")
    with pytest.raises(FlowError, match=r"check c \(.*date_range.sql\): .*is not a date: give YYYY-MM-DD"):
        FlowRun(load_flow(path), lake, batch_id="v1", spark=spark).run()
    # the same check with a real date counts the 1999 row, as it did when the value was spliced
    path = check_flow(tmp_path, DQ / "date_range.sql", {**BASE, "column": "d", "min": "{{ first_day }}",
                                                        "max": "2030-12-31"},
                      pipeline="name: t\n  variables: {first_day: \"2020-01-01\"}")
    with pytest.raises(FlowError, match=r"data-quality check failed: c \(1 offending\)"):
        FlowRun(load_flow(path), lake, batch_id="v2", spark=spark).run()
    # text is bound, not quoted: quotes and backslashes match exactly the row that holds them
    (tmp_path / "text.sql").write_text(textwrap.dedent("""\
        SELECT COUNT(*) AS count FROM {{ delta(stage, source, table) }} WHERE {{ column | ident }} = {{ value | text }}
        """))
    path = check_flow(tmp_path, tmp_path / "text.sql", {**BASE, "column": "s", "value": hostile})
    with pytest.raises(FlowError, match=r"data-quality check failed: c \(1 offending\)"):  # spliced: 2
        FlowRun(load_flow(path), lake, batch_id="v3", spark=spark).run()
