"""Shared fixtures for the VIM / sampling / probe tests: a micro tokenizer checkpoint, token shards, a trained VIM.

The tokenizer is a randomly initialised micro ViT-VQGAN (16x16 images, 4x4 grid, 64 codes): it gives the shards a
real identity (sha256 of real weights) and the sampler something to decode with. The tokens themselves are
synthetic: class k's rows follow a fixed pattern (t_i = 7k + 3i mod 64) with 20% of positions replaced by random
ids, so a model that uses the class token can learn them in a few dozen steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vimtool.checkpoint import save_model, tokenizer_identity
from vimtool.data.shards import ShardWriter, TokenizerIdentity

VOCAB, GRID, CLASSES = 64, (4, 4), 3


def make_tokenizer(folder: Path, seed: int = 0) -> Path:
    from vimtool.models.vitvqgan import ViTVQGAN, size_config

    torch.manual_seed(seed)
    return save_model(ViTVQGAN(size_config("micro")), folder)


def pattern_tokens(n: int, classes: int = CLASSES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    T = GRID[0] * GRID[1]
    base = (7 * labels[:, None] + 3 * np.arange(T)[None, :]) % VOCAB  # (n, T)
    noise = rng.integers(0, VOCAB, size=(n, T))
    keep = rng.random((n, T)) < 0.8
    return np.where(keep, base, noise).astype(np.uint16), labels


def make_shards(
    folder: Path, tokenizer: Path, n: int = 96, labels: bool = True, seed: int = 0, rows_per_shard: int = 48
) -> list[Path]:
    identity = TokenizerIdentity.from_dict(tokenizer_identity(tokenizer))
    toks, labs = pattern_tokens(n, seed=seed)
    with ShardWriter(folder, identity, rows_per_shard=rows_per_shard) as w:
        w.add_batch(toks, list(labs) if labels else None)
    return list(w.written)


def lm_config(shards, out_dir: Path, steps: int = 40, **over):
    from vimtool.config import load_config

    data = {
        "shards": [str(s) for s in shards], "size": "micro", "val_fraction": 0.25,
        "model": {"dropout": 0.0, "label_dropout": 0.2},
        "train": {"steps": steps, "batch_size": 16, "lr": 3e-3, "min_lr": 1e-4, "warmup_steps": 5, "schedule": "cosine",
                  "decay_start": 0, "save_every": 0, "eval_every": 0, "log_every": 10, "out_dir": str(out_dir),
                  "progress": False},
    }  # fmt: skip
    for k, v in over.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    from vimtool.train.lm import LMRunConfig

    return load_config(LMRunConfig, None, data)


_WORLD: dict = {}


@pytest.fixture(scope="session")
def vim_world(tmp_path_factory):
    """{tokenizer, other_tokenizer, shards, ckpt}: a micro VIM trained 60 steps on the pattern shards.

    Memoised at module level: test modules that import this fixture share one trained model per session."""
    from vimtool.train.lm import train_lm

    if _WORLD:
        return _WORLD
    root = tmp_path_factory.mktemp("vim_world")
    tok = make_tokenizer(root / "tok")
    other = make_tokenizer(root / "tok_other", seed=1)
    shards = make_shards(root / "shards", tok)
    ckpt = train_lm(lm_config(shards, root / "run", steps=60))
    _WORLD.update(root=root, tokenizer=tok, other_tokenizer=other, shards=shards, ckpt=ckpt)
    return _WORLD


def hub_cache(root: Path, repo: str, src: Path) -> str:
    """Lay out `src` in a Hub cache exactly as huggingface_hub does: models--org--name/{refs/main, snapshots/<sha>/}.

    Returns the commit; with HF_HUB_CACHE=root and HF_HUB_OFFLINE=1 (conftest) `repo` then resolves to it."""
    import hashlib
    import shutil

    commit = hashlib.sha1(repo.encode()).hexdigest()
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    shutil.copytree(src, base / "snapshots" / commit)
    return commit
