"""oea_core.lake.run_summary: the closing line counts what a run committed, gold layer included (real Delta logs)."""

from __future__ import annotations

import time

import pyarrow as pa
from deltalake import write_deltalake

from oea_core.lake.run_summary import summarize


def test_the_summary_counts_stage2_and_the_gold_layer_s_tables(lake):
    before = time.time() - 5
    write_deltalake(lake.table("stage2p", "clever", "old_pseudo"), pa.table({"n": [1]}))
    time.sleep(1.2)  # the summary allows a second of clock skew between a commit and the run's start
    started = time.time()
    write_deltalake(lake.table("stage2p", "clever", "daily_pseudo"), pa.table({"n": [1, 2, 3]}))
    write_deltalake(lake.table("stage2np", "clever", "daily_rejected"), pa.table({"n": [9]}))
    write_deltalake(lake.table("stage3p", "vault", "hub_student"), pa.table({"n": [1, 2]}))
    write_deltalake(lake.table("stage3p", "star", "dim_school"), pa.table({"n": [1, 2, 3, 4]}))
    summary = summarize(lake, ["clever"], started)
    assert (summary.tables, summary.rows, summary.set_aside) == (4, 10, 1)
    assert summary.line().startswith("4 tables written, 10 rows, 1 set aside, in ")
    assert summarize(lake, ["clever"], before).tables == 5
