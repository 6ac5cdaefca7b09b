"""Flows: YAML-declared pipelines with dependencies, retries, checkpoints, data-quality checks and run logs."""

from ..errors import FlowError
from .model import Flow
from .runlog import RunLog, runs_dir
from .runner import FlowRun
from .spec import load_flow
from .steps import StepKind, step_kinds

__all__ = ["Flow", "FlowError", "FlowRun", "RunLog", "StepKind", "load_flow", "runs_dir", "step_kinds"]
