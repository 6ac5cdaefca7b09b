"""Serverless SQL views over the gold layer, beside the source modules' views.

A *view set* is what ``oea views NAME`` writes and ``oea sql --module NAME`` previews: a source
module's outputs (``clever``, ``edfi``, ...) or a gold area, ``vault`` (``stage3p/vault``) or
``star`` (``stage3p/star``). Each gold area gets its own database, named like every other
(:func:`oea_core.sql.views.database_name`): ``sdb_<workspace>_s3p_vault`` and
``sdb_<workspace>_s3p_star``, with one view per table, typed from the Delta tables' schemas. Hash keys and
hashdiffs are ``VARCHAR(64)`` by their names (``*_hk``, ``hashdiff``), and so are the facts' ids, which are
SHA-256 hex too under names that do not say so (:data:`GOLD_SHA256`).
A gold table not built (its source resource is not in the lake yet) has no view, and the script names it;
on a lake whose tables cannot be read here (Synapse), every table gets its view.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import LakePathError
from ..gold.facts import ACTIVITY_KEY
from ..gold.model import GOLD_STAGE, STAR, STAR_TABLES, VAULT, VAULT_TABLES
from ..sources import sources
from .views import table_columns, views_script

if TYPE_CHECKING:
    from ..lake.paths import LakePaths

GOLD_AREAS: dict[str, tuple[str, ...]] = {VAULT: VAULT_TABLES, STAR: STAR_TABLES}
log = logging.getLogger("oea")
# fact_attendance's id is the event's id_pseudonym; fact_digital_activity's is the hash key of its grain
GOLD_SHA256 = ("attendance_event_id", ACTIVITY_KEY)
_ABOUT = {VAULT: "the gold layer's Data Vault (stage3p/vault)", STAR: "the gold layer's star schema (stage3p/star)"}


def gold_tables(area: str) -> list[tuple[str, str]]:
    """``("stage3p", table)`` for each table of a gold area (``vault`` or ``star``); raises LakePathError."""
    if area not in GOLD_AREAS:
        raise LakePathError(f"{area!r} is not a gold area; use one of {sorted(GOLD_AREAS)}", path=area)
    return [(GOLD_STAGE, table) for table in GOLD_AREAS[area]]


def view_set_names() -> list[str]:
    """Every view set: the registered source modules, then the gold areas."""
    return [*sources.names(), *GOLD_AREAS]


def view_tables(lake: LakePaths, name: str) -> list[tuple[str, str]]:
    """``(stage, table)`` of a view set: a gold area's tables, else the source module's outputs.

    Raises the registry's error for a name that is neither.
    """
    if name not in GOLD_AREAS:
        return sources.create(name, lake=lake).outputs()
    missing = set(missing_gold_tables(lake, name))
    return [(stage, table) for stage, table in gold_tables(name) if table not in missing]


def sha256_columns(name: str) -> tuple[str, ...]:
    """Columns of a view set that hold SHA-256 hex under names that do not say so (``VARCHAR(64)``; see
    :func:`oea_core.sql.views.is_sha256_column`): the gold facts' ids, none for a source module."""
    return GOLD_SHA256 if name in GOLD_AREAS else ()


def missing_gold_tables(lake: LakePaths, area: str) -> list[str]:
    """The tables of a gold area not built in the lake (none known on a lake without a local copy)."""
    if lake.root is None:
        return []
    return [table for stage, table in gold_tables(area) if table_columns(lake, stage, area, table) is None]


def view_set_script(lake: LakePaths, name: str, *, account: str | None = None, workspace: str = "dev",
                    data_source: bool = False) -> str:
    """The serverless SQL script of a view set (see :func:`oea_core.sql.views.views_script`)."""
    script = views_script(lake, name, view_tables(lake, name), account=account, workspace=workspace,
                          data_source=data_source, about=_ABOUT.get(name), sha256=sha256_columns(name))
    missing = missing_gold_tables(lake, name) if name in GOLD_AREAS else []
    if not missing:
        return script
    log.warning("%s views: no view of %s (table not built yet)", name, ", ".join(missing))
    head, rest = script.split("\n", 1)
    return f"{head}\n-- No view (table not built): {', '.join(missing)}.\n{rest}"
