"""Flows: YAML-declared pipelines with dependencies, retries, checkpoints, data-quality checks and run logs."""

from .runner import FlowRun, runs_dir
from .spec import Flow, FlowError, load_flow

__all__ = ["Flow", "FlowError", "FlowRun", "load_flow", "runs_dir"]
