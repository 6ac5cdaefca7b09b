"""The run log tells the truth: written at the start, running steps shown as running, a killed run as died,
failed notifications recorded without changing the run's outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_flow_run import BRANCHES, flow_file, statuses

from oea_core.cli import main
from oea_core.flow import FlowError, FlowRun, RunLog, load_flow
from oea_core.flow.graph import COLOURS
from oea_core.flow.process import hostname, pid_alive, wait_gone

HERE = Path(__file__).resolve().parent


def test_the_run_log_exists_from_the_start_and_shows_the_running_step_and_its_process(tmp_path, lake):
    body = """\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - {name: first, kind: python, callable: "oea_testing.flow_helpers:peek", parameters: {marker: first}}
              - {name: second, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: second}}
    """
    FlowRun(load_flow(flow_file(tmp_path, body)), lake, batch_id="r1").run()
    seen = json.loads((Path(lake.state_path("runs")) / "first.json").read_text())
    log = seen["log"]  # the run log as the first step saw it while it ran
    assert log["status"] == "running" and log["ended"] is None
    assert log["pid"] == os.getpid() and log["host"] == hostname()
    assert statuses(log) == {"first": "running", "second": "pending"}
    step = log["steps"]["first"]
    assert step["pid"] == seen["pid"] != os.getpid() and step["host"] == hostname()  # its own worker process
    assert step["attempts"] == 1 and step["started"] and step["timeout"] == 3600.0
    final = json.loads((Path(lake.state_path("runs", "r1")) / "run_log.json").read_text())
    assert final["status"] == "success" and final["ended"] and final["steps"]["first"]["pid"] is None
    assert not [p for p in os.listdir(lake.state_path("runs", "r1")) if p.startswith(".")]  # no temporary files


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_flow_status_shows_a_run_as_running_and_then_died_after_kill_9(tmp_path, capsys):
    flow = tmp_path / "slow.yaml"
    flow.write_text(textwrap.dedent("""\
        pipeline: {name: slow}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - {name: wait, kind: python, callable: "oea_testing.flow_helpers:hang", parameters: {marker: wait}}
        """), encoding="utf-8")
    lake = tmp_path / "lake"
    log_path = lake / "oea-framework" / "runs" / "k1" / "run_log.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    runner = subprocess.Popen([sys.executable, "-c", "import sys; from oea_core.cli import main; sys.exit(main())",
                               "--lake", str(lake), "flow", "run", str(flow), "--batch-id", "k1"], env=env)
    try:
        def step_running():
            doc = json.loads(log_path.read_text()) if log_path.exists() else {}
            step = doc.get("steps", {}).get("wait", {})
            return step.get("pid") if step.get("status") == "running" and step.get("pid") != runner.pid else None

        worker = _wait_for(step_running, 60, "the step's worker to start")
        _wait_for(lambda: (lake / "oea-framework" / "runs" / "wait.pids").exists(), 30, "the step to hang")
        assert main(["--lake", str(lake), "flow", "status"]) == 0
        out = capsys.readouterr().out
        assert "slow" in out and "k1" in out and " running " in out and "1 running" in out
        assert "wait: running since" in out and f"pid {worker} on {hostname()}" in out
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        assert main(["--lake", str(lake), "flow", "status"]) == 0
        out = capsys.readouterr().out
        assert " died " in out and "1 interrupted" in out and " running " not in out
        assert f"pid {runner.pid} on {hostname()}) is gone" in out and "--batch-id k1" in out
        step_pids = {int(p) for p in (lake / "oea-framework" / "runs" / "wait.pids").read_text().split()}
        assert wait_gone(step_pids, 15.0) == set(), "the step outlived its killed runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert not pid_alive(runner.pid)


def test_ctrl_c_stops_the_running_steps_and_marks_the_run_interrupted(tmp_path):
    flow = tmp_path / "slow.yaml"
    flow.write_text(textwrap.dedent("""\
        pipeline: {name: slow}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - {name: wait, kind: python, callable: "oea_testing.flow_helpers:hang", parameters: {marker: wait}}
                  - {name: next, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: next}}
        """), encoding="utf-8")
    lake = tmp_path / "lake"
    pids_file = lake / "oea-framework" / "runs" / "wait.pids"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    runner = subprocess.Popen([sys.executable, "-c", "import sys; from oea_core.cli import main; sys.exit(main())",
                               "--lake", str(lake), "flow", "run", str(flow), "--batch-id", "i1"], env=env)
    try:
        _wait_for(pids_file.exists, 60, "the step to hang")
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=60) == 130
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert wait_gone({int(p) for p in pids_file.read_text().split()}, 15.0) == set()
    log = json.loads((lake / "oea-framework" / "runs" / "i1" / "run_log.json").read_text())
    assert log["status"] == "interrupted" and log["error"].startswith("KeyboardInterrupt")
    assert statuses(log) == {"wait": "interrupted", "next": "pending"}  # never started: a rerun runs both


class Answer(BaseHTTPRequestHandler):
    received: typing.ClassVar[list] = []

    def do_POST(self):
        Answer.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_failed_notification_is_recorded_and_does_not_change_the_run_outcome(tmp_path, lake):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        pipeline = (f"name: t\n  notifications: {{on_success: {{webhook: \"http://127.0.0.1:{port}/hook/TOKEN-s3cr3t\","
                    f" command: \"echo broken >&2; exit 3\"}}, "
                    f"on_failure: {{webhook: \"http://127.0.0.1:{_closed_port()}/hook/TOKEN-s3cr3t\"}}}}")
        log = FlowRun(load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "0"), pipeline=pipeline)), lake,
                      batch_id="ok1").run()
        assert log["status"] == "success" and Answer.received[-1]["status"] == "success"
        written = json.loads((Path(lake.state_path("runs", "ok1")) / "run_log.json").read_text())
        assert written["status"] == "success"
        assert written["notifications"] == [
            {"event": "on_success", "kind": "webhook", "target": f"http://127.0.0.1:{port}/…", "ok": False,
             "error": "HTTP 500 Internal Server Error"},
            {"event": "on_success", "kind": "command", "target": "echo", "ok": False, "error": "exited 3: broken"}]
        # a failed run stays failed, for its own reason, when its notification cannot be sent either
        flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "5"), pipeline=pipeline))
        with pytest.raises(FlowError, match="a: RuntimeError: a failed on call 3"):
            FlowRun(flow, lake, batch_id="bad1", sleep=lambda s: None).run()
        written = json.loads((Path(lake.state_path("runs", "bad1")) / "run_log.json").read_text())
        assert written["status"] == "failed"
        (note,) = written["notifications"]
        assert note["event"] == "on_failure" and not note["ok"] and note["error"] == "could not connect"
        for batch in ("ok1", "bad1"):
            assert "s3cr3t" not in (Path(lake.state_path("runs", batch)) / "run_log.json").read_text()
    finally:
        server.shutdown()


def _write_log(runs: Path, batch: str, doc: dict | str) -> Path:
    path = runs / batch / "run_log.json"
    path.parent.mkdir(parents=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps({"batch_id": batch, **doc}), encoding="utf-8")
    return path


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_lines_of_a_died_run_give_the_resume_hint(tmp_path):
    pid = _gone_pid()
    _write_log(tmp_path, "d1", {"pipeline": "clever", "status": "running", "started": "2026-01-02T03:04:05+00:00",
                                "updated": "2026-01-02T03:09:00+00:00", "host": hostname(), "pid": pid,
                                "steps": {"a": {"status": "success"}, "b": {"status": "running"},
                                          "c": {"status": "pending"}}})
    (run,) = RunLog.read_all(str(tmp_path))
    assert run.state == "died" and run.doc["status"] == "running"
    assert run.status_lines() == [
        f"{'2026-01-02T03:04:05+00:00':<25} {'clever':<16} {'d1':<28} {'died':<11} 1 interrupted, 1 pending, 1 success",
        (f"  its runner (pid {pid} on {hostname()}) is gone; last written 2026-01-02T03:09:00+00:00. "
         "Rerun with --batch-id d1 to resume")]



def test_flow_graph_shows_a_died_run_as_died_and_its_running_step_as_interrupted(tmp_path):
    flow = flow_file(tmp_path, BRANCHES.replace("FAILS", "0"))
    log = _write_log(tmp_path / "runs", "d1", {
        "pipeline": "t", "status": "running", "started": "2026-01-02T03:04:05+00:00", "host": hostname(),
        "pid": _gone_pid(), "steps": {"a": {"status": "success"}, "b": {"status": "running"},
                                      "c": {"status": "running"}, "d": {"status": "pending"}}})
    assert RunLog.load(str(log)).step_statuses() == {"a": "success", "b": "interrupted", "c": "interrupted",
                                                     "d": "pending"}
    assert main(["--lake", str(tmp_path / "lake"), "flow", "graph", str(flow), "--run-log", str(log),
                 "--out", str(tmp_path / "graphs")]) == 0
    svg = (tmp_path / "graphs" / "t.svg").read_text()
    assert "batch d1: died" in svg and "running" not in svg
    assert svg.count(">interrupted</text>") == 2 and COLOURS["interrupted"] in svg

def test_status_lines_show_running_steps_failed_notifications_and_unreadable_logs(tmp_path):
    _write_log(tmp_path, "r1", {"pipeline": "main", "status": "running", "started": "2026-01-03", "host": hostname(),
                                "pid": os.getpid(), "steps": {"a": {
                                    "status": "running", "started": "2026-01-03T10:00", "attempts": 2, "pid": 4242,
                                    "host": "box", "timeout": 60.0}}})
    _write_log(tmp_path, "f1", {"pipeline": "main", "status": "failed", "started": "2026-01-02",
                                "steps": {"a": {"status": "failed"}}, "notifications": [
                                    {"event": "on_failure", "kind": "webhook", "target": "http://hooks/…", "ok": False,
                                     "error": "could not connect"},
                                    {"event": "on_failure", "kind": "command", "target": "echo", "ok": True,
                                     "error": None}]})
    bad = _write_log(tmp_path, "x1", "{not json")
    running, failed, unreadable = RunLog.read_all(str(tmp_path))  # newest first; unreadable has no start
    assert running.status_lines()[1:] == [("  a: running since 2026-01-03T10:00, attempt 2 (pid 4242 on box, "
                                           "timeout 60.0 s)")]
    assert failed.status_lines()[0].split() == ["2026-01-02", "main", "f1", "failed", "1", "failed"]
    assert failed.status_lines()[1:] == ["  on_failure notification (webhook http://hooks/…) failed: could not connect"]
    assert unreadable.state == "unreadable" and unreadable.doc["batch_id"] == "x1"
    assert unreadable.status_lines()[1].startswith(f"  {bad}: Expecting property name")


def test_latest_is_the_newest_run_of_that_flow(tmp_path):
    for batch, pipeline, started in [("b1", "clever", "2026-01-01"), ("b2", "edfi", "2026-01-03"),
                                     ("b3", "clever", "2026-01-02")]:
        _write_log(tmp_path, batch, {"pipeline": pipeline, "status": "success", "started": started, "steps": {}})
    _write_log(tmp_path, "b4", "[]")
    assert [r.doc["batch_id"] for r in RunLog.read_all(str(tmp_path))] == ["b2", "b3", "b1", "b4"]
    latest = RunLog.latest(str(tmp_path), "clever")
    assert latest is not None and latest.doc["batch_id"] == "b3"
    assert latest.path == str(tmp_path / "b3" / "run_log.json")
    assert RunLog.latest(str(tmp_path), "main") is None
    assert RunLog.latest(str(tmp_path / "nowhere"), "clever") is None
    assert RunLog.load(str(tmp_path / "b4" / "run_log.json")).doc["error"].endswith("not a JSON object")
