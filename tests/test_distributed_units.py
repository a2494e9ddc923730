"""vimtool/train/distributed.py in one process: activation checkpointing, sharding hints, the micro-batch rule.

The 2-process runs are in tests/test_distributed.py (slow); these are fast. FSDP here runs on a 1-rank gloo group
(`fsdp_mesh` forms it), which shards every parameter into a DTensor just as N ranks would.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vimtool.errors import VimtoolError
from vimtool.models.parti import Parti
from vimtool.models.parti import size_config as parti_size
from vimtool.models.vim import VIM, VIMConfig
from vimtool.models.vitvqgan import ViTVQGAN, size_config
from vimtool.nn.noble import NobleConfig
from vimtool.nn.transformer import Block
from vimtool.train import TrainConfig
from vimtool.train import distributed as D
from vimtool.train.optim import param_groups
from vimtool.train.setup import derive_grad_accum


def _vim(**kw) -> VIM:
    return VIM(VIMConfig(vocab_size=64, grid=(4, 4), dim=32, depth=2, heads=2, mlp_dim=64, num_classes=3, **kw))


def _loss_fns():
    """(name, build, loss) for one model of each family, with dropout on where the family has it."""
    x_img = torch.rand(2, 3, 16, 16) * 2 - 1
    toks = torch.randint(0, 64, (2, 16))
    text = torch.randint(0, 50, (2, 6))
    return [
        ("tokenizer", lambda: ViTVQGAN(size_config("micro", dropout=0.1)), lambda m: m(x_img)[0].square().mean()),
        ("vim", lambda: _vim(dropout=0.1), lambda m: F.cross_entropy(m(toks[:, :-1], torch.tensor([0, 2])).flatten(0, 1), toks.flatten())),
        ("parti", lambda: Parti(parti_size("micro", text_vocab_size=50, codebook_size=64, grid=(4, 4), dropout=0.1)),
         lambda m: m(text, torch.ones_like(text, dtype=torch.bool), toks).float().logsumexp(-1).mean()),
    ]  # fmt: skip


@pytest.mark.parametrize("name,build,loss_fn", _loss_fns(), ids=lambda v: v if isinstance(v, str) else "")
def test_activation_checkpointing_gives_the_same_gradients(name, build, loss_fn):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build()
        if checkpointing:
            assert D.apply_activation_checkpointing(model) >= 2  # every transformer block of the family
        torch.manual_seed(1)  # the same dropout draws; the recomputation replays them from the saved RNG state
        loss_fn(model).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=f"{name}: {n}")


def test_checkpointing_is_off_for_cached_decoding_and_no_grad():
    model = _vim()
    D.apply_activation_checkpointing(model)
    assert all(b.activation_checkpointing for b in model.modules() if isinstance(b, Block))
    with torch.no_grad():  # a recompute wrapper here would only cost time: plain forward
        out = model(torch.randint(0, 64, (1, 15)), torch.tensor([1]))
    assert out.shape == (1, 16, 64) and out.grad_fn is None


@pytest.fixture
def mesh():
    mesh, owns = D.fsdp_mesh(torch.device("cpu"))
    yield mesh
    if owns:
        dist.destroy_process_group()


def test_fsdp_shards_every_parameter_and_noble_lr_groups_survive(mesh):
    torch.manual_seed(0)
    plain = _vim(noble=NobleConfig(rank=4), dropout=0.0, label_dropout=0.0)
    torch.manual_seed(0)
    sharded = D.parallelize(_vim(noble=NobleConfig(rank=4), dropout=0.0, label_dropout=0.0), mesh=mesh)
    assert D.is_sharded(sharded) and not D.is_sharded(plain)
    assert all(type(p).__name__ == "DTensor" for p in sharded.parameters())
    before = [(g["lr_mult"], g["weight_decay"], g["param_names"]) for g in param_groups(plain, 1e-3, 0.1)]
    after = [(g["lr_mult"], g["weight_decay"], g["param_names"]) for g in param_groups(sharded, 1e-3, 0.1)]
    assert after == before and len({m for m, _, _ in before}) > 1  # NOBLE's multipliers kept their own groups
    # the clip norm over DTensor gradients equals the plain one
    x = torch.randint(0, 64, (2, 16))
    for m in (plain, sharded):
        F.cross_entropy(m(x[:, :-1], torch.tensor([0, 1])).flatten(0, 1), x.flatten()).backward()
    torch.testing.assert_close(
        D.clip_grad_norm_(list(sharded.parameters()), 1e9), torch.nn.utils.clip_grad_norm_(plain.parameters(), 1e9)
    )

    # gathered(): a write to the full codebook-like parameter lands in the shards (what a codebook restart does)
    head = sharded.head if hasattr(sharded, "head") else next(m for m in sharded.modules() if hasattr(m, "weight"))
    with D.gathered(head) as h:
        h.weight.data.fill_(0.5)
    assert torch.equal(head.weight.full_tensor(), torch.full_like(head.weight.full_tensor(), 0.5))


def test_micro_batch_derives_the_accumulation_from_the_process_count():
    cfg = TrainConfig(batch_size=64, micro_batch=8)
    assert derive_grad_accum(cfg, 1).grad_accum == 8 and derive_grad_accum(cfg, 8).grad_accum == 1
    assert derive_grad_accum(TrainConfig(batch_size=64, grad_accum=4), 2).grad_accum == 4  # without micro_batch
    with pytest.raises(VimtoolError, match="not a multiple of micro_batch x processes"):
        derive_grad_accum(cfg, 3)
    with pytest.raises(VimtoolError, match="contradicts micro_batch"):
        derive_grad_accum(TrainConfig(batch_size=64, micro_batch=8, grad_accum=2), 1)
