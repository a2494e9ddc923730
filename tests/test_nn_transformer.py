"""Transformer stacks: cached == uncached decoding, causal masking, padding masks, layer outputs, cache errors."""

from __future__ import annotations

import pytest
import torch

from vimtool.errors import VimtoolError
from vimtool.nn import CausalDecoder, CrossDecoder, Encoder, NobleConfig

D, DEPTH, HEADS, MLP = 32, 2, 4, 64
NOBLE_CASES = [None, NobleConfig(rank=4), NobleConfig(rank=4, activation="gelu", placement=("q", "mlp_out"))]


def _ids(case):
    return "plain" if case is None else f"noble-{case.activation}-{len(case.placement)}sites"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("noble", NOBLE_CASES, ids=_ids)
def test_cached_and_uncached_logits_match_causal_decoder(noble):
    dec = CausalDecoder(D, DEPTH, HEADS, MLP, noble=noble).eval()
    x = torch.randn(3, 11, D)
    with torch.no_grad():
        full = dec(x)
        cache = dec.new_cache(3, 16)
        pieces = [dec(x[:, :4], cache=cache)]  # prefill a prefix
        assert cache.length == 4
        pieces.append(dec(x[:, 4:7], cache=cache))  # several new positions after a prefix
        for i in range(7, 11):  # then one token at a time
            pieces.append(dec(x[:, i : i + 1], cache=cache))
    assert cache.length == 11
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("noble", NOBLE_CASES, ids=_ids)
def test_cached_and_uncached_logits_match_cross_decoder(noble):
    dec = CrossDecoder(D, DEPTH, HEADS, MLP, noble=noble, context_dim=24).eval()
    x, ctx = torch.randn(3, 9, D), torch.randn(3, 6, 24)
    ctx_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        full = dec(x, ctx, ctx_mask)
        cache = dec.new_cache(3, 9)
        pieces = [dec(x[:, :1], ctx, ctx_mask, cache=cache)]  # first call computes the cross K/V
        cross_k = cache.layers[0].cross_k
        pieces.append(dec(x[:, 1:5], None, cache=cache))  # later calls reuse them (context not needed)
        for i in range(5, 9):
            pieces.append(dec(x[:, i : i + 1], None, cache=cache))
    assert cache.layers[0].cross_k is cross_k, "cross K/V are computed once per prompt"
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)


def test_cache_reset_serves_a_new_batch_of_prompts():
    dec = CrossDecoder(D, DEPTH, HEADS, MLP, context_dim=24).eval()
    cache = dec.new_cache(2, 4)
    x = torch.randn(2, 4, D)
    with torch.no_grad():
        dec(x, torch.randn(2, 3, 24), cache=cache)
        cache.reset()
        ctx = torch.randn(2, 5, 24)
        again = torch.cat([dec(x[:, :2], ctx, cache=cache), dec(x[:, 2:], None, cache=cache)], 1)
        torch.testing.assert_close(again, dec(x, ctx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["causal", "cross"])
def test_changing_a_future_token_never_changes_earlier_outputs(kind):
    noble = NobleConfig(rank=4)
    x = torch.randn(2, 10, D)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(2, 4, D)
    if kind == "causal":
        dec = CausalDecoder(D, DEPTH, HEADS, MLP, noble=noble).eval()
        a, b = dec(x), dec(x2)
    else:
        dec = CrossDecoder(D, DEPTH, HEADS, MLP, noble=noble).eval()
        ctx = torch.randn(2, 5, D)
        a, b = dec(x, ctx), dec(x2, ctx)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-3), "later outputs must see the change"


def test_padding_never_changes_the_outputs_of_real_tokens_in_the_encoder():
    enc = Encoder(D, DEPTH, HEADS, MLP, noble=NobleConfig(rank=4)).eval()
    real = torch.randn(2, 5, D)
    pad_a = torch.cat([real, torch.randn(2, 3, D)], 1)
    pad_b = torch.cat([real, 100 * torch.randn(2, 3, D)], 1)
    mask = torch.tensor([[1] * 5 + [0] * 3] * 2, dtype=torch.bool)
    out_a, out_b = enc(pad_a, pad_mask=mask), enc(pad_b, pad_mask=mask)
    torch.testing.assert_close(out_a[:, :5], out_b[:, :5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_a[:, :5], enc(real), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(enc(pad_a)[:, :5], out_a[:, :5], atol=1e-3), "without the mask padding leaks in"


def test_context_padding_never_changes_the_cross_decoder_outputs():
    dec = CrossDecoder(D, DEPTH, HEADS, MLP, context_dim=24).eval()
    x, ctx = torch.randn(2, 6, D), torch.randn(2, 4, 24)
    padded = torch.cat([ctx, 50 * torch.randn(2, 3, 24)], 1)
    mask = torch.tensor([[1] * 4 + [0] * 3] * 2, dtype=torch.bool)
    torch.testing.assert_close(dec(x, padded, mask), dec(x, ctx), rtol=1e-5, atol=1e-5)


def test_a_row_without_real_context_tokens_gives_finite_outputs():
    dec = CrossDecoder(D, DEPTH, HEADS, MLP).eval()
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.isfinite(dec(torch.randn(2, 4, D), torch.randn(2, 3, D), mask)).all()


@pytest.mark.parametrize("stack", [Encoder, CausalDecoder])
def test_return_layers_gives_every_block_output(stack):
    model = stack(D, 3, HEADS, MLP).eval()
    x = torch.randn(2, 5, D)
    out, layers = model(x, return_layers=True)
    assert len(layers) == 3 and all(t.shape == (2, 5, D) for t in layers)
    torch.testing.assert_close(out, model.norm(layers[-1]))
    torch.testing.assert_close(out, model(x))


def test_dropout_is_active_in_training_and_off_in_eval():
    dec = CausalDecoder(D, DEPTH, HEADS, MLP, dropout=0.3)
    x = torch.randn(2, 6, D)
    assert not torch.allclose(dec(x), dec(x))
    dec.eval()
    torch.testing.assert_close(dec(x), dec(x), rtol=0, atol=0)


def test_cache_follows_the_dtype_of_bf16_autocast():
    dec = CausalDecoder(D, DEPTH, HEADS, MLP).eval()
    x = torch.randn(2, 5, D)
    cache = dec.new_cache(2, 5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = dec(x)
        steps = torch.cat([dec(x[:, :3], cache=cache)] + [dec(x[:, i : i + 1], cache=cache) for i in (3, 4)], 1)
    assert cache.layers[0].k.dtype == torch.bfloat16
    torch.testing.assert_close(steps.float(), full.float(), rtol=0.05, atol=0.05)


def test_cache_misuse_is_a_clear_error():
    dec = CausalDecoder(D, DEPTH, HEADS, MLP).eval()
    cache = dec.new_cache(2, 4)
    with pytest.raises(VimtoolError, match="max_len"):
        dec(torch.randn(2, 5, D), cache=cache)
    with pytest.raises(VimtoolError, match="batch"):
        dec(torch.randn(3, 1, D), cache=dec.new_cache(2, 4))
    with pytest.raises(VimtoolError, match="context"):
        CrossDecoder(D, DEPTH, HEADS, MLP)(torch.randn(1, 2, D), None)
    with pytest.raises(VimtoolError, match="batch, tokens"):
        dec(torch.randn(2, 4, D + 1))
