"""Decode-time weights: every plain `nn.Linear` of a model swapped for a oneDNN-packed copy while sampling.

    with decoding_weights(model, rows=8, dtype="fp32"):   # or "bf16", "int8"
        ... cached decode steps ...

Why (docs/BENCHMARKS.md): a KV-cached decode step multiplies only a few rows (batch x 2 with
guidance) by every weight matrix, and torch's default CPU path for such skinny GEMMs (MKL sgemm on the unpacked
(out, in) weight) reached ~9 GB/s of weight reads here, a third of what one core can stream. oneDNN's inner-product
primitive on a weight reordered ONCE into its blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, the same
op torch.compile's CPU freezing pass uses) runs the same fp32 products 2.3-3.3x faster at 8 rows
(bench/bench_decode.py, table 1). It is the same function: fp32 in, fp32 out, only the
summation order differs (max |difference| ~1e-6 of the output scale, like any change of GEMM kernel).

`dtype="bf16"` packs bf16 copies instead: half the bytes per step and the AVX512-BF16 dot products, another ~1.6x,
but NOT bit-equal (bf16 keeps 8 bits of mantissa). Activations are cast to bf16 at each linear's input and its
output back to fp32, so the residual stream, norms, attention, the KV cache, guidance mixing and the softmax
all stay fp32: only the weights and the matmul inputs are bf16 ("bf16 weights"). It is an option
(`vimtool sample --weights-dtype bf16`), never the default. On CUDA, bf16 means torch.autocast; fp32 changes nothing there.

`dtype="int8"`: weight-only int8 with one scale per output channel (symmetric, scale = max|w_row| / 127), activations
in bf16, output back to fp32 like bf16. torch's own CPU kernel `torch._weight_int8pack_mm(x_bf16, w_int8 (out, in),
scales_bf16 (out,))` (torchao is not needed) reads one byte per weight, but it converts every weight once per ROW
of activations, so it is compute bound: ~3x faster than packed bf16 at 1 row, even at ~4, 1.5-3x slower at 8-16
(bench/bench_decode.py, decode_precision). So the kernel runs only when the `rows` hint is at most
`INT8_KERNEL_MAX_ROWS` (and in_features is a multiple of 16: other widths give wrong results or crash in torch
2.13); otherwise the dequantized int8 values run through packed bf16 -- the same int8 numbers at bf16 speed. On a
CPU without oneDNN bf16 kernels (AVX2 only) that fallback would be unpacked bf16, slower still, so there the
kernel runs at every row count.
The KV cache stays fp32 for every dtype: bf16 SDPA over the cache measured slower than fp32 on this CPU (below).

Decode steps (up to `skinny_gemv.max_rows` rows: 8, i.e. batch 4 with guidance, on CPUs with AVX512-BF16 and
AVX512-VBMI; 2 elsewhere) on at most 2 torch threads run bf16 and int8 layers through vimtool's own C kernel instead
(`skinny_gemv`: built on first use with the machine's C compiler; on an AMD Zen 4 1.4-2.5x oneDNN bf16 and 2.1-3.0x
torch's int8 kernel, bench/bench_decode.py --only gemv); it keeps its own copy of the weights in its layout. Other
row counts (the prompt's prefill, larger batches) take the paths above. Without a compiler everything above applies
unchanged.

The same C library also runs each decode step's self-attention over the KV cache (`Attention.decode_attention`,
set for the block; fp32 like the cache, for every weights dtype): two loops that stream each cached key and value
once, about twice as fast as torch's batched GEMVs there (bench/bench_decode.py --only step).

Scope: only modules whose type is exactly `nn.Linear` are packed, and for fp32 only those with at least
`PACK_MIN_WEIGHTS` weights (smaller ones run faster unpacked, so tiny models decode exactly as before). NOBLE's
`NobleLinear` keeps its own forward (its fused main + branch GEMM has no packed equivalent here). The swap is
undone when the block exits, even on an error; the model's parameters and state_dict are the same objects under
the same names throughout, and a packed layer falls back to the original whenever autograd is on. Nested use is
a no-op (the outer block's packing stays).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from vimtool.errors import VimtoolError
from vimtool.nn.layers import Attention
from vimtool.sampling import skinny_gemv

log = logging.getLogger(__name__)
DECODE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
# fp32 packing pays only for large weights: oneDNN's call costs ~9 us against ~4 us for F.linear, which wins on
# small layers (128x128 at 8 rows: 7 vs 14 us; 256x256: even; 512x512: 67 vs 41 us; bench/bench_decode.py kernels)
PACK_MIN_WEIGHTS = 1 << 17  # in_features * out_features, e.g. 256 x 512
# torch._weight_int8pack_mm costs ~90 us per activation row for a 512x2048 weight (packed bf16: ~400 us flat):
# it pays up to about 4 rows (bench/bench_decode.py kernels)
INT8_KERNEL_MAX_ROWS = 4
_ACTIVE = "_vimtool_decoding_weights"  # attribute set on a model while its linears are swapped


def packing_available(device: torch.device | str) -> bool:
    """True where oneDNN can pack weights: CPU tensors with torch built with mkldnn."""
    return (
        torch.device(device).type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def bf16_packing_available() -> bool:
    """True where oneDNN has bf16 inner products on this CPU (AVX512-BF16/AVX512BW or AVX-NE-CONVERT); on others
    (AVX2-only CPUs, e.g. many AMD EPYCs) its bf16 reorder raises, and bf16 weights run unpacked (`PackedLinear`)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


