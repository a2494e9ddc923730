"""model_type -> (config class, model class): how a checkpoint folder finds the code that reads it.

A checkpoint's `config.json` names its `model_type` ("vitvqgan", "vim", "parti", ...). `load_model` asks this
registry for the classes, builds the config dataclass from the saved dict and the model from the config.

Registering a model (in its own module, at import time)::

    @register_model
    class VIM(nn.Module):
        model_type = "vim"
        config_class = VIMConfig      # optional: else the type hint of __init__'s `config` argument
        def __init__(self, config: VIMConfig): ...

The built-in model modules are imported lazily, the first time their type is asked for, so that loading a
tokenizer does not import the text-to-image model (and a broken optional module only fails when it is used).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, TypeVar

from vimtool.errors import VimtoolError

M = TypeVar("M", bound=type)

# model_type -> module that registers it when imported. Add a line here for a new built-in model family.
BUILTIN_MODULES: dict[str, str] = {
    "vitvqgan": "vimtool.models.vitvqgan",
    "vim": "vimtool.models.vim",
    "parti": "vimtool.models.parti",
    "dual_encoder": "vimtool.models.dual_encoder",
}

_REGISTRY: dict[str, tuple[type, type]] = {}


def _config_class_of(cls: type) -> type:
    explicit = getattr(cls, "config_class", None)
    if explicit is not None:
        return explicit
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception as e:  # unresolvable annotation: the model must say it explicitly
        raise TypeError(
            f"{cls.__name__}: cannot read __init__ annotations ({e}); set `config_class` on the class"
        ) from e
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    name = "config" if "config" in hints else (params[0] if params else None)
    tp = hints.get(name) if name else None
    if not isinstance(tp, type):
        raise TypeError(f"{cls.__name__}: annotate __init__(self, config: XConfig) or set `config_class`")
    return tp


def register_model(cls: M | None = None, *, config_class: type | None = None) -> Any:
    """Register a model class under its `model_type`; usable as `@register_model` or `register_model(cls)`."""

    def _do(c: M) -> M:
        model_type = getattr(c, "model_type", None)
        if not isinstance(model_type, str) or not model_type:
            raise TypeError(f'{c.__name__} needs a class attribute `model_type = "..."` to be registered')
        cfg_cls = config_class or _config_class_of(c)
        _REGISTRY[model_type] = (cfg_cls, c)
        return c

    return _do(cls) if cls is not None else _do


def _lookup(model_type: str) -> tuple[type, type]:
    if model_type not in _REGISTRY and model_type in BUILTIN_MODULES:
        module = BUILTIN_MODULES[model_type]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise VimtoolError(
                f"model type '{model_type}' lives in {module}, which failed to import ({e}); "
                "check that vimtool is fully installed (pip install -e .)"
            ) from e
    if model_type not in _REGISTRY:
        known = ", ".join(known_model_types()) or "none"
        raise VimtoolError(
            f"unknown model_type '{model_type}' (known: {known}); the checkpoint was written by other code "
            "or a newer vimtool: upgrade vimtool or import the module that registers it"
        )
    return _REGISTRY[model_type]


def get_model_class(model_type: str) -> type:
    """The model class registered for `model_type` (built-ins are imported on first use)."""
    return _lookup(model_type)[1]


def get_config_class(model_type: str) -> type:
    """The config dataclass registered for `model_type`."""
    return _lookup(model_type)[0]


def known_model_types() -> list[str]:
    """Registered plus built-in (not yet imported) model types, sorted."""
    return sorted(set(_REGISTRY) | set(BUILTIN_MODULES))
