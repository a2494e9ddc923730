"""The fast decode path: oneDNN-packed decode weights (fp32 default, bf16 option) and the cached cross-attention
mask. Each speed-up must leave the model function alone: fp32 packing equal to nn.Linear up to kernel rounding,
bf16 close, the model's modules and parameters restored afterwards, the cross mask bit-identical to SDPA's own."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import vimtool.sampling.packed_linear as packed_linear
from vimtool.errors import VimtoolError
from vimtool.models.vim import VIM, size_config
from vimtool.nn import CrossDecoder, NobleConfig
from vimtool.nn.layers import Attention
from vimtool.sampling.logits import SamplingParams, row_uniforms
from vimtool.sampling.packed_linear import PackedLinear, decoding_weights, packing_available
from vimtool.sampling.vim import generate, generate_batch

needs_onednn = pytest.mark.skipif(
    not packing_available("cpu"), reason="this torch build has no oneDNN (mkldnn) CPU kernels"
)


@pytest.fixture
def pack_everything(monkeypatch):
    """The test models are tiny: lower the fp32 size threshold so their layers are packed too."""
    monkeypatch.setattr(packed_linear, "PACK_MIN_WEIGHTS", 0)


def _vim(noble=None, seed=0) -> VIM:
    torch.manual_seed(seed)
    cfg = size_config(
        "micro", dim=32, depth=2, heads=2, mlp_dim=64, vocab_size=40, grid=(4, 4), num_classes=3, noble=noble
    )
    return VIM(cfg).eval()


# ------------------------------------------------------------------------------------------ packed linears
@needs_onednn
@pytest.mark.parametrize("rows", [1, 8, 33])
def test_packed_fp32_linear_is_nn_linear_up_to_rounding(rows):
    torch.manual_seed(rows)
    lin = nn.Linear(48, 80)
    packed = PackedLinear(lin, rows=8)  # packed for 8 rows; other row counts must still be right
    for x in (torch.randn(rows, 48), torch.randn(rows, 1, 48)):  # (N, D) and (B, T, D)
        with torch.no_grad():
            got, want = packed(x), lin(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_packed_bf16_linear_is_close_and_returns_fp32():
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    x = torch.randn(8, 64)
    with torch.no_grad():
        got, want = PackedLinear(lin, 8, torch.bfloat16)(x), lin(x)
    assert got.dtype == torch.float32  # the residual stream and the KV cache stay fp32
    rel = (got - want).norm() / want.norm()
    assert 1e-6 < rel < 2e-2  # bf16 weights: visibly not bit-equal, but ~3 significant digits


@needs_onednn
def test_packed_linear_falls_back_when_autograd_is_on():
    lin = nn.Linear(8, 4)
    packed = PackedLinear(lin, 2)
    y = packed(torch.randn(2, 8))  # grad mode on: the original layer, so gradients reach its parameters
    y.sum().backward()
    assert lin.weight.grad is not None


def test_decoding_weights_swaps_only_plain_linears_and_restores_them(pack_everything):
    model = _vim(noble=NobleConfig(rank=4, placement=("q", "mlp_out")))
    before = {name: m for name, m in model.named_modules()}
    keys = list(model.state_dict())
    params = list(model.parameters())
    with decoding_weights(model, rows=4) as m:
        assert m is model
        assert list(model.state_dict()) == keys  # packed copies are not parameters; names stay
        assert [id(p) for p in model.parameters()] == [id(p) for p in params]
        kinds = {type(mod).__name__ for _, mod in model.named_modules()}
        if packing_available("cpu"):
            assert "PackedLinear" in kinds and isinstance(model.head, PackedLinear)
        # NOBLE's layers keep their own forward (fused main + branch GEMM)
        assert type(model.decoder.blocks[0].mlp.fc_out).__name__ == "NobleLinear"
        with decoding_weights(model, rows=4):  # nested: a no-op, the outer packing stays
            inner_head = model.head
        assert model.head is inner_head
    assert {name: m for name, m in model.named_modules()} == before
    with pytest.raises(RuntimeError, match="boom"), decoding_weights(model, rows=4):
        raise RuntimeError("boom")
    assert {name: m for name, m in model.named_modules()} == before  # restored after an error too


def test_decode_steps_run_the_attention_kernel_inside_decoding_weights_only(monkeypatch):
    """Within the block every Attention has the C kernel for its one-query decode steps (and runs it there); after
    it, none does. The kernel's numbers: tests/test_skinny_gemv.py; the logits it gives: the test below."""
    from vimtool.sampling import skinny_gemv

    lib = skinny_gemv.load()
    assert lib is not None, "the kernel did not build on this machine (see the log line)"
    calls = []
    real = skinny_gemv.one_query_attention
    monkeypatch.setattr(skinny_gemv, "one_query_attention", lambda *a: calls.append(a[1].shape) or real(*a))
    model = _vim(seed=1)  # head width 16: a multiple of the kernel's vectors on AVX2 and AVX-512
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), decoding_weights(model, rows=6):
            assert attentions and all(m.decode_attention is not None for m in attentions)
            cache = model.new_cache(3)
            model.step(cache, None, torch.tensor([0, 2, 1]))
            model.step(cache, torch.tensor([[1], [2], [3]]))
    finally:
        torch.set_num_threads(threads)
    assert all(m.decode_attention is None for m in attentions)
    assert len(calls) == 2 * len(attentions) and all(shape[2] == 1 for shape in calls)  # one query per step


