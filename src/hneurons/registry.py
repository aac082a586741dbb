"""One small name → entry registry, so every "which X?" question fails the same way.

The evaluation sets, the detection methods and the intervention benchmarks are each a set of
named entries a user picks from the config. They used to be plain dicts with hand-written
lookups that worded an unknown name three ways; :class:`Registry` is a read-only mapping (so
``name in reg``, ``reg[name]``, ``reg.items()`` keep working) whose :meth:`Registry.get` says
"unknown <kind> 'x'; choose one of a, b, c" and names the config key that held the value
(the pattern of lm-evaluation-harness's ``lm_eval/api/registry.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from hneurons.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (a second registration of a name replaces the first)."""
        self._entries[name] = entry
        return entry

    def get(self, name: str, where: str = "") -> T:  # type: ignore[override]
        """The entry, or a ConfigError naming ``where`` (the config key) and every known name."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}") from None

    def check(self, names: list[str] | tuple[str, ...], where: str) -> None:
        """Every name of a config list is known (the first unknown one is reported)."""
        for name in names:
            self.get(name, where)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
