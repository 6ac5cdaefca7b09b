"""Flow files: every kind of problem reported together with its line; dependencies expanded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from oea_core.flow import FlowError, load_flow
from oea_core.flow.spec import DEFAULT_TIMEOUT

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_problem_is_reported_together_with_its_line(tmp_path):
    path = write(tmp_path, """\
        pipeline:
          name: broken
          colour: blue
          default_retry: {attempts: 0, delay: -1}
        stages:
          - name: one
            groups:
              - name: g
                steps:
                  - name: a
                    kind: notebook
                    notebook: missing.ipynb
                  - name: a
                    kind: python
                    callable: oea_testing.flow_helpers:record
                  - name: b
                    kind: python
                    callable: oea_testing.flow_helpers:record
                    depends_on: [nowhere, c]
                    retry: {attempts: two}
                  - name: c
                    kind: python
                    callable: oea_testing.flow_helpers:nope
                    depends_on: b
                  - name: d
                    kind: shell
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    problems = "\n".join(info.value.problems)
    expected = [
        (3, "unknown key 'colour'"),
        (4, "attempts must be a whole number of at least 1, not 0"),
        (4, "delay must be seconds"),
        (12, "file 'missing.ipynb' does not exist"),
        (13, "duplicate step name 'a'"),
        (19, "unknown dependency 'nowhere'"),
        (20, "attempts must be a whole number of at least 1, not 'two'"),
        (23, "oea_testing.flow_helpers has no function 'nope'"),
        (26, "kind must be one of notebook, sql, python, not 'shell'"),
    ]
    for line, text in expected:
        assert f"{path}:{line}:" in problems and text in problems, (line, text, problems)
    assert "dependency cycle: b -> c -> b" in problems or "dependency cycle: c -> b -> c" in problems
    assert len(info.value.problems) >= len(expected) + 1


def test_dependencies_expand_groups_stages_and_sequences(tmp_path):
    path = write(tmp_path, """\
        pipeline: {name: deps}
        stages:
          - name: first
            parallel: true
            groups:
              - name: seq
                steps:
                  - {name: s1, kind: python, callable: "oea_testing.flow_helpers:record"}
                  - {name: s2, kind: python, callable: "oea_testing.flow_helpers:record"}
              - name: par
                parallel: true
                steps:
                  - {name: p1, kind: python, callable: "oea_testing.flow_helpers:record"}
                  - {name: p2, kind: python, callable: "oea_testing.flow_helpers:record", depends_on: s1}
          - name: second
            groups:
              - name: last
                steps:
                  - {name: z, kind: python, callable: "oea_testing.flow_helpers:record"}
          - name: third
            depends_on: []
            groups:
              - name: free
                steps:
                  - {name: f, kind: python, callable: "oea_testing.flow_helpers:record", depends_on: par}
        """)
    flow = load_flow(path)
    deps = {name: step.depends_on for name, step in flow.steps.items()}
    assert deps == {"s1": set(), "s2": {"s1"}, "p1": set(), "p2": {"s1"}, "z": {"s1", "s2", "p1", "p2"},
                    "f": {"p1", "p2"}}
    assert flow.downstream("s1") == {"s1", "s2", "p2", "z", "f"}


@pytest.mark.parametrize("name", ["clever_flow.yaml", "edfi_flow.yaml", "gold_flow.yaml", "main_flow.yaml"])
def test_shipped_flows_validate(name):
    flow = load_flow(REPO / "flows" / name)
    assert flow.steps and all(s.checks or s.kind == "python" or s.name == "edfi_land" for s in flow.steps.values())


def test_the_main_flow_builds_the_gold_layer_after_the_modules_and_before_the_views():
    flow = load_flow(REPO / "flows" / "main_flow.yaml")
    modules = {"clever_ingestion", "edfi_land", "edfi_ingest", "edfi_refine"}
    assert flow.steps["build_vault"].depends_on == modules
    assert flow.steps["build_star"].depends_on == {"build_vault"}
    assert flow.steps["write_views"].depends_on == {"build_star"}
    assert flow.steps["build_star"].target == "oea_core.gold:build_star"
    assert flow.variables["effective_date"] == ""


