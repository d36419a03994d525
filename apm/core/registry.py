"""One registry for every named choice: backbones, init schemes, teachers, losses and metrics.

A :class:`Registry` is a read-only mapping (insertion order, so metrics keep their column
order) with one way to add an entry and one error for a name that is not there, which lists
the choices. Modules register at import time, as timm's and torchvision's model registries do.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, kind: str, error: type[Exception] = ValueError) -> None:
        self.kind = kind  # what an entry is, for messages: "backbone", "loss", ...
        self._error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a second entry of the same name is a ValueError."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, wrap: Callable[[T], T] | None = None) -> Callable:
        """``@registry.decorator(name)``: register the decorated object (through ``wrap``, which
        builds the entry from it) and return it unchanged."""

        def register(obj):
            self.add(name, wrap(obj) if wrap else obj)
            return obj

        return register

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def check(self, name: str) -> None:
        """The registry's error, listing the choices, unless ``name`` is registered."""
        if name not in self._entries:
            raise self._error(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")

    def __getitem__(self, name: str) -> T:
        self.check(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:  # Mapping's would raise the lookup error
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
