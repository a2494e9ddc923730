"""Recipe + override config loading: types are checked, unknown keys are named."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from vimtool.config import ConfigError, load_config, parse_set


@dataclass
class _Model:
    depth: int = 2
    width: int = 64
    act: str = "gelu"


@dataclass
class _Cfg:
    lr: float = 1e-3
    steps: int = 10
    flip: bool = False
    conditional: Literal["auto", "yes", "no"] = "auto"
    blocks: list[int] = field(default_factory=lambda: [1, 2])
    model: _Model = field(default_factory=_Model)


def test_yaml_recipe_then_override(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("lr: 0.01\nmodel:\n  depth: 6\n")
    cfg = load_config(_Cfg, p, {"steps": 5, "model": {"width": None}} | parse_set(["model.act=relu", "blocks=3,4"]))
    assert cfg.lr == 0.01 and cfg.steps == 5 and cfg.model.depth == 6 and cfg.model.width == 64
    assert cfg.model.act == "relu" and cfg.blocks == [3, 4]


def test_toml_recipe(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("steps = 7\n[model]\nwidth = 32\n")
    cfg = load_config(_Cfg, p)
    assert cfg.steps == 7 and cfg.model.width == 32


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError, match="model.widht"):
        load_config(_Cfg, p)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="'steps'.*integer"):
        load_config(_Cfg, None, parse_set(["steps=many"]))
    with pytest.raises(ConfigError, match="'flip'"):
        load_config(_Cfg, None, {"flip": "maybe"})


def test_yes_no_words_reach_a_choice_of_words(tmp_path):
    # YAML reads `no` as False; a setting whose choices are words gets its word back, from --set and from a recipe
    assert load_config(_Cfg, None, parse_set(["conditional=no"])).conditional == "no"
    assert load_config(_Cfg, None, parse_set(["conditional=yes"])).conditional == "yes"
    p = tmp_path / "r.yaml"
    p.write_text("conditional: no\n")
    assert load_config(_Cfg, p).conditional == "no"
    with pytest.raises(ConfigError, match="'conditional'"):
        load_config(_Cfg, None, parse_set(["conditional=maybe"]))


def test_missing_recipe_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Cfg, tmp_path / "nope.yaml")


@dataclass
class _Train:
    lr: float = 3e-4
    steps: int = 100


@dataclass
class _Cmd:
    train: _Train = field(default_factory=lambda: _Train(lr=1e-4))


def test_partial_section_keeps_the_commands_own_defaults():
    cfg = load_config(_Cmd, None, parse_set(["train.steps=5"]))
    assert cfg.train.steps == 5
    assert cfg.train.lr == 1e-4  # the command's default, not _Train's 3e-4