def test_an_included_flow_brings_its_stages_folder_defaults_and_variables(tmp_path):
    (tmp_path / "gold").mkdir()
    (tmp_path / "gold" / "dq").mkdir()
    (tmp_path / "gold" / "dq" / "rows.sql").write_text("SELECT 0 AS count\n", encoding="utf-8")
    (tmp_path / "gold" / "inner.yaml").write_text(textwrap.dedent("""\
        pipeline:
          name: inner
          default_retry: {attempts: 4, delay_seconds: 3}
          variables: {day: "2026-01-05", shared: inner}
          stages:
            - name: in1
              groups:
                - name: ig
                  steps:
                    - {name: i1, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {day: "{{ day }}"},
                       checks: [{sql: dq/rows.sql}]}
            - name: in2
              groups: [{name: ig2, steps: [{name: i2, kind: python, callable: "oea_testing.flow_helpers:record"}]}]
        """), encoding="utf-8")
    flow = load_flow(write(tmp_path, """\
        pipeline:
          name: outer
          default_retry: {attempts: 1, delay: 0}
          variables: {shared: outer}
        stages:
          - name: first
            groups: [{name: g1, steps: [{name: a, kind: python, callable: "oea_testing.flow_helpers:record"}]}]
          - include: gold/inner.yaml
          - name: last
            groups: [{name: g3, steps: [{name: z, kind: python, callable: "oea_testing.flow_helpers:record"}]}]
        """))
    assert flow.stages == ["first", "in1", "in2", "last"]
    assert {n: s.depends_on for n, s in flow.steps.items()} == {"a": set(), "i1": {"a"}, "i2": {"i1"}, "z": {"i2"}}
    assert flow.steps["i1"].checks[0].sql == str(tmp_path / "gold" / "dq" / "rows.sql")  # the included file's folder
    assert (flow.steps["i1"].retry.attempts, flow.steps["i1"].retry.delay) == (4, 3)  # its own defaults
    assert flow.steps["z"].retry.attempts == 1
    assert flow.variables == {"shared": "outer", "day": "2026-01-05"}  # the including flow's value wins


def test_an_include_that_is_missing_or_a_cycle_or_broken_is_a_problem_with_its_line(tmp_path):
    (tmp_path / "loop.yaml").write_text("pipeline: {name: loop}\nstages:\n  - include: flow.yaml\n",
                                        encoding="utf-8")
    (tmp_path / "bad.yaml").write_text(textwrap.dedent("""\
        pipeline: {name: bad}
        stages:
          - name: s
            groups: [{name: g, steps: [{name: b, kind: python, callable: "oea_testing.flow_helpers:record", colour: red}]}]
        """), encoding="utf-8")
    path = write(tmp_path, """\
        pipeline: {name: outer}
        stages:
          - include: nowhere.yaml
          - include: loop.yaml
          - include: bad.yaml
          - {include: bad.yaml, name: twice}
        """)
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    problems = caught.value.problems
    assert any(p.startswith(f"{path}:3: stages[0].include: flow file ") and "nowhere.yaml does not exist" in p
               for p in problems)
    assert any(p.startswith(f"{tmp_path / 'loop.yaml'}:3: stages[0].include: flow.yaml includes itself")
               for p in problems)
    assert any(p.startswith(f"{tmp_path / 'bad.yaml'}:4: stages[0].groups[0].steps[0]: unknown key 'colour'")
               for p in problems)
    assert any(p.startswith(f"{path}:6: stages[3]: unknown key 'name'") for p in problems)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(FlowError, match="does not exist"):
        load_flow(tmp_path / "nope.yaml")
    with pytest.raises(FlowError, match="not valid YAML"):
        load_flow(write(tmp_path, "pipeline: [unclosed\n"))


@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("90", 90.0), ("2.5", 2.5), ("90s", 90.0), ("20m", 1200.0),
                                            ("1h30m", 5400.0), ("1h 30m 15s", 5415.0), ("2H", 7200.0)])
