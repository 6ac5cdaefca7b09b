"""The module names of earlier releases, kept importable.

Notebooks deployed in Synapse workspaces and districts' own flow files import ``oea_core.sql_views``,
``oea_core.production`` and the like. Those modules now live in subpackages (``docs/architecture.md``);
importing an old name gives the module at its new home (the same object, so patching one patches both).
Nothing new should use these names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

MOVED = {
    "oea_core.cloud_lake": "oea_core.lake.cloud",
    "oea_core.csv_source": "oea_core.intake.csv_source",
    "oea_core.diskspace": "oea_core.lake.diskspace",
    "oea_core.flow.tasks": "oea_core.tasks",
    "oea_core.gold_views": "oea_core.sql.view_sets",
    "oea_core.ingest": "oea_core.intake.csv_ingest",
    "oea_core.keyvault": "oea_core.privacy.keyvault",
    "oea_core.landing": "oea_core.intake.landing",
    "oea_core.lease": "oea_core.lake.lease",
    "oea_core.leftovers": "oea_core.lake.leftovers",
    "oea_core.lock": "oea_core.lake.lock",
    "oea_core.paths": "oea_core.lake.paths",
    "oea_core.production": "oea_core.tasks",
    "oea_core.pseudonymize": "oea_core.privacy.pseudonymize",
    "oea_core.redaction": "oea_core.privacy.redaction",
    "oea_core.run_summary": "oea_core.lake.run_summary",
    "oea_core.salt": "oea_core.privacy.salt",
    "oea_core.sftp": "oea_core.intake.sftp",
    "oea_core.spark_paths": "oea_core.intake.spark_paths",
    "oea_core.sql_preview": "oea_core.sql.preview",
    "oea_core.sql_views": "oea_core.sql.views",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module at its new home."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The module ran at its new home; give it back its own spec, which the import system replaced."""
        if module.__spec__ is not None and module.__spec__.name in self._specs:
            module.__spec__ = self._specs.pop(module.__spec__.name)


def install() -> None:
    """Make the old names importable (once per process)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
