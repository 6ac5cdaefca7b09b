"""The registry of source modules: one ``ModuleDescriptor`` per module, one line each below."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import clever, edfi
from .errors import ModuleNotFoundInCatalog, OEAError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .source_module import ModuleDescriptor, SourceModule


class SourceRegistry:
    """Module descriptors by name."""

    def __init__(self) -> None:
        self._descriptors: dict[str, ModuleDescriptor] = {}

    def register(self, descriptor: ModuleDescriptor) -> ModuleDescriptor:
        """Add ``descriptor``; a second module of the same name is an error."""
        if descriptor.name in self._descriptors:
            raise OEAError(f"a source module named {descriptor.name!r} is already registered; give the new "
                           "module another name")
        self._descriptors[descriptor.name] = descriptor
        return descriptor

    def unregister(self, name: str) -> None:
        self._descriptors.pop(name, None)

    def get(self, name: str) -> ModuleDescriptor:
        """The descriptor of ``name``; raises ModuleNotFoundInCatalog listing the known modules."""
        if name not in self._descriptors:
            raise ModuleNotFoundInCatalog(
                f"unknown source module {name!r}; known modules: {', '.join(self.names())}")
        return self._descriptors[name]

    def create(self, name: str, **kwargs: Any) -> SourceModule:
        """The module ``name`` over ``lake=`` (and ``spark=``, ``salt=``, ``engine=``)."""
        return self.get(name).create(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._descriptors)

    def __iter__(self) -> Iterator[ModuleDescriptor]:
        return iter([self._descriptors[name] for name in self.names()])


sources = SourceRegistry()
sources.register(clever.DESCRIPTOR)
sources.register(edfi.DESCRIPTOR)
