"""A shared trained micro Parti for the Parti / API / demo tests (session fixture `parti_world`).

A randomly initialised micro image tokenizer, captioned shards of `shapes` captions with random tokens, and a
Parti trained 4 steps: enough for real checkpoints, sampling and reranking, not for good images.
"""

from __future__ import annotations

import pytest
import torch

_WORLD: dict = {}


@pytest.fixture(scope="session")
def parti_world(tmp_path_factory):
    """{root, tokenizer, shards, ckpt}; tests must not change these files (copy them first)."""
    from vimtool.checkpoint import save_model, tokenizer_identity
    from vimtool.data import shapes
    from vimtool.data.shards import ShardWriter, TokenizerIdentity
    from vimtool.models.vitvqgan import SIZES as TOK_SIZES
    from vimtool.models.vitvqgan import ViTVQGAN
    from vimtool.train.engine import TrainConfig
    from vimtool.train.t2i import T2IRunConfig, train_t2i

    if _WORLD:
        return _WORLD
    root = tmp_path_factory.mktemp("parti")
    torch.manual_seed(0)
    tok_dir = save_model(ViTVQGAN(TOK_SIZES["micro"]), root / "tok")
    identity = TokenizerIdentity.from_dict(tokenizer_identity(tok_dir))
    g = torch.Generator().manual_seed(0)
    with ShardWriter(root / "shards", identity, rows_per_shard=40) as w:
        caps = shapes.captions(96, "train")
        w.add_batch(
            torch.randint(0, identity.codebook_size, (96, identity.num_tokens), generator=g),
            None,
            caps,
            [f"s{i}" for i in range(96)],
        )
    cfg = T2IRunConfig(
        shards=[str(root / "shards")], size="micro", text_vocab_size=300, val_fraction=0.1,
        train=TrainConfig(out_dir=str(root / "run"), steps=4, batch_size=8, lr=1e-3, save_every=0, log_every=2, progress=False),
    )  # fmt: skip
    _WORLD.update(root=root, tokenizer=tok_dir, shards=root / "shards", ckpt=train_t2i(cfg))
    return _WORLD
