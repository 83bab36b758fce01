"""Registries: the one idiom of every plug-in point (datasets, mask sources, stage kinds).

A registry maps a name to a dotted path `module:attribute`, imported on first use, so that listing
names (config validation in the torch-free API) never imports what the entries need. Built-in
entries are one line each in the registry's table; a notebook or a test adds its own at run time
with `register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind of plug-in, loaded lazily from dotted paths."""

    def __init__(self, what: str, builtins: dict[str, str]):
        self.what = what
        self._paths = dict(builtins)
        self._loaded: dict[str, T] = {}  # registered at run time

    def names(self) -> list[str]:
        """Return every registered name, sorted, without importing any entry."""
        return sorted(self._paths.keys() | self._loaded.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._paths or name in self._loaded

    def get(self, name: str) -> T:
        """Return the entry called `name`, importing it on first use; a KeyError lists the registered names."""
        if name in self._loaded:
            return self._loaded[name]
        path = self._paths.get(name)
        if path is None:
            raise KeyError(f"unknown {self.what} {name!r}; registered: {', '.join(self.names())}")
        module, _, attr = path.partition(":")
        # Looked up on every call (the import itself is cached), so patching the module attribute,
        # as a test does to break one stage kind, reaches every caller.
        entry: T = getattr(importlib.import_module(module), attr)
        return entry

    def items(self) -> list[tuple[str, T]]:
        """Return (name, entry) for every entry, sorted by name, importing them all."""
        return [(name, self.get(name)) for name in self.names()]

    def in_order(self) -> list[tuple[str, T]]:
        """Return (name, entry) in registration order: the built-in table's, then run-time registrations'."""
        names = list(self._paths) + [n for n in self._loaded if n not in self._paths]
        return [(name, self.get(name)) for name in names]

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers an entry under `name` at run time.

        Re-registering the same object (a module reload) is harmless; two different entries claiming
        one name is a bug that would otherwise silently pick the last one imported.
        """

        def decorate(entry: T) -> T:
            old = self._loaded.get(name)
            if old is None and name in self._paths:
                old = self.get(name)
            if old is not None and _identity(old) != _identity(entry):
                raise ValueError(f"{self.what} {name!r} is already registered by {_identity(old)}")
            self._loaded[name] = entry
            return entry

        return decorate


def _identity(entry: object) -> str:
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', repr(entry))}"