def test_small_layers_stay_unpacked_in_fp32_but_not_in_bf16():
    model = _vim()  # width 32: every linear is under the fp32 threshold
    with decoding_weights(model, rows=2):
        assert not any(isinstance(m, PackedLinear) for m in model.modules())
    if packing_available("cpu"):
        with decoding_weights(model, rows=2, dtype="bf16"):
            assert isinstance(model.head, PackedLinear) and model.head.dtype == torch.bfloat16


def test_unknown_decode_dtype_is_a_clear_error():
    with pytest.raises(VimtoolError, match="fp32, bf16, int8"), decoding_weights(_vim(), 2, "fp16"):
        pass


# ------------------------------------------------------------------------------------------ sampling with it
def test_fp32_packed_decoding_keeps_the_logits_and_greedy_tokens(pack_everything):
    model = _vim(seed=1)
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        ids = torch.randint(0, 40, (3, 15))
        plain = model(ids, labels)  # (3, 16, V): the unpacked full forward
        with decoding_weights(model, rows=3):
            cache = model.new_cache(3)
            steps = [model.step(cache, None, labels)[:, -1]]
            steps += [model.step(cache, ids[:, t : t + 1])[:, -1] for t in range(15)]
    torch.testing.assert_close(torch.stack(steps, 1), plain, rtol=1e-4, atol=1e-5)
    greedy = SamplingParams(top_k=1)
    u = row_uniforms(0, 0, 3, model.num_tokens)
    fast = generate_batch(model, labels, greedy, u)  # packed (default fp32)
    prefix = torch.zeros(3, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(model.num_tokens):  # plain uncached argmax decoding, no packing anywhere
            prefix = torch.cat([prefix, model(prefix, labels)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(fast, prefix)


def test_bf16_decode_weights_stay_close_to_fp32():
    model = _vim(seed=2)
    labels = torch.tensor([0, 1])
    ids = torch.randint(0, 40, (2, 15))
    with torch.no_grad():
        want = model(ids, labels).log_softmax(-1)
        with decoding_weights(model, rows=2, dtype="bf16"):
            got = model(ids, labels).log_softmax(-1)
    assert got.dtype == torch.float32
    diff = (got - want).abs().max().item()
    if packing_available("cpu"):
        assert diff > 0  # really bf16 (not silently fp32)
    assert diff < 0.05  # log-probabilities within a few hundredths
    u = row_uniforms(5, 0, 2, model.num_tokens)
    toks = generate_batch(model, labels, SamplingParams(guidance_scale=2.0), u, decode_dtype="bf16")
    assert toks.shape == (2, model.num_tokens) and int(toks.min()) >= 0 and int(toks.max()) < 40


def test_packing_once_per_run_gives_the_batches_the_same_samples(pack_everything):
    model = _vim(seed=3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    a = generate(model, labels, 5, SamplingParams(top_k=5), seed=4, batch_size=5)
    b = generate(model, labels, 5, SamplingParams(top_k=5), seed=4, batch_size=2)  # packed for 2 rows, last batch 1
    assert torch.equal(a, b)
    assert all(type(m) is not PackedLinear for m in model.modules())


# ------------------------------------------------------------------------------------------ attention of a step
def test_one_query_attention_over_a_cache_slice_equals_sdpa():
    import torch.nn.functional as F

    from vimtool.nn.layers import _one_query_attention

    torch.manual_seed(0)
    buf_k, buf_v = torch.randn(3, 4, 20, 16), torch.randn(3, 4, 20, 16)  # a preallocated cache, 20 positions
    q = torch.randn(3, 1, 3, 4, 16).permute(2, 0, 3, 1, 4)[0]  # (B, H, 1, Dh), strided like the fused qkv split
    for s in (1, 7, 20):
        k, v = buf_k[:, :, :s], buf_v[:, :, :s]  # the filled part, a non-contiguous view
        torch.testing.assert_close(
            _one_query_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6
        )


# ------------------------------------------------------------------------------------------ cross-attention mask
def test_cached_cross_mask_is_bit_identical_to_the_bool_mask():
    torch.manual_seed(0)
    attn = Attention(32, 4, cross=True, context_dim=24).eval()
    x, ctx = torch.randn(3, 1, 32), torch.randn(3, 6, 24)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6], dtype=torch.bool)  # last row: no real token
    dec = CrossDecoder(32, 1, 4, 64, context_dim=24)
    cache = dec.new_cache(3, 4).layers[0]
    with torch.no_grad():
        want = attn(x, ctx, mask=mask)  # no cache: the bool mask through SDPA
        first = attn(x, ctx, mask=mask, cache=cache)
        again = attn(x, None, mask=mask, cache=cache)  # cross K/V and the mask from the cache
    assert cache.cross_mask is not None and cache.cross_mask.dtype == torch.float32
    assert torch.equal(first, want) and torch.equal(again, want)
    assert torch.isfinite(want).all()


# ------------------------------------------------------------------------------------------ the command
def test_sample_command_takes_bf16_decode_weights(vim_world, tmp_path):
    from vimtool.commands import app

    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["sample", "-c", str(vim_world["ckpt"]), "--class", "1", "-n", "2", "--out", str(out),
                                   "--weights-dtype", "bf16"])  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads((out / "sampling.json").read_text())
    assert record["settings"]["decode_dtype"] == "bf16" and len(record["images"]) == 2
    bad = CliRunner().invoke(
        app, ["sample", "-c", str(vim_world["ckpt"]), "--class", "1", "--out", str(out), "--set", "decode_dtype=fp8"]
    )
    last = bad.output.strip().splitlines()[-1]  # the CLI prints a VimtoolError as one line, exit code 2
    assert bad.exit_code == 2 and last.startswith("error: ") and "decode_dtype" in last
