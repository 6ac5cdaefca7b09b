"""What a step sees of its run: the narrow context step kinds and checks run in.

``runner.py`` schedules the steps and its ``FlowRun`` satisfies ``StepRun``; ``steps.py`` and
``step_checks.py`` run them against this protocol, so neither side imports the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from pyspark.sql import SparkSession

    from ..lake.paths import LakePaths
    from .model import Flow, Step


class StepRun(Protocol):
    """One run of a flow as its steps and their checks use it (``FlowRun`` is one)."""

    @property
    def flow(self) -> Flow:
        """The flow being run."""

    @property
    def lake(self) -> LakePaths:
        """The lake it runs over."""

    @property
    def batch_id(self) -> str:
        """The run's one batch id."""

    @property
    def folder(self) -> str:
        """The run's folder (run log, executed notebooks, worker results)."""

    @property
    def spark(self) -> SparkSession:
        """The Spark session sql steps and checks run in."""

    def context(self, step: Step) -> dict[str, Any]:
        """What templates see for ``step``."""

    def render(self, step: Step, value: Any, extra: dict[str, Any] | None = None) -> Any:
        """``value`` with every ``{{ template }}`` rendered."""

    def in_worker(self, step: Step, payload: dict[str, Any], deadline: float) -> int | None:
        """Run ``payload`` in a worker process killed at ``deadline``; returns its rows."""

    def spark_deadline(self, step: Step, deadline: float) -> AbstractContextManager[None]:
        """Run Spark work under a job group cancelled at ``deadline``."""

    def lake_view(self, stage: str, source: str, table: str, view: str | None = None, *,
                  session: SparkSession | None = None) -> str:
        """Register a lake table as a temporary view; returns the view's name."""
