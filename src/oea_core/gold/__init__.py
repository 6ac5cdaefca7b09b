"""The gold layer: a Data Vault (``stage3p/vault``) and a star schema (``stage3p/star``) over the
pseudonymized stage2p tables. See ``docs/gold.md``."""

from __future__ import annotations

from .build import GoldResult, build_star, build_vault, up_to_date
from .dq import STAR_CHECKS, VAULT_CHECKS, run_checks
from .keys import UNKNOWN_KEY, hash_key, hashdiff, surrogate_key
from .scd import END_OF_TIME, apply_scd1, apply_scd2, scd1_changes, scd2_changes

__all__ = [
    "END_OF_TIME", "STAR_CHECKS", "UNKNOWN_KEY", "VAULT_CHECKS", "GoldResult", "apply_scd1", "apply_scd2",
    "build_star", "build_vault", "hash_key", "hashdiff", "run_checks", "scd1_changes", "scd2_changes",
    "surrogate_key", "up_to_date",
]
