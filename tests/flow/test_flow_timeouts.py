"""Step timeouts: a hung step of each kind is killed (with all it started), fails naming the timeout, and is retried."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from test_flow_run import Sleeps, calls, flow_file, statuses

from oea_core.flow import FlowError, FlowRun, load_flow
from oea_core.flow.process import wait_gone


def pids(lake, marker: str) -> list[int]:
    """Every pid the hung step wrote, attempt by attempt: its own and its grandchild's."""
    path = Path(lake.state_path("runs")) / f"{marker}.pids"
    return [int(p) for line in path.read_text().splitlines() for p in line.split()] if path.exists() else []


def test_a_hung_python_step_is_killed_with_all_it_started_and_retried(tmp_path, lake):
    body = """\
    stages:
      - name: s
        groups:
          - name: g
            parallel: true
            steps:
              - {name: hang, kind: python, callable: "oea_testing.flow_helpers:hang", parameters: {marker: hang},
                 retry: {attempts: 2, delay: 0}}
              - {name: after, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: after},
                 depends_on: hang}
              - {name: quick, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: quick},
                 timeout: 1m}
    """
    flow = load_flow(flow_file(tmp_path, body, pipeline="name: t\n  default_timeout: 2s"))
    assert flow.steps["hang"].timeout == 2.0 and flow.steps["quick"].timeout == 60.0
    sleeps, begin = Sleeps(), time.monotonic()
    with pytest.raises(FlowError, match=r"hang: StepTimeout: step hang timed out after 2 s \(attempt 2 of 2\); its "
                                        r"process and all it started were killed.*skipped: after"):
        FlowRun(flow, lake, batch_id="h1", sleep=sleeps).run()
    assert time.monotonic() - begin < 60
    started = pids(lake, "hang")
    assert len(started) == 4, "two attempts, each a worker and its grandchild"
    assert wait_gone(set(started), 10.0) == set(), "a process of the hung step outlived its timeout"
    log = json.loads((Path(lake.state_path("runs", "h1")) / "run_log.json").read_text())
    assert statuses(log) == {"hang": "failed", "after": "skipped", "quick": "success"}
    assert log["steps"]["hang"]["attempts"] == 2 and sleeps == [0.0] and log["steps"]["hang"]["timeout"] == 2.0
    assert [c["marker"] for c in calls(lake)] == ["quick"]


def test_a_step_timeout_counts_from_when_its_worker_has_the_step_not_from_python_starting(tmp_path, lake):
    # loading Python and oea_core takes about 2 s here (more on a busy machine): not the step's time
    body = """\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - {name: quick, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: quick},
                 timeout: 1s}
    """
    log = FlowRun(load_flow(flow_file(tmp_path, body)), lake, batch_id="t1").run()
    assert statuses(log) == {"quick": "success"}
    assert [c["marker"] for c in calls(lake)] == ["quick"]


def _hung_notebook(path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('pids_file = ""')
    parameters.metadata["tags"] = ["parameters"]
    hang = nbformat.v4.new_code_cell(
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '3600'], start_new_session=True)\n"
        "with open(pids_file, 'a') as handle:\n"
        "    handle.write(f'{os.getpid()} {child.pid}\\n')\n"
        "time.sleep(3600)")
    notebook.cells = [parameters, hang]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))


@pytest.mark.slow
def test_a_hung_notebook_step_is_killed_with_its_kernel_and_retried(tmp_path, lake):
    _hung_notebook(tmp_path / "hang.ipynb")
    marker = Path(lake.state_path("runs")) / "nb.pids"
    body = f"""\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - {{name: nb, kind: notebook, notebook: hang.ipynb, parameters: {{pids_file: "{marker}"}},
                 timeout: 12, retry: {{attempts: 2, delay: 0}}}}
    """  # 12 s: a kernel takes a few seconds to start on a busy 2-core machine, and must reach the hang
    flow = load_flow(flow_file(tmp_path, body))
    with pytest.raises(FlowError, match=r"step nb timed out after 12 s \(attempt 2 of 2\)"):
        FlowRun(flow, lake, batch_id="n1").run()
    log = json.loads((Path(lake.state_path("runs", "n1")) / "run_log.json").read_text())
    assert log["steps"]["nb"]["status"] == "failed" and log["steps"]["nb"]["attempts"] == 2
    started = pids(lake, "nb")
    assert len(started) == 4, "each attempt's kernel reached the hanging cell and started a child"
    assert wait_gone(set(started), 10.0) == set(), "the kernel or its child outlived the timeout"


@pytest.mark.spark
def test_a_hung_sql_step_has_its_spark_jobs_cancelled_and_is_retried(tmp_path, lake, spark, engine):
    (tmp_path / "hang.sql").write_text(
        "SELECT reflect('java.lang.Thread', 'sleep', CAST(3600000 AS BIGINT)) AS slept FROM range(1)")
    body = """\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - {name: q, kind: sql, sql: hang.sql, output: {stage: stage3p, source: demo, table: q},
                 timeout: 2, retry: {attempts: 2, delay: 0}}
    """
    begin = time.monotonic()
    with pytest.raises(FlowError, match=r"step q timed out after 2 s \(attempt 2 of 2\); its Spark jobs were "
                                        r"cancelled"):
        FlowRun(load_flow(flow_file(tmp_path, body)), lake, batch_id="q1", spark=spark).run()
    assert time.monotonic() - begin < 60
    assert spark.range(3).count() == 3  # the cancelled tasks do not hold the session's cores
    assert not (Path(lake.table("stage3p", "demo", "q")) / "_delta_log").exists()
