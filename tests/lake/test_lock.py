"""The lake lock: one run per lake and source; a second one waits or says who runs; a dead holder's lock is taken over."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from oea_core import LakeLockError, LakePaths
from oea_core.cli import main
from oea_core.lake.lock import holder, lake_lock, lock_path, source_run
from oea_testing.full_disk import free

REPO = Path(__file__).resolve().parents[2]


def hold_in_another_process(lake: LakePaths, name: str, operation: str, seconds: float) -> subprocess.Popen:
    """A real second process that takes the lock, says so on stdout, then sleeps ``seconds``."""
    code = textwrap.dedent(f"""
        import time
        from oea_core import LakePaths
        from oea_core.lake.lock import lake_lock
        with lake_lock(LakePaths.from_setting({lake.root!r}), {name!r}, {operation!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_says_who_runs_since_when_and_takes_nothing(lake):
    other = hold_in_another_process(lake, "clever", "clever ingest", 60)
    try:
        started = time.monotonic()
        with pytest.raises(LakeLockError) as caught, lake_lock(lake, "clever", "clever ingest", wait=0):
            pytest.fail("the lock was taken twice")
        message = str(caught.value)
        assert time.monotonic() - started < 5
        assert message.startswith("clever ingest already running since 20")
        assert f"(host {socket.gethostname()}, pid {other.pid})" in message
        assert "--wait SECONDS" in message and lock_path(lake, "clever") in message
        assert holder(lake, "clever")["pid"] == other.pid
        with lake_lock(lake, "edfi", "edfi ingest", wait=0):  # another source is not blocked
            pass
    finally:
        other.kill()
        other.wait()


def test_a_second_run_waits_for_the_first_when_asked(lake, monkeypatch, caplog):
    other = hold_in_another_process(lake, "clever", "clever ingest", 2)
    monkeypatch.setenv("OEA_LOCK_WAIT", "120")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="oea"), lake_lock(lake, "clever", "clever ingest") as me:
        waited = time.monotonic() - started
        assert me["pid"] == os.getpid() and holder(lake, "clever") == me
    assert waited > 1.5, "the lock was taken while the first run still held it (for 2 s)"
    assert other.wait() == 0
    assert "clever ingest: waiting up to 120 s for clever ingest" in caplog.text
    assert holder(lake, "clever") is None and Path(lock_path(lake, "clever")).read_text() == ""


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(lake, caplog):
    other = hold_in_another_process(lake, "clever", "clever ingest", 600)
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    with caplog.at_level(logging.WARNING, logger="oea"), lake_lock(lake, "clever", "clever ingest", wait=0):
        pass
    assert f"took over the lock left by clever ingest (host {socket.gethostname()}, pid {other.pid}" in caplog.text


def test_the_lock_is_reentrant_within_a_process_and_released_once(lake):
    with lake_lock(lake, "edfi", "edfi ingest", wait=0), lake_lock(lake, "edfi", "edfi refine", wait=0) as inner:
        assert inner["operation"] == "edfi ingest"
    other = hold_in_another_process(lake, "edfi", "edfi ingest", 0)
    assert other.wait() == 0


def test_a_bad_wait_setting_is_one_clear_error(lake, monkeypatch):
    monkeypatch.setenv("OEA_LOCK_WAIT", "ten")
    with pytest.raises(LakeLockError, match="OEA_LOCK_WAIT='ten' is not a number of seconds"), lake_lock(
            lake, "clever", "clever ingest"):
        pass


def test_a_cloud_lake_without_a_working_copy_runs_unlocked_and_says_so(caplog):
    lake = LakePaths(account="districtlake")  # Synapse: Spark opens abfss:// itself (cloud-lake locks: test_cloud_lake)
    with caplog.at_level(logging.INFO, logger="oea"), source_run(lake, "clever", "clever ingest") as me:
        assert me["pid"] == os.getpid()
    assert "without a working copy (Synapse), so no lake lock is taken" in caplog.text


def oea(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "oea_core.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


@pytest.mark.spark
@pytest.mark.slow
def test_two_ingests_of_one_batch_started_together_write_it_once(lake):
    """The issue's case: a second `oea ingest clever` while the first runs stops at once, or waits and finds nothing new."""
    from deltalake import DeltaTable

    env = {"OEA_SALT": "lock-test-salt-3f9a1c27"}
    landed = oea("--lake", lake.root, "land", "clever", str(REPO / "test_data" / "clever"), env=env)
    assert landed.wait(timeout=120) == 0, landed.stderr.read()
    first = oea("--lake", lake.root, "ingest", "clever", env=env)
    deadline = time.monotonic() + 120
    while holder(lake, "clever") is None:
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.05)
    queued = oea("--lake", lake.root, "ingest", "clever", "--wait", "900", env=env)
    refused = oea("--lake", lake.root, "ingest", "clever", env=env)
    _out, err = refused.communicate(timeout=120)
    assert refused.returncode == 1, err
    assert err.strip().startswith("oea: error: clever ingest already running since ")
    assert f"pid {first.pid})" in err and len(err.strip().splitlines()) == 1
    out1, err1 = first.communicate(timeout=900)
    assert first.returncode == 0, err1
    assert "daily_participation: 1 batches, 138 rows written" in out1
    out2, err2 = queued.communicate(timeout=900)
    assert queued.returncode == 0, err2
    assert out2.count("nothing new") == 2 and "waiting up to 900 s for clever ingest" in err2
    table = DeltaTable(os.path.join(lake.root, "stage2p", "clever", "daily_participation_pseudo"))
    assert table.to_pyarrow_table().num_rows == 138 and len(table.history()) == 1


def test_a_full_disk_while_taking_the_lock_is_one_line_naming_the_lock(full_lake):
    lake, mount = full_lake
    path = lock_path(lake, "clever")
    with pytest.raises(LakeLockError) as caught, lake_lock(lake, "clever", "clever ingest"):
        pytest.fail("the lock was taken on a full disk")
    message = str(caught.value)
    assert "\n" not in message and "full" in message and path in message and "free space" in message
    assert caught.value.path == path
    assert os.path.getsize(path) == 0 and holder(lake, "clever") is None, "released, not half-written"
    free(mount)
    with lake_lock(lake, "clever", "clever ingest") as me:
        assert holder(lake, "clever") == me


def test_oea_on_a_full_disk_exits_with_one_line_saying_so(full_lake, capsys):
    lake, _ = full_lake
    code = main(["--lake", lake.root, "land", "clever", str(REPO / "test_data" / "clever")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("oea: error: cannot write the lake lock "), err
    assert "disk is full" in err and "unexpected" not in err
