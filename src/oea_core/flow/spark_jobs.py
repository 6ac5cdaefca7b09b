"""Spark work that must stop at a deadline: a job group of its own, cancelled by a watchdog thread.

A sql step, and the checks of every step, run in the runner's Spark session rather than in a
worker process (see ``worker.py``), so the only way to stop them is to cancel their Spark jobs.
The watchdog cancels the group at the deadline, and again every half second until the work
ends: a job submitted after a cancel is not cancelled by it. Work outside Spark jobs cannot be
interrupted.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from ..errors import StepTimeout

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyspark import SparkContext


@contextlib.contextmanager
def job_group_until(context: SparkContext, group: str, description: str, *, seconds: float, watchdog: str,
                    timeout_message: str) -> Iterator[None]:
    """Run the block's Spark work in this thread under job ``group``, cancelled after ``seconds``.

    ``watchdog`` names the thread that cancels it. Raises StepTimeout with ``timeout_message``
    (from the error the cancelled work raised) when the block fails after the group was cancelled.
    """
    fired, done = threading.Event(), threading.Event()

    def cancel() -> None:
        if done.wait(seconds):
            return
        fired.set()
        while not done.is_set():
            context.cancelJobGroup(group)
            done.wait(0.5)

    thread = threading.Thread(target=cancel, name=watchdog, daemon=True)
    context.setJobGroup(group, description, interruptOnCancel=True)
    thread.start()
    try:
        yield
    except Exception as exc:
        if fired.is_set():
            raise StepTimeout(timeout_message) from exc
        raise
    finally:
        done.set()
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            context.setLocalProperty(key, None)  # type: ignore[arg-type]  # None unsets it; the stub says str
