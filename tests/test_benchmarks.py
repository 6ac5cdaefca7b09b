"""The benchmark command runs end to end on both Delta engines and compares like with like (timings are not
asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "run.py"


@pytest.mark.slow
def test_benchmark_runs_every_engine_on_the_same_rows(tmp_path):
    out = tmp_path / "results"
    # the smallest run that takes every path: one size (so it gets the daily increment), one repeat, and Ed-Fi's
    # changes of one resource only (the script's Ed-Fi paths do not depend on which: per-table cost is the time)
    done = subprocess.run([sys.executable, str(BENCH), "--sizes", "300", "--repeats", "1", "--days", "5",
                           "--edfi-students", "30", "--edfi-resources", "students", "--out", str(out),
                           "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "clever.json").read_text())
    assert report["machine"]["cores"] >= 1 and report["repeats"] == 1
    assert report["engines"] == ["spark_delta", "delta_rs"] and report["machine"]["delta_spark"] == "3.3.2"
    (size,) = report["sizes"]
    # the generator's rows all arrive, and every engine wrote the same number of rows
    for engine in ("spark_delta", "delta_rs"):
        ours = size[engine]
        assert size["rows"] == ours["rows_written"] == size["duckdb"]["rows"] == size["spark"]["rows"]
        assert ours["rejected"] == 0
        assert ours["increment_rows"] == size["rows"] // 5  # the daily increment is one day of the same users
        assert ours["peak_memory_gib"] > 0.1  # the JVM is counted, not only Python
        assert ours["delta_files"] >= 2 and ours["noop_ingest_s"] < ours["ingest_s"]
        assert ours["over_duckdb"] == ours["ingest_s"] / size["duckdb"]["ingest_s"]
        assert ours["over_bare_spark"] == ours["ingest_s"] / size["spark"]["ingest_s"]
    faster = min(("spark_delta", "delta_rs"), key=lambda k: size[k]["ingest_s"])
    assert size["faster_engine"] == faster.replace("_", "-")
    text = (out / "clever.md").read_text()
    assert "| 300 | spark-delta |" in text and "| 300 | delta-rs |" in text
    edfi_report = json.loads((out / "edfi.json").read_text())
    assert edfi_report["resources"] == ["students"]
    edfi = edfi_report["sizes"][0]
    assert edfi["students"] == 30 and edfi["changes"] > 30  # the initial load and the later batches' changes
    for engine in ("spark_delta", "delta_rs"):
        assert edfi[engine]["refined_rows"] > 0 and edfi[engine]["noop_ingest_s"] < edfi[engine]["ingest_s"]
    assert edfi["spark_delta"]["refined_rows"] == edfi["delta_rs"]["refined_rows"]
    assert "| 30 | spark-delta |" in (out / "edfi.md").read_text()


CLOUD = Path(__file__).parents[1] / "benchmarks" / "cloud.py"


@pytest.mark.slow
@pytest.mark.azurite  # it starts its own Azurite
def test_cloud_benchmark_times_both_lakes_on_the_same_rows(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(CLOUD), "--rows", "200", "--days", "2", "--out", str(out),
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "cloud.json").read_text())
    assert report["rows"] == 200 and report["table_rows"]["daily_participation_pseudo"] == 200
    land, again, second = (report["steps"][k] for k in ("land", "ingest_again", "ingest_second_cache"))
    assert land["cloud_pushed_files"] > 1 and land["cloud_pulled_files"] == 0
    assert again["cloud_pushed_files"] == 0  # nothing new: nothing moves
    assert second["cloud_pulled_files"] > land["cloud_pushed_files"]  # a new machine pulls the tables too
    total = report["end_to_end"]
    assert total["cloud_over_local"] == pytest.approx(total["cloud"] / total["local"])
    assert "| land |" in (out / "cloud.md").read_text()


SCALE = Path(__file__).parents[1] / "benchmarks" / "edfi_scale.py"


@pytest.mark.slow
def test_edfi_scale_benchmark_agrees_with_bare_spark_and_duckdb_table_by_table(tmp_path):
    out = tmp_path / "results"
    largest = "studentSchoolAttendanceEvents,grades,studentSectionAssociations"
    done = subprocess.run([sys.executable, str(SCALE), "--students", "50", "--days", "1", "--backfill-days", "1",
                           "--resources", largest + ",students", "--out", str(out), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "edfi_scale.json").read_text())
    records = report["records"]
    assert records["per_resource"] == {"grades": 1050, "studentSchoolAttendanceEvents": 50,
                                       "studentSectionAssociations": 350, "students": 50}
    assert records["total"] == records["backfill"] + records["days"][0] and records["days"][0] > 50
    backfill, day = report["ours"]["steps"]
    assert (backfill["name"], day["name"]) == ("backfill", "day1") and report["ours"]["engine"] == "delta-rs"
    assert set(backfill["per_resource"]) == {*largest.split(","), "students"}
    # the benchmark fails unless every table has the same rows in ours and both references; check it did compare
    ours = report["ours"]["rows"]
    assert ours["grades"] == report["spark"]["day1_recompute"]["rows"]["grades"] > 1000
    assert ours["student_school_attendance_events"] == report["duckdb"]["day1_recompute"]["rows"][
        "student_school_attendance_events"] > 50
    summary = report["summary"]
    assert summary["ours_over_spark_largest"] == pytest.approx(summary["ours_largest_s"] / summary["spark_largest_s"])
    assert summary["day_over_backfill"][0] == pytest.approx(summary["ours_day_s"][0] / summary["ours_backfill_s"])
    assert "| backfill | 1,500 |" in (out / "edfi_scale.md").read_text()


GOLD = Path(__file__).parents[1] / "benchmarks" / "gold.py"


@pytest.mark.slow
def test_gold_benchmark_reports_a_full_build_and_a_day_with_consistent_rows(tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(GOLD), "--students", "10", "--backfill-days", "1", "--out", str(out),
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1800,
                          check=False)  # three Spark starts, about 30 small Delta tables: the time is per table
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gold.json").read_text())
    full, day, summary = report["full"], report["day"], report["summary"]
    assert report["students"] == 10 and report["records"]["edfi_day"] > 10
    assert summary["day_over_full"] == pytest.approx(day["build_s"] / full["build_s"])
    assert summary["target_met"] == (summary["day_over_full"] <= 0.1)
    assert full["build_s"] == pytest.approx(full["vault_s"] + full["star_s"])
    assert full["checks_failed"] == day["checks_failed"] == 0
    # the full build wrote every table whole; the vault only grows; a fact gains its inserts and loses its deletes
    for table, written in full["tables"].items():
        area = "star" if table.startswith(("dim_", "fact_")) else "vault"
        assert full["table_rows"][f"{area}/{table}"] == written["rows"] > 0, table
        after = day["table_rows"][f"{area}/{table}"]
        if area == "vault":
            assert after == full["table_rows"][f"vault/{table}"] + day["tables"][table]["rows"], table
        elif table.startswith("fact_"):
            change = day["tables"][table]
            assert after == written["rows"] + change["inserted"] - change["deleted"], table
    assert full["tables"]["fact_attendance"]["rows"] == 10 * 1  # one event per student and school day
    assert full["tables"]["hub_student"]["rows"] == 10 and day["tables"]["hub_student"]["rows"] == 1  # a new student
    # every Clever row of an unmatched or blank sis_id is kept under the unknown student, and only those
    assert full["unknown_students"] == summary["unmatched_clever_rows"]["backfill"] > 0
    assert day["unknown_students"] == summary["unmatched_clever_rows"]["with_day"] > full["unknown_students"]
    assert full["peak_memory_gib"] > 0.1 and set(full["phases"]) >= {"vault:hub_student", "star:fact_attendance"}
    assert "| **full build** |" in (out / "gold.md").read_text()