@functools.cache  # once per process, not once per batch
def _warn_slow_bf16() -> None:
    log.warning(
        "this CPU's oneDNN has no bf16 kernels (no AVX512-BF16/AVX512BW): bf16/int8 decode weights run unpacked and "
        "may be slower than fp32 here; the default --weights-dtype fp32 is the fast choice on this machine"
    )


def decode_dtype(name: str) -> torch.dtype:
    if name not in DECODE_DTYPES:
        raise VimtoolError(
            f"decode weights dtype {name!r} is unknown; use one of {', '.join(DECODE_DTYPES)} (--weights-dtype bf16)"
        )
    return DECODE_DTYPES[name]


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 weight (out, in), fp32 scales (out,)); weight ~= q * scales[:, None]."""
    w = weight.detach().float()
    scales = (w.abs().amax(1) / 127).clamp_min(1e-30)  # an all-zero row stays zero
    # rounded to bf16 first (the kernel takes bf16 scales), so the kernel and the int8-as-bf16 path use equal values
    scales = scales.to(torch.bfloat16).float()
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


class PackedLinear(nn.Module):
    """Inference-only stand-in for an `nn.Linear`: its weight reordered once by oneDNN (fp32 or bf16), or
    quantized to int8 per output channel (`kind` says which path runs: fp32, bf16, int8 or int8-as-bf16, with
    "-unpacked" appended to the bf16 ones on a CPU whose oneDNN has no bf16 kernels)."""

    def __init__(self, linear: nn.Linear, rows: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        object.__setattr__(self, "original", linear)  # not a registered child (its names would show up)
        # the very same Parameters under the same names: parameters() and state_dict() do not change
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.kind = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.int8: "int8"}[dtype]
        self.int8 = self.skinny = None
        lib = skinny_gemv.load()
        with torch.no_grad():
            w = linear.weight.detach()
            if dtype == torch.int8:
                q, scales = quantize_int8(w)
                if lib is not None and skinny_gemv.int8_pays(lib):  # decode steps: vimtool's own int8 kernel
                    self.skinny = skinny_gemv.SkinnyLinear(lib, q, linear.bias, scales)
                # other row counts: torch's int8 kernel where it pays; where oneDNN has no bf16 kernels the
                # alternative is unpacked bf16, 3-5x slower than the int8 kernel even at 8 rows (AMD Zen 3: 421 vs
                # 1774 us for 512x2048), so the kernel runs at any count
                kernel_pays = rows <= INT8_KERNEL_MAX_ROWS or not bf16_packing_available()
                if kernel_pays and self.in_features % 16 == 0:
                    self.int8 = (q, scales.to(torch.bfloat16))
                    self.packed = None
                    self.packed_bias = linear.bias  # added in fp32 after the kernel
                    return
                self.kind, dtype = "int8-as-bf16", torch.bfloat16
                w = q.float() * scales[:, None]  # the int8 values, run by the bf16 path
            self.dtype = dtype
            # bf16 decode steps: the C kernel where it builds (skinny_gemv.py), oneDNN otherwise
            if dtype == torch.bfloat16 and lib is not None and self.skinny is None:
                self.skinny = skinny_gemv.SkinnyLinear(lib, w.to(dtype), linear.bias)
            if dtype == torch.bfloat16 and not bf16_packing_available():
                # no oneDNN bf16 kernels on this CPU: the same bf16 numbers through torch's own bf16 matmul
                self.packed, self.kind = None, self.kind + "-unpacked"
                self.bf16 = (w.to(dtype), None if linear.bias is None else linear.bias.detach().to(dtype))
                return
            # the row count is a hint for oneDNN's blocking; other row counts stay correct (tested)
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w.to(dtype), max(1, int(rows)))
            self.packed_bias = None if linear.bias is None else linear.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return self.original(x)
        if self.skinny is not None and self._skinny_pays(x):
            return self.skinny(x)  # fp32 in and out, no casts
        if self.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.packed_bias, "none", [], "")
        if self.int8 is not None:
            q, scales = self.int8
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).to(torch.bfloat16), q, scales)
            y = y.float().reshape(*x.shape[:-1], self.out_features)  # (..., out)
            return y if self.packed_bias is None else y + self.packed_bias
        if self.packed is None:  # bf16 on a CPU without oneDNN bf16 kernels
            y = nn.functional.linear(x.to(self.dtype), *self.bf16)
        else:
            y = torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.packed_bias, "none", [], "")
        # bf16: back to fp32 right away, so norms, attention and the KV cache stay fp32 (bf16 SDPA over the
        # cache measured slower on this CPU than fp32: 1.5 s vs 0.8 s per 256-token batch)
        return y.float()

    def _skinny_pays(self, x: torch.Tensor) -> bool:
        return (
            x.numel() <= self.skinny.max_rows * self.in_features and torch.get_num_threads() <= skinny_gemv.MAX_THREADS
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed {self.kind}"


def _linears_to_pack(model: nn.Module, dtype: torch.dtype) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of every plain nn.Linear worth packing: all of them for bf16 / int8 (the option
    means those weights everywhere), the large ones for fp32 (a pure speed choice)."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
        and (dtype != torch.float32 or child.in_features * child.out_features >= PACK_MIN_WEIGHTS)
    ]


@contextmanager
def decoding_weights(model: nn.Module, rows: int, dtype: str = "fp32") -> Iterator[nn.Module]:
    """Within the block, `model`'s plain linears run from packed weights (see the module doc); yields `model`."""
    torch_dtype = decode_dtype(dtype)
    if getattr(model, _ACTIVE, False):
        yield model
        return
    device = next(model.parameters()).device
    if not packing_available(device):
        # CUDA (or a torch without mkldnn): bf16 through autocast, fp32 unchanged; int8 has no kernel here
        if torch_dtype == torch.int8:
            raise VimtoolError(f"int8 decode weights need a CPU with oneDNN; on {device} use --weights-dtype bf16")
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if torch_dtype == torch.bfloat16 else nullcontext()
        with ctx:
            yield model
        return
    if torch_dtype != torch.float32 and not bf16_packing_available():
        _warn_slow_bf16()
    swapped = _linears_to_pack(model, torch_dtype)
    lib = skinny_gemv.load()
    # the decode step's self-attention over the cache through the same C library (fp32, any weights dtype)
    attentions = [m for m in model.modules() if isinstance(m, Attention)] if lib is not None else []
    object.__setattr__(model, _ACTIVE, True)
    try:
        for parent, name, child in swapped:
            setattr(parent, name, PackedLinear(child, rows, torch_dtype))
        for m in attentions:
            m.decode_attention = functools.partial(skinny_gemv.one_query_attention, lib)
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        for m in attentions:
            m.decode_attention = None
        object.__setattr__(model, _ACTIVE, False)


__all__ = [
    "DECODE_DTYPES",
    "INT8_KERNEL_MAX_ROWS",
    "PACK_MIN_WEIGHTS",
    "PackedLinear",
    "bf16_packing_available",
    "decode_dtype",
    "decoding_weights",
    "packing_available",
    "quantize_int8",
]
