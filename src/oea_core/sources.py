"""The registry of source modules: one ``ModuleDescriptor`` per module, one line each below."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import clever, edfi
from .errors import ModuleNotFoundInCatalog, OEAError
from .registry import Registry
from .source_module import ModuleDescriptor

if TYPE_CHECKING:
    from .source_module import SourceModule


class SourceRegistry(Registry[ModuleDescriptor]):
    """Module descriptors by name (sorted); a second module of one name is an error, an unknown name
    raises ModuleNotFoundInCatalog listing the known modules."""

    def __init__(self) -> None:
        super().__init__("source module", duplicate=lambda name: OEAError(
            f"a source module named {name!r} is already registered; give the new module another name"),
            unknown=lambda name, known: ModuleNotFoundInCatalog(
                f"unknown source module {name!r}; known modules: {', '.join(known)}"))

    def create(self, name: str, **kwargs: Any) -> SourceModule:
        """The module ``name`` over ``lake=`` (and ``spark=``, ``salt=``, ``engine=``)."""
        return self.get(name).create(**kwargs)


sources = SourceRegistry()
sources.register(clever.DESCRIPTOR)
sources.register(edfi.DESCRIPTOR)
