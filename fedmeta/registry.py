"""Name → object registries with helpful errors (task families, solvers, strategies, aggregators)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; instances live in the module that defines the registered objects."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (kebab-case)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered (by {_origin(self._items[name])}); "
                               f"valid: a new name, not one of {', '.join(sorted(self._items))}")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; the error lists the valid names."""
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def _origin(obj: object) -> str:
    """The module that defined ``obj`` (a function, class or instance), for error messages."""
    return str(getattr(obj, "__module__", None) or type(obj).__module__)
