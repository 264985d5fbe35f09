"""A stage's `--settings`: one JSON object, read the same way by the command line and by library callers.

Each stage declares its settings as a model: a dataclass deriving from `Settings` whose fields are
the keys, typed, with their defaults and checks given by `setting(...)`. The model is the only place
a default or a check lives; `Model.parse(raw)` (raw: a dict, a JSON object string, or '' / None for
no settings) returns the model with every key filled in, and refuses with one line naming the key:

    profiling.n_postions: unknown key; allowed: T, batch, calib, ...
    profiling.T: expected an integer >= 2 or null, got '2048'

Keys are named by their config path (the model's SECTION, e.g. `profiling`, `prune.recovery`), so
a stage's command line, a library caller and the workflow's dry run (the JSON schema, which
tests/test_stage_settings.py checks against the models) name a bad key the same way.

The stages import this module, never lapr.cli (which imports the stages); lapr.cli exits 2 for a
UsageError, like argparse's own errors, or any other refused input, and 1 for a likely bug.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import numbers
import types
import typing
from typing import Any, ClassVar, Literal, Union, get_args, get_origin



class UsageError(ValueError):
    """A command line that cannot be parsed (exit 2, like argparse's own errors)."""


class SettingsError(ValueError):
    """A settings value a model refuses; str() is one line starting with `where`, the key's config
    path."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where


def settings_object(raw) -> dict:
    """A stage's settings given as a dict or a JSON object string ('' or blank: no settings);
    UsageError (a ValueError) for anything else, so library callers and the CLI get the same
    messages."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:
            raise UsageError(f"--settings is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--settings must be a JSON object, got {type(raw).__name__}")
    return raw


def settings_argument(text: str) -> dict:
    """argparse type for --settings (train, data stages): settings_object's rules, but a blank value
    is an error here, as it always was for these stages."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--settings is empty: pass a JSON object ('{}' for none)")
    try:
        return settings_object(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def setting(default, doc: str = "", *, low=None, high=None, above=None, below=None, choices=None,
            min_items: int | None = None, max_items: int | None = None, unique: bool = False,
            items: dict | None = None):
    """A field of a settings model: its default, what it means (`doc`) and its checks beyond the
    type annotation: numbers in [low, high] and (above, below) (exclusive), a value among `choices`,
    lists (or strings) with min_items..max_items items, `unique` items, and `items` (a dict of these
    checks) applied to each item. Mutable defaults are copied per instance."""
    meta = {"doc": doc, "low": low, "high": high, "above": above, "below": below, "choices": choices,
            "min_items": min_items, "max_items": max_items, "unique": unique, "items": items}
    meta = {k: v for k, v in meta.items() if not (v is None or v is False or v == "")}  # keeps 0
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Settings:
    """Base of the stages' settings models (see the module doc). A subclass sets SECTION, the
    config path its keys are named by, and may override `check` for rules between keys."""

    SECTION: ClassVar[str] = "settings"

    @classmethod
    def parse(cls, raw=None, where: str | None = None):
        """The model from `raw` (dict, JSON object string, or None / '' for the defaults); every
        key checked; SettingsError (one line naming `where.key`) for the first bad one."""
        where = where or cls.SECTION
        raw = settings_object({} if raw is None else raw)
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in allowed:
                raise SettingsError(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        hints = typing.get_type_hints(cls)
        values = {f.name: check_value(raw[f.name], hints[f.name], f.metadata, f"{where}.{f.name}")
                  for f in dataclasses.fields(cls) if f.name in raw}
        model = cls(**values)
        model.check(where)
        return model

    def check(self, where: str) -> None:
        """Rules between keys (a subclass's); SettingsError naming `where.key`."""

    def as_dict(self) -> dict:
        """Every key (nested models as dicts), the form the stages pass around and record."""
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls) -> dict:
        """Every key with its default."""
        return cls().as_dict()

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def subset(model: type[Settings], keys, name: str, section: str, doc: str) -> type[Settings]:
    """A model of some of `model`'s keys, with their types, defaults and checks (one source for a
    section that takes part of another stage's settings, e.g. heads.lm_eval of evaluate)."""
    hints = typing.get_type_hints(model)
    picked = [(f.name, hints[f.name], dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                        metadata=f.metadata))
              for f in dataclasses.fields(model) if f.name in keys]
    return dataclasses.make_dataclass(name, picked, bases=(Settings,), namespace={"SECTION": section, "__doc__": doc})


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Settings)


