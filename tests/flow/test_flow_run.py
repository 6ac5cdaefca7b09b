"""Running flows: retries, skip-on-failure, checkpoints, selection, batch ids, templates, checks, notifications."""

from __future__ import annotations

import json
import re
import textwrap
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from oea_core.flow import FlowError, FlowRun, RunLog, load_flow

REPO = Path(__file__).resolve().parents[2]
DQ = REPO / "flows" / "dq"


def flow_file(tmp_path, body: str, pipeline: str = "name: t\n  default_retry: {attempts: 1, delay: 0}") -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(f"pipeline:\n  {pipeline}\n" + textwrap.dedent(body), encoding="utf-8")
    return path


def calls(lake) -> list[dict]:
    path = Path(lake.state_path("runs")) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def statuses(log: dict) -> dict:
    return {name: step["status"] for name, step in log["steps"].items()}


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


BRANCHES = """\
    stages:
      - name: s
        groups:
          - name: g
            parallel: true
            steps:
              - {name: a, kind: python, callable: "oea_testing.flow_helpers:flaky", parameters: {marker: a, failures: FAILS},
                 retry: {attempts: 2, delay: 7}}
              - {name: b, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: b}, depends_on: a}
              - {name: c, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: c}}
              - {name: d, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: d}, depends_on: b}
    """


def test_retries_then_succeeds_without_real_sleeping(tmp_path, lake):
    sleeps = Sleeps()
    log = FlowRun(load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "1"))), lake, batch_id="b1",
                  sleep=sleeps).run()
    assert statuses(log) == {"a": "success", "b": "success", "c": "success", "d": "success"}
    assert log["steps"]["a"]["attempts"] == 2 and sleeps == [7.0]
    assert log["steps"]["b"]["attempts"] == 1


def test_failure_skips_dependents_finishes_independent_steps_and_resumes(tmp_path, lake):
    flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "3")))
    sleeps = Sleeps()
    with pytest.raises(FlowError) as info:
        FlowRun(flow, lake, batch_id="b1", sleep=sleeps).run()
    message = str(info.value)
    assert "a: RuntimeError: a failed on call 2" in message and "skipped: b, d" in message
    assert "--batch-id b1" in message
    log = json.loads((Path(lake.state_path("runs", "b1")) / "run_log.json").read_text())
    assert statuses(log) == {"a": "failed", "b": "skipped", "c": "success", "d": "skipped"}
    assert log["status"] == "failed" and log["steps"]["a"]["attempts"] == 2 and sleeps == [7.0]
    assert [c["marker"] for c in calls(lake)] == ["c"]  # b and d never ran
    # resume: a now succeeds on its third call; c is not run again
    log = FlowRun(flow, lake, batch_id="b1", sleep=sleeps).run()
    assert statuses(log) == {"a": "success", "b": "success", "c": "cached", "d": "success"}
    assert [c["marker"] for c in calls(lake)] == ["c", "a", "b", "d"]
    # everything done: nothing runs again
    assert set(statuses(FlowRun(flow, lake, batch_id="b1").run()).values()) == {"cached"}
    assert len(calls(lake)) == 4


def test_from_and_only_rerun_selected_steps(tmp_path, lake):
    flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "0")))
    FlowRun(flow, lake, batch_id="b1").run()
    assert sorted(c["marker"] for c in calls(lake)) == ["a", "b", "c", "d"]
    log = FlowRun(flow, lake, batch_id="b1").run(from_step="b")
    assert statuses(log) == {"a": "cached", "b": "success", "c": "cached", "d": "success"}
    assert [c["marker"] for c in calls(lake)[4:]] == ["b", "d"]
    log = FlowRun(flow, lake, batch_id="b1").run(only="c")
    assert statuses(log)["c"] == "success"
    assert [c["marker"] for c in calls(lake)[6:]] == ["c"]
    with pytest.raises(FlowError, match="no step 'zz'"):
        FlowRun(flow, lake, batch_id="b1").run(only="zz")


def test_batch_id_given_then_from_flow_then_timestamp_and_same_for_every_step(tmp_path, lake):
    body = BRANCHES.replace("FAILS", "0")
    FlowRun(load_flow(flow_file(tmp_path, body)), lake, batch_id="given-1").run()
    assert {c["batch_id"] for c in calls(lake)} == {"given-1"}
    flow = load_flow(flow_file(tmp_path, body, pipeline="name: t\n  batch_id: from-flow"))
    assert FlowRun(flow, lake).batch_id == "from-flow"
    run = FlowRun(load_flow(flow_file(tmp_path, body)), lake)
    assert re.match(r"^\d{8}T\d{12}Z$", run.batch_id)
    run.run()
    assert {c["batch_id"] for c in calls(lake)[4:]} == {run.batch_id}


