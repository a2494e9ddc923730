"""Every recipe in recipes/ loads into the config of the command its header names and builds its model config,
so a recipe never fails only when someone finally runs it on a GPU cluster. Nothing is trained (< 1 s)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from vimtool.config import build, load_config
from vimtool.models import parti as parti_models
from vimtool.models import vitvqgan
from vimtool.models.dual_encoder import DualEncoderConfig
from vimtool.train.lm import LMRunConfig
from vimtool.train.reranker import RerankerRunConfig
from vimtool.train.t2i import T2IRunConfig
from vimtool.train.tokenizer import TokenizerRunConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
COMMANDS = {"train-tokenizer": TokenizerRunConfig, "train-lm": LMRunConfig, "train-t2i": T2IRunConfig,
            "train-reranker": RerankerRunConfig}  # fmt: skip


def _command(recipe: Path) -> str:
    """The training command the recipe's header runs it with (`vimtool train-X --config recipes/NAME`)."""
    m = re.search(
        rf"(train-tokenizer|train-lm|train-t2i|train-reranker) [^\n]*--config recipes/{re.escape(recipe.name)}",
        recipe.read_text(),
    )
    assert m, f"{recipe.name}: its header should show the command that runs it"
    return m.group(1)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_loads_into_its_command_config(recipe):
    command = _command(recipe)
    cfg = load_config(COMMANDS[command], recipe)
    assert cfg.train.steps > 0 and cfg.train.out_dir
    if command == "train-tokenizer":
        model = cfg.model_config()
        assert model.image_size % model.patch_size == 0
    elif command == "train-t2i":
        replace(cfg, shards=cfg.shards or ["given-on-the-command-line"]).check()  # the quickstart passes --shards
        parti_models.size_config(cfg.size, **cfg.model)
    elif command == "train-reranker":
        cfg.check()
        build(DualEncoderConfig, {**cfg.model, "image_size": cfg.image_size or DualEncoderConfig.image_size})
    else:
        model = cfg.model_config(vocab_size=512, grid=(8, 8), num_classes=10)
        assert model.dim % model.heads == 0


def test_paper_recipes_keep_the_paper_numbers():
    tok = load_config(TokenizerRunConfig, RECIPES / "tokenizer_imagenet_ss.yaml").model_config()
    assert (tok.image_size // tok.patch_size, tok.codebook_size, tok.lookup_dim) == (32, 8192, 32)  # 1024 tokens
    assert tok == vitvqgan.size_config("SS", codebook_size=8192, lookup_dim=32, image_size=tok.image_size)
    parti = load_config(T2IRunConfig, RECIPES / "parti_coco_350m.yaml")
    p = parti_models.size_config(parti.size)
    assert (p.enc_depth, p.dec_depth, p.dim, p.mlp_dim, p.heads) == (12, 12, 1024, 4096, 16)
    assert (parti.train.optimizer, parti.train.clip_grad, parti.train.batch_size) == ("adafactor", 4.0, 8192)
