"""The benchmark command runs end to end and compares like with like (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "run.py"


def test_benchmark_runs_every_engine_on_the_same_rows(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(BENCH), "--sizes", "3000", "--repeats", "1", "--days", "5",
                           "--edfi-students", "30", "--out", str(out), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "clever.json").read_text())
    assert report["machine"]["cores"] >= 1 and report["repeats"] == 1
    (size,) = report["sizes"]
    # the generator's rows all arrive, and every engine wrote the same number of rows
    assert size["rows"] == size["rows_written"] == size["duckdb"]["rows"] == size["spark"]["rows"]
    assert size["rejected"] == 0
    # the daily increment is one day of the same users
    assert size["increment_rows"] == size["rows"] // 5
    ours = size["ours"]
    assert ours["peak_memory_gib"] > 0.1  # the JVM is counted, not only Python
    assert ours["delta_files"] >= 2 and ours["noop_ingest_s"] < ours["ingest_s"]
    assert size["ours_over_duckdb"] == ours["ingest_s"] / size["duckdb"]["ingest_s"]
    assert "| 3,000 |" in (out / "clever.md").read_text()
    edfi = json.loads((out / "edfi.json").read_text())["sizes"][0]
    assert edfi["students"] == 30 and edfi["changes"] > 30 and edfi["ours"]["refined_rows"] > 0
    assert edfi["ours"]["noop_ingest_s"] < edfi["ours"]["ingest_s"]
    assert "| 30 |" in (out / "edfi.md").read_text()