def test_templates_render_and_a_missing_variable_names_step_and_variable(tmp_path, lake):
    body = """\
    stages:
      - name: load
        groups:
          - name: g
            steps:
              - name: good
                kind: python
                callable: "oea_testing.flow_helpers:record"
                parameters: {marker: "{{ base_path }}/{{ stage.name }}/{{ name }}/{{ batch_id }}/{{ where }}"}
              - name: bad
                kind: python
                callable: "oea_testing.flow_helpers:record"
                parameters: {marker: "{{ stage.name }}/{{ colour }}"}
    """
    flow = load_flow(flow_file(tmp_path, body, pipeline="name: t\n  variables: {where: \"{{ stage.name }}-x\"}"))
    with pytest.raises(FlowError) as info:
        FlowRun(flow, lake, batch_id="b9").run()
    assert calls(lake)[0]["marker"] == f"{lake.root}/load/good/b9/load-x"
    assert "step bad: template variable 'colour' is not defined" in str(info.value)


def test_sql_step_writes_delta_and_checks_protect_downstream(tmp_path, lake, spark):
    (tmp_path / "summary.sql").write_text(
        "SELECT school, COUNT(*) AS n, MAX(day) AS last_day FROM visits GROUP BY school -- {{ name }} {{ batch_id }}")
    body = f"""\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - name: seed
                kind: python
                callable: "oea_testing.flow_helpers:make_table"
                parameters:
                  stage: stage2p
                  source: demo
                  table: visits
                  schema: "school string, day date, student string"
                  rows: [[A, "2024-01-02", "x1"], [A, "2024-01-03", null], [B, "2031-01-01", "x3"]]
              - name: summarise
                kind: sql
                sql: summary.sql
                inputs: {{visits: stage2p/demo/visits}}
                output: {{stage: stage3p, source: demo, table: "{{{{ name }}}}"}}
                checks:
                  - {{name: rows, sql: {DQ}/row_count.sql, params: {{stage: stage3p, source: demo, table: summarise,
                     min_rows: 2}}}}
                  - {{name: dates, sql: {DQ}/date_range.sql, severity: warn,
                     params: {{stage: stage2p, source: demo, table: visits, column: day, min: "2020-01-01",
                              max: "2030-12-31"}}}}
                  - {{name: student_not_null, sql: {DQ}/not_null.sql,
                     params: {{stage: stage2p, source: demo, table: visits, column: student}}}}
              - {{name: after, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {{marker: after}}}}
    """
    flow = load_flow(flow_file(tmp_path, body))
    run = FlowRun(flow, lake, batch_id="b1", spark=spark)
    with pytest.raises(FlowError, match="data-quality check failed: student_not_null \\(1 offending\\)"):
        run.run()
    log = json.loads((Path(run.folder) / "run_log.json").read_text())
    assert statuses(log) == {"seed": "success", "summarise": "failed", "after": "skipped"}
    checks = {c["name"]: c for c in log["steps"]["summarise"]["checks"]}
    assert checks["rows"]["passed"] and checks["dates"] == {"name": "dates", "severity": "warn", "value": 1,
                                                             "max": 0, "passed": False}
    assert log["steps"]["summarise"]["rows"] == 2
    written = run.spark.read.parquet(*__import__("deltalake").DeltaTable(
        lake.table("stage3p", "demo", "summarise")).file_uris())
    assert sorted((r["school"], r["n"]) for r in written.collect()) == [("A", 2), ("B", 1)]
    assert "x1" not in json.dumps(log)  # offending rows are counted, never copied into the log


