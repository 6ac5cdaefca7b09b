"""One shape for oea_core's registries: things by name, each name once.

The source modules (``sources``), the flow step kinds (``flow.step_kinds``), the Delta engines
(``delta.engines``) and the submission pipelines (``submissions.pipelines``) are each a
``Registry``: ``register`` refuses a second thing of a name already registered (an error naming
it), ``get`` of an unknown name raises an error listing the known ones. Each registry says what
it holds and raises its own error classes with its own words (``duplicate``, ``unknown``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import OEAError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T = TypeVar("T")


def _name(item: Any) -> str:
    return str(item.name)


class Registry(Generic[T]):
    """``T``s by name (``key``, by default their ``name``); ``names()`` and iteration are sorted by name,
    or in the order of registration when ``ordered``.

    ``duplicate(name)`` and ``unknown(name, known_names)`` make the errors ``register`` and ``get``
    raise; by default OEAErrors calling the things ``what``.
    """

    def __init__(self, what: str, *, key: Callable[[T], str] = _name, ordered: bool = False,
                 duplicate: Callable[[str], Exception] | None = None,
                 unknown: Callable[[str, list[str]], Exception] | None = None) -> None:
        self.what = what
        self._key = key
        self._ordered = ordered
        self._duplicate = duplicate or (lambda name: OEAError(
            f"a {what} named {name!r} is already registered; give the new one another name"))
        self._unknown = unknown or (lambda name, known: OEAError(
            f"unknown {what} {name!r}; known: {', '.join(known) or '(none)'}"))
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        """Add ``item``; a second one of the same name is an error (``duplicate``). Returns ``item``."""
        name = self._key(item)
        if name in self._items:
            raise self._duplicate(name)
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Forget ``name`` (nothing when it is not registered)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The one called ``name``; raises ``unknown`` listing the known names."""
        if name not in self._items:
            raise self._unknown(name, self.names())
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items) if self._ordered else sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter([self._items[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._items)
