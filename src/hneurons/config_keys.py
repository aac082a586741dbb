"""The ``section.key`` names of :class:`~hneurons.config.Config` as data: their types, defaults and values.

Why a module of its own: ``--set``, TOML files and ``hneurons config show`` all need the same
answer to "what is this key and what type does it take". :func:`coerce` turns a string or TOML
value into a key's type (one-line :class:`~hneurons.errors.ConfigError` otherwise),
:func:`check_keys` checks every key against its declaration in :mod:`hneurons.config_sections`
(choices, ranges) and turns pydantic's report into that same one line, and :func:`describe`
lists every key with its description, default and the value a resolved config holds, so a
researcher can see what a preset or a run directory actually changes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from hneurons.errors import ConfigError
from hneurons.trust import is_caller_only


@dataclass(frozen=True)
class KeyInfo:
    """One config key: its type, the dataclass default (= the paper preset), the resolved value and its meaning."""

    key: str  # "section.key", or "seed"
    type: str  # e.g. "int", "str | None", "list[float]", "[hf|vllm|openai]"
    default: Any
    value: Any
    caller_only: bool  # loads code or opens a connection: never taken from a run directory
    description: str  # one line, from the key's Field(description=...)

    @property
    def changed(self) -> bool:
        """Whether the resolved value differs from the default."""
        return self.value != self.default

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json``."""
        return {**dataclasses.asdict(self), "changed": self.changed}


def type_name(typ: Any) -> str:
    """A readable name for a field's type hint (``str | None``, ``list[float]``, ``[chat|plain]``)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is Literal:
        return "[" + "|".join(str(a) for a in args) + "]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    return "None" if typ is type(None) else getattr(typ, "__name__", str(typ))


def _fields(obj: Any, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """``(key, type hint, value, description)`` for every leaf field of a (nested) config dataclass, in order."""
    hints = typing.get_type_hints(type(obj))
    declared = getattr(type(obj), "__pydantic_fields__", {})
    out: list[tuple[str, Any, Any, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(_fields(value, f"{prefix}{f.name}."))
        else:
            info = declared.get(f.name)
            out.append((f"{prefix}{f.name}", hints[f.name], value, (info and info.description) or ""))
    return out


def describe(cfg: Any) -> list[KeyInfo]:
    """Every key of ``cfg`` with its type, its default (a fresh ``type(cfg)()``), its value in ``cfg`` and
    its description."""
    defaults = {key: value for key, _, value, _ in _fields(type(cfg)())}
    return [KeyInfo(key, type_name(hint), defaults[key], value, is_caller_only(key), text)
            for key, hint, value, text in _fields(cfg)]


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _allowed(hint: Any, info: Any) -> str:
    """What a key accepts, in words: its choices, its range, or its type."""
    inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    if typing.get_origin(inner[0]) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(inner[0]))
    bounds = [f"{sign} {getattr(m, name)}" for m in getattr(info, "metadata", ()) for name, sign in _BOUNDS
              if getattr(m, name, None) is not None]
    name = type_name(inner[0])
    text = " and ".join(bounds) if bounds else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    return text + (" (or none)" if len(inner) < len(typing.get_args(hint)) else "")


def check_keys(cfg: Any) -> None:
    """Check every key of ``cfg`` against its declared type, choices and range (pydantic), or raise one
    :class:`ConfigError` line: ``KEY must be ALLOWED, got VALUE (DESCRIPTION)``.

    Values are only checked, never replaced, so the recorded config (and every fingerprint) is what
    the presets, files and ``--set`` gave.
    """
    try:
        TypeAdapter(type(cfg)).validate_python(dataclasses.asdict(cfg))
    except ValidationError as exc:
        err = exc.errors()[0]
        owner, names = cfg, []
        for part in err["loc"]:  # (section, key), then a list index pydantic may add
            names.append(str(part))
            if not dataclasses.is_dataclass(getattr(owner, names[-1])):
                break
            owner = getattr(owner, names[-1])
        hint = typing.get_type_hints(type(owner))[names[-1]]
        info = type(owner).__pydantic_fields__[names[-1]]
        raise ConfigError(f"{'.'.join(names)} must be {_allowed(hint, info)}, got {err.get('input')!r} "
                          f"({info.description})") from None


def recorded_config(root: str | Path, overrides: Mapping[str, Any] | None = None,
                    note: Callable[[str], None] | None = None) -> Any:
    """A run directory's recorded config (then ``overrides``), read as data: no model is resolved or
    loaded and no connection opened; caller-only keys it records are dropped, with a ``note``."""
    from hneurons.trust import caller_config, read_manifest, recorded_settings

    root = Path(root)
    settings = recorded_settings(read_manifest(root), root / "manifest.json")
    return caller_config(settings, dict(overrides or {}), source=str(root / "manifest.json"), note=note)


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Turn a TOML value or a ``--set`` string into the field's type, or explain why not."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null", ""}):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is list:
        (inner,) = args
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.strip("[]").split(",")) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, inner, key) for v in value]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in {"true", "1", "yes", "on"}:
                return True
            if str(value).lower() in {"false", "0", "no", "off"}:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    return value
