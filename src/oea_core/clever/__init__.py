"""The Clever module (Clever Participation Reports)."""

from __future__ import annotations

from .descriptor import DESCRIPTOR
from .module import SCHEMAS, CleverModule, classify, role_from_path, table_defs

__all__ = ["DESCRIPTOR", "SCHEMAS", "CleverModule", "classify", "role_from_path", "table_defs"]
