"""Azure Synapse deployment: pipeline templates generated from the modules, and the oea_core wheel."""

from __future__ import annotations

from .notebooks import SYNAPSE_SECRET_FILES, SYNAPSE_SECRETS
from .template import build_template, read_template, write_template
from .wheel import build_wheel

__all__ = ["SYNAPSE_SECRETS", "SYNAPSE_SECRET_FILES", "build_template", "build_wheel", "read_template", "write_template"]
