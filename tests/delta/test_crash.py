"""A Spark job killed (SIGKILL, the whole process tree) in the middle of a write, on both engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from oea_testing.crash_writer import ROWS, batch

WRITER = Path(__file__).parents[1] / "oea_testing" / "crash_writer.py"
CASES = [("delta-rs", "staging"), ("spark-delta", "staging"), ("spark-delta", "commit")]


def first_data_file(path: Path, phase: str) -> bool:
    """A task's data file has appeared: in ``_staging`` (staging) or in the table's own folders (commit)."""
    if phase == "staging":
        return any((path / "_staging").rglob("part-*.parquet")) if (path / "_staging").is_dir() else False
    return any(path.glob("part=*/part-*.parquet"))


def kill_mid_write(path: Path, engine: str, phase: str) -> None:
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), engine, phase], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not first_data_file(path, phase):
        assert proc.poll() is None, f"the writer ended before it was killed: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no data file appeared in 300 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the Python driver, the JVM and its Python workers
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.crash
@pytest.mark.parametrize("engine, phase", CASES, ids=[f"{e}-{p}" for e, p in CASES])
def test_a_killed_write_leaves_the_previous_version_and_a_rerun_completes_exactly(spark, tmp_path, engine, phase):
    from pyspark.sql import functions as F

    from oea_core.delta import delta_store

    store = delta_store(spark, engine)
    path = tmp_path / "t"
    first = batch(spark, 100).withColumn("id", F.col("id") - 1_000_000)
    store.write(first, str(path), partition_by=("part",), app_id="batch-1")

    kill_mid_write(path, engine, phase)

    assert DeltaTable(str(path)).version() == 0 and store.version(str(path)) == 0
    assert spark.read.format("delta").load(str(path)).count() == 100
    assert store.read(str(path)).count() == 100
    assert not store.applied(str(path), "batch-2")
    assert not [f for f in DeltaTable(str(path)).file_uris() if "_staging" in f]

    result = store.write(batch(spark), str(path), partition_by=("part",), app_id="batch-2")
    assert (result.version, result.rows, result.skipped) == (1, ROWS, False)
    table = store.read(str(path))
    assert table.count() == table.select("id").distinct().count() == 100 + ROWS, "no duplicates, nothing lost"
    assert store.write(batch(spark), str(path), partition_by=("part",), app_id="batch-2").skipped
    assert DeltaTable(str(path)).version() == 1
