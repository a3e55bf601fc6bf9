"""A strict name registry (timm ``_registry.py`` / torchvision ``_api.py`` style)."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hwnas.core.errors import UnknownNameError

T = TypeVar("T")


def unknown_name(kind: str, name: str, choices: list[str]) -> UnknownNameError:
    """The error for an unknown ``name``: lists the choices and suggests the closest."""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return UnknownNameError(f"unknown {kind} '{name}'.", f"{hint}choose one of: {', '.join(sorted(choices))}")


class Registry(Generic[T]):
    """Register by name; ``get`` an entry; ``list`` names matching a glob. Duplicates raise."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, list(self._items)) from None

    __getitem__ = get

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())