def _bounds(meta: dict) -> str:
    low, high, above, below = (meta.get(k) for k in ("low", "high", "above", "below"))
    if (low is not None or above is not None) and (high is not None or below is not None):
        left = f"[{low}" if low is not None else f"({above}"
        right = f"{high}]" if high is not None else f"{below})"
        return f" in {left}, {right}"
    for key, sign in (("low", ">="), ("above", ">"), ("high", "<="), ("below", "<")):
        if meta.get(key) is not None:
            return f" {sign} {meta[key]}"
    return ""


def describe(tp, meta: dict | None = None) -> str:
    """What a field accepts, in words: 'an integer >= 2 or null', 'a list of numbers in (0, 1)'."""
    meta = meta or {}
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [describe(a, meta) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if "choices" in meta and origin not in (list, dict):
        return "one of " + ", ".join(map(repr, meta["choices"]))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer" + _bounds(meta)
    if tp is float:
        return "a number" + _bounds(meta)
    if tp is str:
        return "a non-empty string" if meta.get("min_items") else "a string"
    if origin is list:
        inner = describe(args[0], meta.get("items", {})) if args else "anything"
        plural = ("values among " + inner.removeprefix("one of ") if inner.startswith("one of ") else
                  inner.replace("an integer", "integers").replace("a number", "numbers")
                  .replace("a string", "strings").replace("an object", "objects"))
        if meta.get("max_items") is not None and meta.get("min_items") == meta["max_items"]:
            return f"a list of {meta['max_items']} {plural}"
        return ("a non-empty list of " if meta.get("min_items") else "a list of ") + plural
    if origin is dict or tp is dict or _is_model(tp):
        return "an object"
    return getattr(tp, "__name__", str(tp))


def _fail(where: str, tp, meta: dict, value):
    raise SettingsError(where, f"expected {describe(tp, meta)}, got {value!r}")


def _in_bounds(value, meta: dict) -> bool:
    return not ((meta.get("low") is not None and value < meta["low"])
                or (meta.get("high") is not None and value > meta["high"])
                or (meta.get("above") is not None and value <= meta["above"])
                or (meta.get("below") is not None and value >= meta["below"]))


def check_value(value, tp, meta: dict, where: str):
    """`value` checked against type `tp` and the checks in `meta`; returns it (integers as int,
    lists as lists, nested models parsed) or raises SettingsError naming `where`."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            try:
                return check_value(value, options[0], meta, where)
            except SettingsError as e:
                if e.where != where:
                    raise  # an error inside a nested model or list item names its own key
                _fail(where, tp, meta, value)
        for option in options:
            try:
                return check_value(value, option, meta, where)
            except SettingsError:
                continue
        _fail(where, tp, meta, value)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            _fail(where, tp, meta, value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            _fail(where, tp, meta, value)
    elif tp is int:
        # JSON's integers: 4 and 4.0 (as JSON schema), never true / false
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
            _fail(where, tp, meta, value)
        value = int(value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
            _fail(where, tp, meta, value)
    elif tp is str:
        if not isinstance(value, str) or len(value) < meta.get("min_items", 0):
            _fail(where, tp, meta, value)
    elif origin is list:
        if not isinstance(value, (list, tuple)):
            _fail(where, tp, meta, value)
        item_meta = meta.get("items", {})
        value = [check_value(v, args[0], item_meta, f"{where}.{i}") for i, v in enumerate(value)]
        if not meta.get("min_items", 0) <= len(value) <= meta.get("max_items", len(value)):
            _fail(where, tp, meta, value)
        if meta.get("unique") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            raise SettingsError(where, f"{value!r} has non-unique elements")
        return value
    elif origin is dict or tp is dict:
        if not isinstance(value, dict):
            _fail(where, tp, meta, value)
        if args:
            return {k: check_value(v, args[1], meta.get("items", {}), f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    elif _is_model(tp):
        if not isinstance(value, dict):
            _fail(where, tp, meta, value)
        return tp.parse(value, where)
    else:
        raise TypeError(f"{where}: settings type {tp!r} is not supported")
    if "choices" in meta and value not in meta["choices"]:
        _fail(where, tp, meta, value)
    if isinstance(value, numbers.Real) and not _in_bounds(value, meta):
        _fail(where, tp, meta, value)
    return value


__all__ = ["Settings", "SettingsError", "UsageError", "check_value", "describe", "setting", "settings_argument",
           "settings_object", "subset"]
