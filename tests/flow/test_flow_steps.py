"""Step kinds are registered classes that check and run their steps; the scheduler runs them in dependency order."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import nbformat
import pytest
from test_flow_run import BRANCHES, calls, flow_file, statuses

from oea_core.flow import FlowError, FlowRun, StepKind, load_flow, step_kinds
from oea_core.flow.steps import StepKinds

ONE_STEP = """\
    stages:
      - name: s
        groups:
          - name: g
            steps:
              - {STEP}
    """


def test_the_registry_names_its_kinds_and_refuses_an_unknown_or_second_one():
    assert step_kinds.names() == ["notebook", "sql", "python"]
    assert {kind.name: kind.target_key for kind in step_kinds} == {"notebook": "notebook", "sql": "sql",
                                                                  "python": "callable"}
    with pytest.raises(FlowError, match=r"^unknown step kind 'shell'; registered kinds: notebook, sql, python$"):
        step_kinds.get("shell")
    kinds = StepKinds()
    kinds.register(type(step_kinds.get("python")))
    with pytest.raises(FlowError, match="a step kind named 'python' is already registered"):
        kinds.register(type(step_kinds.get("python")))


class Echo(StepKind):
    """A kind defined outside the package: validates its own key and runs in the runner."""

    name = "echo"
    target_key = "say"
    seen: ClassVar[list[str]] = []

    def validate(self, check, where, raw, folder):
        target = self.target(check, where, raw)
        if target is not None and not target.islower():
            check.add(where, raw.line_of(self.target_key), f"say something in lower case, not {target!r}")
        return target

    def run(self, run, step, deadline):
        Echo.seen.append(run.render(step, step.target))
        return 7


@pytest.fixture
def echo():
    step_kinds.register(Echo)
    yield Echo
    step_kinds.unregister("echo")
    Echo.seen.clear()


def test_a_registered_kind_validates_its_own_keys_and_runs(tmp_path, lake, echo):
    bad = flow_file(tmp_path, ONE_STEP.replace("{STEP}", "{name: e, kind: echo, say: LOUD}"))
    with pytest.raises(FlowError) as info:
        load_flow(bad)
    assert info.value.problems == [f"{bad}:9: step e: say something in lower case, not 'LOUD'"]
    flow = load_flow(flow_file(tmp_path, ONE_STEP.replace("{STEP}", "{name: e, kind: echo, say: 'hi {{ batch_id }}'}")))
    log = FlowRun(flow, lake, batch_id="e1").run()
    assert Echo.seen == ["hi e1"] and log["steps"]["e"]["rows"] == 7
    step_kinds.unregister("echo")
    with pytest.raises(FlowError, match="kind must be one of notebook, sql, python, not 'echo'"):
        load_flow(flow_file(tmp_path, ONE_STEP.replace("{STEP}", "{name: e, kind: echo, say: hi}")))


def test_a_python_steps_result_line_is_in_the_run_log_and_a_cached_step_keeps_it(tmp_path, lake, caplog):
    caplog.set_level("INFO", logger="oea")
    steps = "\n".join(f"              - {{name: {name}, kind: python, callable: 'oea_testing.flow_helpers:gold_like', "
                      f"parameters: {{missing: {missing}}}}}" for name, missing in (("m", "true"), ("n", "false")))
    flow = load_flow(flow_file(tmp_path, ONE_STEP.replace("              - {STEP}", steps),
                               "name: t\n  checkpoint: {enabled: true}"))
    log = FlowRun(flow, lake, batch_id="g1").run()
    assert log["steps"]["m"]["rows"] == 3
    assert log["steps"]["m"]["note"] == ("1 tables written, 3 rows; not built (source table missing): hub_section "
                                         "(stage2p/edfi/sections)")
    assert log["steps"]["n"]["note"] == "1 tables written, 3 rows"
    assert re.search(r"m: done in [0-9.]+ s: 1 tables written, 3 rows; not built \(source table missing\): "
                     r"hub_section", caplog.text)
    again = FlowRun(load_flow(flow.path), lake, batch_id="g1").run()  # checkpointed: both steps cached
    assert again["steps"]["m"]["status"] == "cached" and again["steps"]["m"]["note"] == log["steps"]["m"]["note"]


def test_max_parallel_is_respected(tmp_path, lake):
    steps = "\n".join(f"              - {{name: p{i}, kind: python, callable: 'oea_testing.flow_helpers:span', "
                      f"parameters: {{marker: p{i}, seconds: 0.3}}}}" for i in range(4))
    body = f"""\
    stages:
      - name: s
        groups:
          - name: g
            parallel: true
            steps:
{steps}
    """
    FlowRun(load_flow(flow_file(tmp_path, body)), lake, batch_id="m1", max_parallel=1).run()
    spans = sorted((s["start"], s["end"]) for s in map(json.loads, (
        Path(lake.state_path("runs")) / "spans.jsonl").read_text().splitlines()))
    assert len(spans) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans)), spans


def test_only_runs_one_step_whatever_it_depends_on(tmp_path, lake):
    flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "9")))
    log = FlowRun(flow, lake, batch_id="o1").run(only="d")  # d depends on b, which depends on a, which fails
    assert statuses(log) == {"a": "not_selected", "b": "not_selected", "c": "not_selected", "d": "success"}
    assert [c["marker"] for c in calls(lake)] == ["d"]


def test_a_skip_reaches_dependents_of_dependents_and_says_why(tmp_path, lake):
    flow = load_flow(flow_file(tmp_path, BRANCHES.replace("FAILS", "9")))
    with pytest.raises(FlowError, match="skipped: b, d"):
        FlowRun(flow, lake, batch_id="s1", sleep=lambda s: None).run()
    log = json.loads((Path(lake.state_path("runs", "s1")) / "run_log.json").read_text())
    assert log["steps"]["b"]["error"] == "not run: a did not succeed"
    assert log["steps"]["d"]["error"] == "not run: b did not succeed"
    assert log["steps"]["b"]["attempts"] == log["steps"]["d"]["attempts"] == 0


def _notebook(path: Path, source: str, parameters: str = 'greeting = ""\nbatch_id = ""') -> None:
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell(source)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))


def test_a_notebook_parameter_the_notebook_does_not_declare_fails_the_step_before_it_runs(tmp_path, lake):
    _notebook(tmp_path / "nb.ipynb", "raise SystemExit('must not run')", parameters='greeting = ""')
    step = "{name: nb, kind: notebook, notebook: nb.ipynb, parameters: {greeting: hi, greting: typo}}"
    with pytest.raises(FlowError, match=r"nb: FlowError: step nb: notebook .*nb.ipynb has no parameter greting; "
                                        r"it declares greeting\."):
        FlowRun(load_flow(flow_file(tmp_path, ONE_STEP.replace("{STEP}", step))), lake, batch_id="u1").run()
    assert not (Path(lake.state_path("runs", "u1")) / "notebooks").exists()  # no executed copy: nothing ran


@pytest.mark.slow
def test_a_notebook_step_gets_the_batch_id_and_a_failed_cell_is_named_in_the_run_log(tmp_path, lake, capfd):
    """The kernel process's own output (not the notebook's) goes to a log beside the executed copy, which the
    error names; none of it reaches the run's output."""
    _notebook(tmp_path / "nb.ipynb", "print(greeting, batch_id)\nif greeting == 'fail':\n"
                                     "    import os; os.write(2, b'said by the kernel process\\n'); 1 / 0")
    step = "{name: nb, kind: notebook, notebook: nb.ipynb, parameters: {greeting: GREETING}}"
    FlowRun(load_flow(flow_file(tmp_path, ONE_STEP.replace("{STEP}", step.replace("GREETING", "hello")))), lake,
            batch_id="g1").run()
    executed = Path(lake.state_path("runs", "g1")) / "notebooks" / "nb.ipynb"
    assert "hello g1" in executed.read_text()  # the notebook declares batch_id, so it got the run's
    assert not executed.with_suffix(".kernel.log").exists()  # a kernel that said nothing leaves no log
    with pytest.raises(FlowError):
        FlowRun(load_flow(flow_file(tmp_path, ONE_STEP.replace("{STEP}", step.replace("GREETING", "fail")))), lake,
                batch_id="f1").run()
    log = json.loads((Path(lake.state_path("runs", "f1")) / "run_log.json").read_text())
    executed = Path(lake.state_path("runs", "f1")) / "notebooks" / "nb.ipynb"
    kernel_log = executed.with_suffix(".kernel.log")
    assert re.fullmatch(rf"NotebookRunError: notebook nb\.ipynb failed in cell \d+: ZeroDivisionError: division by "
                        rf"zero \(executed copy: {re.escape(str(executed))}; the kernel's own output: "
                        rf"{re.escape(str(kernel_log))}\)", log["steps"]["nb"]["error"])
    assert executed.exists()
    assert "said by the kernel process" in kernel_log.read_text()
    assert "said by the kernel process" not in capfd.readouterr().err