def test_a_timeout_is_seconds_or_a_duration_and_the_flow_sets_the_default(tmp_path, value, seconds):
    flow = load_flow(write(tmp_path, f"""\
        pipeline: {{name: t, default_timeout: {json.dumps(value)}}}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - {{name: own, kind: python, callable: "oea_testing.flow_helpers:record", timeout: 5m}}
                  - {{name: inherits, kind: python, callable: "oea_testing.flow_helpers:record"}}
        """))
    assert flow.timeout == flow.steps["inherits"].timeout == seconds and flow.steps["own"].timeout == 300.0
    unset = load_flow(write(tmp_path, "pipeline: {name: t}\nstages: [{name: s, groups: [{name: g, steps: [\n"
                                      "  {name: a, kind: python, callable: 'oea_testing.flow_helpers:record'}]}]}]\n"))
    assert unset.steps["a"].timeout == DEFAULT_TIMEOUT == 3600.0


@pytest.mark.parametrize("value", [0, -1, "0s", "soon", True, "inf", "nan", "1d", "", None, "-5"])
def test_a_timeout_that_is_not_a_positive_duration_is_refused_with_its_line(tmp_path, value):
    path = write(tmp_path, f"""\
        pipeline: {{name: t}}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - name: a
                    kind: python
                    callable: "oea_testing.flow_helpers:record"
                    timeout: {json.dumps(value)}
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:10: step a.timeout: timeout must be seconds (a number above 0) or a duration")


def test_a_value_of_the_wrong_shape_is_a_problem_with_its_line_not_a_crash(tmp_path):
    path = write(tmp_path, """\
        pipeline: [not, a, mapping]
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - {name: a, kind: python, callable: "oea_testing.flow_helpers:record", parameters: [x]}
                  - just text
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert info.value.problems == [
        f"{path}:1: pipeline: expected a mapping, got list",
        f"{path}:1: pipeline.name: give the pipeline a name (letters, digits, _ . -), not ''",
        f"{path}:7: step a.parameters: parameters must be a mapping",
        f"{path}:5: stages[0].groups[0].steps[1]: expected a mapping, got str"]
    variables = write(tmp_path, "pipeline: {name: v, variables: [a]}\nstages: [{name: s, groups: [{name: g, steps: [\n"
                                "  {name: a, kind: python, callable: 'oea_testing.flow_helpers:record'}]}]}]\n")
    with pytest.raises(FlowError, match=r"flow.yaml:1: pipeline.variables: variables must be a mapping"):
        load_flow(variables)


def test_a_stage_group_or_step_name_used_twice_is_a_problem_at_each_second_use(tmp_path):
    path = write(tmp_path, """\
        pipeline: {name: names}
        stages:
          - name: load
            groups:
              - name: g
                steps:
                  - {name: a, kind: python, callable: "oea_testing.flow_helpers:record"}
              - name: g
                steps:
                  - {name: b, kind: python, callable: "oea_testing.flow_helpers:record"}
          - name: load
            groups:
              - name: h
                steps:
                  - {name: a, kind: python, callable: "oea_testing.flow_helpers:record"}
                  - {name: h2, kind: python, callable: "oea_testing.flow_helpers:record"}
          - name: b
            groups:
              - name: k
                steps:
                  - {name: c, kind: python, callable: "oea_testing.flow_helpers:record"}
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    advice = "give each stage, group and step a name of its own (depends_on refers to them by name)"
    assert info.value.problems == [
        f"{path}:8: stages[0].groups[1]: duplicate group name 'g', already the name of the group at line 5; {advice}",
        f"{path}:11: stages[1]: duplicate stage name 'load', already the name of the stage at line 3; {advice}",
        (f"{path}:15: stages[1].groups[0].steps[0]: duplicate step name 'a', already the name of the step at line 7; "
         f"{advice}"),
        f"{path}:17: stages[2]: duplicate stage name 'b', already the name of the step at line 10; {advice}"]
