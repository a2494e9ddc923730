"""Recipe files + command-line overrides -> typed dataclasses, with one-line errors naming the key.

Every command's settings are a dataclass (nested dataclasses allowed, e.g. `model`, `optim`). A recipe is a
YAML or TOML file with the same keys; the command line overrides any of them, either through a typed option
(`--lr 3e-4`) or generically (`--set model.depth=4`). Unknown keys and wrong types are `ConfigError`s that
name the key and say what was expected, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomllib
import yaml

from vimtool.errors import VimtoolError

T = TypeVar("T")


class ConfigError(VimtoolError):
    """A recipe or override that does not fit the command's typed config."""


def require_positive(what: str, **sizes: int) -> None:
    """A ConfigError naming every one of `sizes` (widths, depths, heads, counts) that is not a whole number >= 1:
    a size of 0 or -4 would otherwise surface as a tensor error deep inside the model, or build a model of nothing."""
    bad = [f"{k}={v!r}" for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ConfigError(f"{what}: {', '.join(bad)} must be >= 1")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON recipe into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {p} not found; give the path of a .yaml, .toml or .json file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"recipe {p}: unknown format {p.suffix!r}; use .yaml, .toml or .json")
    except ConfigError:
        raise
    except Exception as e:  # parser errors: keep the parser's line/column, on one line
        raise ConfigError(f"recipe {p} does not parse: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {p} must hold a mapping of keys to values at the top level")
    return data


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`["model.depth=4", "lr=3e-4"]` -> nested dict. Values are parsed as YAML scalars/lists (4 -> int)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.depth=4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except Exception:
            value = raw
        _set_dotted(out, key.strip(), value)
    return out


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        d = d.setdefault(part, {})
        if not isinstance(d, dict):
            raise ConfigError(f"key {key!r}: {part!r} is a value, not a section")
    d[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) mapping, checking every key and type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a section (mapping), got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{prefix}{key}'; known keys here: {known}")
        value = _over_section_default(fields[key], hints[key], value)
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None
    return obj


def _over_section_default(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A partial section (`train: {steps: 5}`) overrides the field's OWN default section, not the section
    class's defaults: a command whose `train` default says lr=1e-4 keeps it when only `steps` is given."""
    if not (dataclasses.is_dataclass(tp) and isinstance(value, Mapping)):
        return value
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return value
    return deep_merge(to_dict(default), value)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"key {key!r}: bad value {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            # YAML 1.1 reads yes/no/on/off/true/false as booleans: give a word choice back its word
            words = ("yes", "true", "on") if value else ("no", "false", "off")
            value = next((a for a in args if isinstance(a, str) and a.lower() in words), value)
        if value not in args:
            raise ConfigError(f"key {key!r}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key {key!r}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"key {key!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"key {key!r}: expected an integer, got {value!r}")
        try:
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        except (ValueError, OverflowError):
            raise ConfigError(f"key {key!r}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"key {key!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"key {key!r}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def load_config(cls: type[T], recipe: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """defaults <- recipe file <- overrides (nested dict; None values are ignored, meaning 'not given')."""
    data: dict[str, Any] = read_recipe(recipe) if recipe else {}
    data = deep_merge(data, _drop_none(overrides or {}))
    return build(cls, data)


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            v = _drop_none(v)
            if not v:
                continue
        if v is not None:
            out[k] = v
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config -> plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))
