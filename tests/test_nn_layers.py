"""Layers: attention against a written-out reference, MLP variants, norms, position embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from vimtool.config import ConfigError
from vimtool.errors import VimtoolError
from vimtool.nn import MLP, Attention, LearnedPos1D, LearnedPos2D, NobleConfig, make_norm, sincos_2d
from vimtool.nn.layers import ChannelsLastConv2d


def _reference_attention(q, k, v, keep):
    """softmax(q k^T / sqrt(d)) v with a bool keep-mask (B, H, T, S), all (B, H, *, Dh)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(-1) @ v


def _split(t, heads):
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)  # (B, H, T, Dh)


@pytest.mark.parametrize("noble", [None, NobleConfig(rank=3)], ids=["fused-qkv", "noble-qkv"])
def test_causal_self_attention_with_padding_matches_the_formula(noble):
    torch.manual_seed(0)
    b, t, d, h = 2, 6, 16, 4
    attn = Attention(d, h, noble=noble).eval()
    x = torch.randn(b, t, d)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    if attn.fused:
        q, k, v = attn.qkv(x).split(d, dim=-1)
    else:
        q, k, v = attn.q(x), attn.k(x), attn.v(x)
    keep = torch.ones(t, t, dtype=torch.bool).tril()[None, None] & pad[:, None, None, :]
    ref = _reference_attention(_split(q, h), _split(k, h), _split(v, h), keep)
    ref = attn.out(ref.transpose(1, 2).reshape(b, t, d))
    torch.testing.assert_close(attn(x, mask=pad, causal=True), ref, rtol=1e-5, atol=1e-5)
    assert attn.fused == (noble is None)


@pytest.mark.parametrize("noble", [None, NobleConfig(rank=3)], ids=["fused-qkv", "grouped-noble-qkv"])
def test_self_attention_gradients_match_the_formula(noble):
    # the fused qkv split (unbind) and the grouped NOBLE q/k/v Function both have their own backward paths
    torch.manual_seed(0)
    b, t, d, h = 2, 5, 16, 4
    attn = Attention(d, h, noble=noble)
    x = torch.randn(b, t, d, requires_grad=True)
    upstream = torch.randn(b, t, d)
    params = [x, *attn.parameters()]
    grads = torch.autograd.grad(attn(x, causal=True), params, upstream)
    if attn.fused:
        q, k, v = attn.qkv(x).split(d, dim=-1)
    else:
        assert attn.group_qkv
        q, k, v = attn.q(x), attn.k(x), attn.v(x)  # each layer on its own (not grouped)
    keep = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    ref = _reference_attention(_split(q, h), _split(k, h), _split(v, h), keep)
    ref = attn.out(ref.transpose(1, 2).reshape(b, t, d))
    ref_grads = torch.autograd.grad(ref, params, upstream)
    for p, g, r in zip(params, grads, ref_grads):
        assert r.abs().max() > 0
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5, msg=lambda m: f"{tuple(p.shape)}: {m}")


def test_cross_attention_matches_the_formula():
    torch.manual_seed(0)
    b, t, s, d, cd, h = 2, 3, 5, 16, 10, 2
    attn = Attention(d, h, cross=True, context_dim=cd).eval()
    x, ctx = torch.randn(b, t, d), torch.randn(b, s, cd)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    k, v = attn.kv(ctx).split(d, dim=-1)
    keep = mask[:, None, None, :].expand(b, h, t, s)
    ref = _reference_attention(_split(attn.q(x), h), _split(k, h), _split(v, h), keep)
    ref = attn.out(ref.transpose(1, 2).reshape(b, t, d))
    torch.testing.assert_close(attn(x, ctx, mask=mask), ref, rtol=1e-5, atol=1e-5)


def test_width_not_divisible_by_heads_is_a_config_error():
    with pytest.raises(ConfigError, match="heads"):
        Attention(30, 4)


def test_mlp_tanh_gelu_variant_differs_and_bad_activation_is_rejected():
    torch.manual_seed(0)
    exact = MLP(8, 32, "gelu")
    tanh = MLP(8, 32, "gelu_tanh")
    tanh.load_state_dict(exact.state_dict())
    x = 3 * torch.randn(4, 8)
    a, b = exact(x), tanh(x)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-2)  # same function up to the approximation
    with pytest.raises(ConfigError, match="gelu"):
        MLP(8, 32, "swiglu")


def test_norms():
    x = torch.randn(3, 8) * 5 + 2
    ln = make_norm("layernorm", 8)(x)
    torch.testing.assert_close(ln.mean(-1), torch.zeros(3), rtol=0, atol=1e-5)
    rms = make_norm("rmsnorm", 8)(x)
    torch.testing.assert_close(rms.square().mean(-1), torch.ones(3), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="layernorm"):
        make_norm("batchnorm", 8)
    assert all(p.no_weight_decay for p in make_norm("layernorm", 8).parameters())


def test_learned_2d_positions_are_row_plus_column_in_raster_order():
    pos = LearnedPos2D(3, 4, 8)
    full = pos()
    assert full.shape == (12, 8)
    torch.testing.assert_close(full[1 * 4 + 2], pos.rows[1] + pos.cols[2])
    torch.testing.assert_close(pos(length=5, offset=6), full[6:11])  # what a cached decoder asks for
    with pytest.raises(VimtoolError, match="3x4"):
        pos(length=5, offset=10)


def test_learned_1d_positions_slice_and_refuse_past_the_end():
    pos = LearnedPos1D(10, 4)
    torch.testing.assert_close(pos(3, offset=2), pos.table[2:5])
    with pytest.raises(VimtoolError, match="10"):
        pos(4, offset=8)


def test_sincos_2d_encodes_row_in_one_half_and_column_in_the_other():
    emb = sincos_2d(4, 5, 16)
    assert emb.shape == (20, 16)
    grid = emb.view(4, 5, 16)  # (h, w, dim)
    # first half depends only on the row, second half only on the column
    torch.testing.assert_close(grid[:, 0, :8], grid[:, 3, :8])
    torch.testing.assert_close(grid[0, :, 8:], grid[2, :, 8:])
    assert not torch.allclose(grid[0, 0, :8], grid[1, 0, :8])
    torch.testing.assert_close(grid[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    assert len({tuple(r.tolist()) for r in emb.round(decimals=5)}) == 20, "every position is distinct"
    with pytest.raises(ConfigError, match="4"):
        sincos_2d(2, 2, 10)


def test_channels_last_convolution_is_the_plain_convolution():
    # the reranker's image tower and the tokenizer's pixel refiner convolve channels-last for speed; same parameters
    # and names, same function (up to the summation order), same gradients, and the stored weight stays contiguous
    # for safetensors
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(5, 7, 3, stride=2, padding=1)
    fast = ChannelsLastConv2d(5, 7, 3, stride=2, padding=1)
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict()) and fast.weight.is_contiguous()
    x = torch.randn(4, 5, 12, 12, requires_grad=True)
    a, b = plain(x), fast(x)
    assert torch.allclose(a, b, atol=1e-5) and b.shape == a.shape
    ga = torch.autograd.grad(a.square().sum(), [x, plain.weight])
    gb = torch.autograd.grad(b.square().sum(), [x, fast.weight])
    assert all(torch.allclose(u, v, atol=1e-4) for u, v in zip(ga, gb))
    assert fast.weight.is_contiguous()  # the parameter itself never changed layout