@pytest.mark.parametrize("check, params, bad_rows, value", [
    ("row_count.sql", {"min_rows": 1}, [], 1),
    ("not_null.sql", {"column": "k"}, [[None, 1], ["a", 2]], 1),
    ("date_range.sql", {"column": "d", "min": "2020-01-01", "max": "2030-12-31"}, [["a", 1, "1999-05-01"]], 1),
    ("unique.sql", {"keys": ["k"]}, [["a", 1], ["a", 2], ["b", 3]], 1),
    ("referential.sql", {"column": "k", "parent": "parent"}, [["a", 1], ["zz", 2]], 1),
    ("no_raw_identifiers.sql", {"column": "k"}, [["a", 1], ["f" * 64, 2]], 1),
    ("no_raw_identifiers.sql", {"column": "k", "lookup": "lk", "raw": "raw", "lookup_stage": "stage2np"},
     [["e" * 64, 1]], 1),
])
def test_each_shipped_check_fails_on_bad_data_and_passes_on_good(tmp_path, lake, spark, check, params, bad_rows,
                                                                   value):
    from oea_core.delta import delta_store

    store = delta_store(spark)
    store.write(spark.createDataFrame([("a",)], "k string"), lake.table("stage2p", "demo", "parent"))
    store.write(spark.createDataFrame([("e" * 64,)], "raw string"), lake.table("stage2np", "demo", "lk"))
    good = [["d" * 64, 1]] if "no_raw" in check else [["a", 1]]
    results = []
    for rows in (bad_rows, good):
        rows = [(*r, "2024-01-01")[:3] for r in rows]
        frame = spark.createDataFrame(rows, "k string, n int, d string").selectExpr("k", "n", "CAST(d AS date) AS d")
        store.write(frame, lake.table("stage2p", "demo", "t"), mode="overwrite")
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
                      - {{name: c, sql: {DQ / check}, severity: warn, params: {json.dumps(
                          {"stage": "stage2p", "source": "demo", "table": "t", **params})}}}
        """
        log = FlowRun(load_flow(flow_file(tmp_path, body)), lake, spark=spark).run()
        results.append(log["steps"]["noop"]["checks"][0]["value"])
    assert results == [value, 0]


class Receiver(BaseHTTPRequestHandler):
    received: typing.ClassVar[list] = []

    def do_POST(self):
        Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_and_command_notifications(tmp_path, lake):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        marker = tmp_path / "done.txt"
        pipeline = (f"name: t\n  notifications: {{on_failure: {{webhook: \"{url}\"}}, "
                    f"on_success: {{command: \"echo $OEA_FLOW_STATUS $OEA_FLOW_BATCH_ID > {marker}\"}}}}")
        flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "5"), pipeline=pipeline))
        with pytest.raises(FlowError):
            FlowRun(flow, lake, batch_id="n1", sleep=lambda s: None).run()
        payload = Receiver.received[-1]
        assert payload["status"] == "failed" and payload["batch_id"] == "n1" and "a" in payload["failed"]
        assert payload["skipped"] == ["b", "d"] and payload["steps"]["c"] == "success"
        flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "0"), pipeline=pipeline))
        FlowRun(flow, lake, batch_id="n2").run()
        assert marker.read_text().split() == ["success", "n2"]
    finally:
        server.shutdown()


def test_graph_is_drawn_and_coloured_by_the_run(tmp_path, lake):
    from oea_core.flow.graph import COLOURS, draw

    flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "9")))
    with pytest.raises(FlowError):
        FlowRun(flow, lake, batch_id="g1", sleep=lambda s: None).run()
    run = RunLog.latest(lake.state_path("runs"), "t")
    svg, png = draw(flow, str(tmp_path / "graphs"), run)
    text = Path(svg).read_text()
    assert "batch g1: failed" in text
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert COLOURS["failed"] in text and COLOURS["skipped"] in text and COLOURS["success"] in text
    assert text.count("<title>a&#45;&gt;b</title>") == 1  # the a -> b edge


def test_a_second_run_of_a_flow_stops_while_the_first_holds_its_lake_lock(tmp_path, lake):
    import subprocess
    import sys

    from oea_core import LakeLockError

    code = ("import time\nfrom oea_core import LakePaths\nfrom oea_core.lake.lock import lake_lock\n"
            f"with lake_lock(LakePaths.from_setting({lake.root!r}), 'flow-t', 'flow t'):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    first = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "0")))
        with pytest.raises(LakeLockError, match=rf"^flow t already running since .*pid {first.pid}\)"):
            FlowRun(flow, lake, batch_id="b1", sleep=Sleeps()).run()
        assert calls(lake) == [], "no step ran"
    finally:
        first.kill()
        first.wait()
    log = FlowRun(flow, lake, batch_id="b1", sleep=Sleeps()).run()  # the killed holder's lock is taken over
    assert set(statuses(log).values()) == {"success"}
