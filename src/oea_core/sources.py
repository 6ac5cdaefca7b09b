"""The registry of source modules (Clever, Ed-Fi)."""

from __future__ import annotations

from collections.abc import Callable

from .errors import ModuleNotFoundInCatalog


class SourceRegistry:
    """Holds source module factories by name."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable] = {}
        self._notebooks: dict[str, tuple[str, ...]] = {}

    def register(self, name: str, factory: Callable, notebooks: tuple[str, ...] = ()) -> None:
        """Register ``factory(lake=..., spark=...)`` and the notebooks ``oea run`` executes, in order."""
        self._factories[name] = factory
        self._notebooks[name] = notebooks

    def get(self, name: str) -> Callable:
        """The factory for ``name``; raises ModuleNotFoundInCatalog listing the known modules."""
        if name not in self._factories:
            raise ModuleNotFoundInCatalog(
                f"unknown source module {name!r}; known modules: {', '.join(sorted(self._factories))}")
        return self._factories[name]

    def notebooks(self, name: str) -> tuple[str, ...]:
        self.get(name)
        return self._notebooks[name]

    def names(self) -> list[str]:
        return sorted(self._factories)


def _clever(**kwargs):
    from .clever import CleverModule

    return CleverModule(**kwargs)


def _edfi(**kwargs):
    from .edfi import EdFiModule

    return EdFiModule(**kwargs)


sources = SourceRegistry()
sources.register("clever", _clever, notebooks=("clever/Clever_module_ingestion.ipynb",))
sources.register("edfi", _edfi, notebooks=("edfi/EdFi_1_land.ipynb", "edfi/EdFi_2_ingest.ipynb",
                                           "edfi/EdFi_3_refine.ipynb"))
