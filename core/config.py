"""Settings onto a config dataclass from YAML and ``key=value`` overrides: one rule for every command.

A value given as ``key=value`` text is read by the field's annotation: ``str`` fields take the text as it
is (``out=123`` is the folder ``"123"``), numbers and booleans must parse as such, ``null`` clears an
optional field, and lists and dicts are YAML (``data=[a,b]``). A dotted key sets one entry inside a
dict field (``model_cfg.vision_cfg.width=96``), starting from the field's current value.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

NULLS = ("null", "None", "~")


def parse_value(text: str) -> Any:
    """``text`` as YAML, where ``1e-3`` is a float (PyYAML reads YAML 1.1, whose floats need a dot)."""
    parsed = yaml.safe_load(text)
    if isinstance(parsed, str):
        try:
            return float(parsed)
        except ValueError:
            return parsed
    return parsed


def field_types(cls) -> dict[str, Any]:
    """The resolved annotation of each field of dataclass ``cls`` (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) < len(typing.get_args(hint)):
            return functools.reduce(operator.or_, rest), True
    return hint, False


def coerce(name: str, text: str, hint: Any) -> Any:
    """The value of ``name=text`` for a field annotated ``hint``; a ValueError names the key and the type."""
    base, optional = unwrap_optional(hint)
    if optional and text.strip() in NULLS:
        return None
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if text not in [str(c) for c in choices]:
            raise ValueError(f"{name}={text}: choose one of {', '.join(map(str, choices))}")
        return next(c for c in choices if str(c) == text)
    if base is str:
        return text
    if base is bool:
        value = yaml.safe_load(text)
        if not isinstance(value, bool):
            raise ValueError(f"{name}={text}: expected true or false")
        return value
    if base is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)  # 1e5 steps
        except ValueError:
            value = None
        if value is None or not value.is_integer():
            raise ValueError(f"{name}={text}: expected an integer")
        return int(value)
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name}={text}: expected a number") from None
    return parse_value(text)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default (a fresh one from its factory); ``dataclasses.MISSING`` when it has none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def read_yaml(path: str | os.PathLike, cls) -> dict[str, Any]:
    """The mapping in YAML file ``path``, whose keys must be fields of ``cls``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config file {p} holds a {type(raw).__name__}, not a mapping of settings")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown config keys {unknown} in {p}; valid keys: {', '.join(known)}")
    return raw


def apply_overrides(values: dict[str, Any], items: typing.Iterable[str], cls,
                    prefixes: dict[str, str] | None = None) -> dict[str, Any]:
    """Set ``key=value`` items onto ``values`` (a dict of ``cls`` field values, changed in place, returned).

    ``prefixes`` renames the head of a dotted key (``{"policy": "policy_overrides"}``: ``policy.horizon=4``
    sets ``policy_overrides["horizon"]``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        head, dot, rest = key.partition(".")
        if dot:
            head = (prefixes or {}).get(head, head)
        if head not in fields:
            raise ValueError(f"unknown config keys [{key.partition('.')[0]!r}] (in {item!r}); valid keys: "
                             f"{', '.join(fields)}")
        if not dot:
            values[head] = coerce(key, text, hints[head])
            continue
        current = values[head] if head in values else field_default(fields[head])
        node = {} if current is None else copy.deepcopy(current)
        if not isinstance(node, dict):
            raise ValueError(f"{item!r}: {head} is not a mapping, so {key!r} cannot set an entry in it")
        values[head] = node
        *parents, last = rest.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{item!r}: {part!r} is not a mapping")
        node[last] = parse_value(text)
    return values
