"""Callables for python steps in the flow tests; they record what they saw in a JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(marker: str, context: dict, **kwargs) -> int:
    """Append ``{marker, batch_id, kwargs}`` to ``<run_dir>/../calls.jsonl``; returns 1 (one row)."""
    path = os.path.join(os.path.dirname(context["run_dir"]), "calls.jsonl")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"marker": marker, "batch_id": context["batch_id"], "kwargs": kwargs}) + "\n")
    return 1


def flaky(marker: str, failures: int, context: dict) -> int:
    """Fails the first ``failures`` calls for ``marker`` (counted across runs in a file), then succeeds."""
    path = os.path.join(os.path.dirname(context["run_dir"]), f"{marker}.count")
    count = int(Path(path).read_text()) if os.path.exists(path) else 0
    with open(path, "w") as handle:
        handle.write(str(count + 1))
    if count < failures:
        raise RuntimeError(f"{marker} failed on call {count + 1}")
    return record(marker, context)


def make_table(stage: str, source: str, table: str, rows: list, schema: str, context: dict) -> int:
    """Write a small Delta table into the run's lake."""
    from oea_core.delta import delta_store
    from oea_core.spark import get_spark

    spark = get_spark()
    columns = [part.split() for part in schema.split(",")]  # written as text, then cast to the declared types
    frame = spark.createDataFrame([tuple(r) for r in rows], ", ".join(f"{name} string" for name, _ in columns))
    frame = frame.selectExpr(*(f"CAST({name} AS {kind}) AS {name}" for name, kind in columns))
    result = delta_store(spark).write(frame, context["lake"].table(stage, source, table), mode="overwrite")
    return result.rows


def hang(marker: str, context: dict) -> int:
    """Write this process's pid and a grandchild's (in a session of its own) to ``<runs>/<marker>.pids``, then hang."""
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    with open(os.path.join(os.path.dirname(context["run_dir"]), f"{marker}.pids"), "a") as handle:
        handle.write(f"{os.getpid()} {child.pid}\n")
    time.sleep(3600)
    return 0


def peek(marker: str, context: dict) -> int:
    """Copy the run log as this step sees it while it runs, with this process's pid, to ``<runs>/<marker>.json``."""
    with open(os.path.join(context["run_dir"], "run_log.json"), encoding="utf-8") as handle:
        seen = json.load(handle)
    with open(os.path.join(os.path.dirname(context["run_dir"]), f"{marker}.json"), "w") as handle:
        json.dump({"pid": os.getpid(), "log": seen}, handle)
    return 1


def span(marker: str, seconds: float, context: dict) -> int:
    """Append ``{marker, start, end}`` (wall clock) to ``<run_dir>/../spans.jsonl`` around a ``seconds`` sleep."""
    import time

    start = time.time()
    time.sleep(seconds)
    with open(os.path.join(os.path.dirname(context["run_dir"]), "spans.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"marker": marker, "start": start, "end": time.time()}) + "\n")
    return 1


def gold_like(missing: bool) -> object:
    """A result that counts rows and says, in one line, what it did not build (as a gold build's does)."""
    from oea_core.delta import WriteResult
    from oea_core.gold import GoldResult

    return GoldResult({"hub_student": WriteResult("p", 0, 3, 3)},
                      missing={"hub_section": ("stage2p/edfi/sections",)} if missing else {})
