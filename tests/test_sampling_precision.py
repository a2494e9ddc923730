"""Low-precision decode weights (`sample --weights-dtype bf16|int8`): the int8 layer really is int8 and close to
nn.Linear, the option reaches the model's layers during sampling, and on a trained micro VIM the next-token
argmax and log-likelihood stay close to fp32.

Quality is measured teacher-forced (every position gets the same fp32-sampled prefix), not on free-running greedy
sequences: there the first differing token changes everything after it, so per-sequence agreement says little
about the weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from vimtool.checkpoint import load_model
from vimtool.errors import VimtoolError
from vimtool.sampling.logits import SamplingParams
from vimtool.sampling.packed_linear import (
    DECODE_DTYPES,
    INT8_KERNEL_MAX_ROWS,
    PackedLinear,
    bf16_packing_available,
    decoding_weights,
    packing_available,
    quantize_int8,
)
from vimtool.sampling.vim import generate

# CPUs whose oneDNN has no bf16 kernels (AVX2 only) run the bf16 paths unpacked, and say so in `kind`
UNPACKED = "" if bf16_packing_available() else "-unpacked"
needs_onednn = pytest.mark.skipif(
    not packing_available("cpu"), reason="this torch build has no oneDNN (mkldnn) CPU kernels"
)


def test_int8_quantization_is_per_output_channel():
    torch.manual_seed(0)
    w = torch.randn(6, 32) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 100.0, 0.0])[:, None]  # rows of very different size
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and scales.shape == (6,)
    err = (q.float() * scales[:, None] - w).abs().amax(1)
    assert torch.all(err <= 0.51 * scales)  # half a step of each row's own scale: small rows are not crushed
    assert torch.all(q[:5].abs().amax(1) >= 126) and torch.equal(q[5], torch.zeros(32, dtype=torch.int8))


@needs_onednn
@pytest.mark.parametrize("rows", [1, INT8_KERNEL_MAX_ROWS, 8])
def test_int8_linear_is_close_to_nn_linear_and_picks_its_kernel_by_rows(rows):
    torch.manual_seed(rows)
    lin = nn.Linear(64, 96)
    packed = PackedLinear(lin, rows=rows, dtype=torch.int8)
    # few rows: torch's int8 kernel (1 byte per weight); more: the same int8 values through packed bf16, except
    # where bf16 could only run unpacked (slower than the kernel at any row count)
    kernel = rows <= INT8_KERNEL_MAX_ROWS or not bf16_packing_available()
    assert packed.kind == ("int8" if kernel else "int8-as-bf16")
    for x in (torch.randn(rows, 64), torch.randn(rows, 1, 64)):
        with torch.no_grad():
            got, want = packed(x), lin(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        rel = ((got - want).abs().max() / want.abs().max()).item()
        assert 1e-5 < rel < 3e-2  # visibly quantized, yet ~2 significant digits
    assert (
        PackedLinear(nn.Linear(40, 8), rows=1, dtype=torch.int8).kind == "int8-as-bf16" + UNPACKED
    )  # width not a multiple of 16


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int8])
def test_bf16_paths_run_unpacked_where_onednn_has_no_bf16_kernels(monkeypatch, dtype):
    # AVX2-only CPUs (many AMD EPYCs): oneDNN's bf16 reorder raises there. The same bf16 numbers must run through
    # torch's own matmul instead; forced here so every machine checks that path, whatever its CPU has.
    import vimtool.sampling.packed_linear as packed_linear

    monkeypatch.setattr(packed_linear, "bf16_packing_available", lambda: False)
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    packed = PackedLinear(lin, rows=8, dtype=dtype)
    # bf16 runs unpacked; int8 keeps torch's int8 kernel even at 8 rows (its fallback would be unpacked bf16)
    assert packed.packed is None and packed.kind == ("bf16-unpacked" if dtype == torch.bfloat16 else "int8")
    x = torch.randn(8, 64)
    with torch.no_grad():
        got, want = packed(x), lin(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert 1e-5 < rel < 3e-2  # rounded to bf16 (not fp32 in disguise), yet close


def test_int8_without_onednn_is_a_clear_error(monkeypatch):
    import vimtool.sampling.packed_linear as packed_linear

    monkeypatch.setattr(packed_linear, "packing_available", lambda device: False)
    with pytest.raises(VimtoolError, match="bf16"), decoding_weights(nn.Sequential(nn.Linear(4, 4)), 1, "int8"):
        pass


def _teacher_forced(model, toks, labels, dtype):
    """(log-probabilities (n, T, V) of every next token given the true prefix) under `dtype` decode weights."""
    with torch.no_grad(), decoding_weights(model, rows=1, dtype=dtype):
        return model(toks[:, :-1], labels).float().log_softmax(-1)


@needs_onednn
def test_low_precision_weights_keep_the_trained_models_predictions(vim_world):
    model = load_model(vim_world["ckpt"]).eval()
    labels = torch.arange(3).repeat_interleave(16)
    toks = generate(model, labels, 48, SamplingParams(), seed=0, batch_size=48)  # (48, 16), fp32 samples
    ref = _teacher_forced(model, toks, labels, "fp32")
    ll_ref = ref.gather(-1, toks[..., None]).mean().item()
    for dtype in ("bf16", "int8"):
        got = _teacher_forced(model, toks, labels, dtype)
        agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
        # >= 95%: the two only disagree where the top two logits are within the weights' rounding (bf16: 2^-8
        # relative; int8: 1/254 of a row's largest weight); this trained model's top-1 is usually far ahead
        assert agree >= 0.95, (dtype, agree)
        ll = got.gather(-1, toks[..., None]).mean().item()
        # measured ~2e-5 nats/token for both (mean log-likelihood ~ -3.8): 0.01 is far below any sample-to-sample noise
        assert abs(ll - ll_ref) < 0.01, (dtype, ll, ll_ref)
        assert not torch.equal(got, ref)  # really lower precision (not silently fp32)


@needs_onednn
def test_sample_command_weights_dtype_int8_reaches_the_models_layers(vim_world, tmp_path, monkeypatch):
    from vimtool.commands import app

    kinds = []
    forward = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: kinds.append(self.kind) or forward(self, x))
    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["sample", "-c", str(vim_world["ckpt"]), "--class", "1", "-n", "1", "--out", str(out),
                                   "--weights-dtype", "int8"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "sampling.json").read_text())["settings"]["decode_dtype"] == "int8"
    assert kinds and set(kinds) == {"int8"}  # batch 1: every linear of every step ran the int8 kernel


@needs_onednn
@pytest.mark.parametrize("batch", [1, 4])
def test_greedy_cached_decoding_takes_the_c_kernel_and_keeps_the_tokens(vim_world, monkeypatch, batch):
    """Batch 1 and 4 with guidance (2 and 8 rows): the decode step's linears run vimtool's C kernel (skinny_gemv)
    for bf16 and, where it pays, int8, at every row count up to the build's max_rows. Greedy tokens of 24 sequences,
    free-running from the same start, must match fp32's in >= 90% of positions: a trained model's top-1 is usually
    far ahead, and the first flip (a near tie within the weights' rounding) changes the rest of that sequence, so
    this is the harsher measure (measured: 100% / 100% at batch 1 and 4)."""
    from vimtool.sampling import skinny_gemv

    lib = skinny_gemv.load()
    assert lib is not None, "the kernel did not build on this machine (see the log line)"
    kernel_runs = 2 * batch <= skinny_gemv.max_rows(lib)  # else oneDNN / torch's int8 kernel at this batch
    ran = []
    call = skinny_gemv.SkinnyLinear.__call__
    monkeypatch.setattr(
        skinny_gemv.SkinnyLinear, "__call__", lambda self, x: ran.append(self.weight.dtype) or call(self, x)
    )
    model = load_model(vim_world["ckpt"]).eval()
    labels = torch.arange(3).repeat_interleave(8)
    greedy = SamplingParams(temperature=0.0, guidance_scale=2.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = generate(model, labels, 24, greedy, seed=0, batch_size=batch)
        for dtype in ("bf16", "int8"):
            ran.clear()
            got = generate(model, labels, 24, greedy, seed=0, batch_size=batch, decode_dtype=dtype)
            agree = (got == ref).float().mean().item()
            assert agree >= 0.9, (dtype, agree)
            # int8 takes the kernel only where it beat torch's int8 kernel (AVX-512 builds); elsewhere torch's runs
            if kernel_runs and (dtype == "bf16" or skinny_gemv.int8_pays(lib)):
                assert set(ran) == {DECODE_DTYPES[dtype]}, (dtype, set(ran))
            else:
                assert not ran, ran
    finally:
        torch.set_num_threads(threads)
