"""Turning raw YAML mappings into typed configuration sections, and dotted overrides.

:func:`build_section` checks every key of a section against its dataclass (unknown keys and
values of the wrong type raise :class:`ConfigError` naming ``section.key``);
:func:`apply_overrides` applies ``section.key=value`` strings to a raw mapping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from hip_head.errors import HIPError

__all__ = ["ConfigError", "apply_overrides", "build_section"]


class ConfigError(HIPError, ValueError):
    """A configuration key is unknown or its value is invalid."""


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits the (simple) type ``annotation``."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin in (list, Sequence):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping):
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def build_section(name: str, section_cls: type, raw: Any) -> Any:
    """The dataclass ``section_cls`` built from the raw mapping ``raw`` of section ``name``.

    Raises:
        ConfigError: ``raw`` is not a mapping, a key is unknown or a value has the wrong type.
    """
    if raw is None:
        return section_cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(section_cls)
    fields = {f.name for f in dataclasses.fields(section_cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[f'{name}.{k}' for k in unknown]}; "
            f"allowed in {name!r}: {sorted(fields)}"
        )
    values = {}
    for key, value in raw.items():
        if name == "data" and key in ("train", "val", "test") and isinstance(value, str):
            value = [value]  # a single file is a list of one
        if isinstance(value, str) and _accepts_float(hints[key]):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads `1e-3` as a string
                value = float(value)
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{name}.{key} = {value!r} is not a valid {_describe(hints[key])}")
        values[key] = float(value) if _accepts_float(hints[key]) and value is not None else value
    return section_cls(**values)


def _accepts_float(annotation: Any) -> bool:
    if annotation is float:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return float in typing.get_args(annotation)
    return False


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "choice among " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return str(annotation).replace("typing.", "")


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``"section.key=value"`` overrides to a nested dict (a copy).

    Deeper dotted names set nested mappings, e.g. ``loss.terms.my_term.weight=2``.

    Raises:
        ConfigError: an override without ``=``, without a ``section.key`` name, or through a
            value that is not a mapping.
    """
    import copy

    import yaml

    out = copy.deepcopy(dict(raw))
    for item in overrides:
        name, sep, text = item.partition("=")
        parts = name.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: bad value: {exc}") from exc
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                what = "section" if depth == 0 else "mapping"
                raise ConfigError(f"override {item!r}: {where!r} is not a {what}")
            node = child
        node[parts[-1]] = value
    return out
