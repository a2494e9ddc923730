"""The decode step's C kernel for bf16 and int8 weights at a few rows (vimtool/sampling/skinny_gemv.{c,py}).

Real builds with the machine's C compiler (the tests need one: .ci/run's machine and every developer machine with
torch's build tools have gcc or clang), both of the source's paths where the CPU allows, the cache, and the fall
back to oneDNN when no compiler works. Numerics: the AVX512-BF16 path (panels) rounds x to bf16 like torch's
.to(bfloat16) and sums in fp32, so it must match F.linear on (bf16 x, bf16 or int8 weight) to fp32 summation error;
the portable path (row loop) multiplies the exact fp32 x, so it must match F.linear on (fp32 x, weight) to that
error.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vimtool.sampling import skinny_gemv
from vimtool.sampling.packed_linear import PackedLinear, packing_available

X86 = platform.machine() in ("x86_64", "AMD64")
# (rows, in, out): tails past a 32-wide vector or panel (40, 100, 7, 33, 30, 5, 70), odd K (1, 33), more rows than
# one pass takes (5, 9 for the row loop; 9, 17 for panels), every row count a panel pass specializes (1-8)
SHAPES = [(1, 512, 64), (2, 40, 7), (3, 100, 33), (4, 64, 16), (5, 96, 30), (6, 33, 70), (7, 48, 32), (8, 64, 96),
          (9, 32, 5), (17, 40, 40), (2, 1, 3)]  # fmt: skip


def _cpu_has(flag: str) -> bool:
    try:
        return any(flag in line.split() for line in Path("/proc/cpuinfo").read_text().splitlines() if "flags" in line)
    except OSError:
        return False


def _builds():
    """(label, flags) of each build this CPU can run: native, and on x86 the portable path forced by AVX2."""
    out = [("native", skinny_gemv.DEFAULT_FLAGS)]
    if X86:
        out.append(("portable", ("-O3", "-march=x86-64-v3", "-shared", "-fPIC")))
    return out


@pytest.mark.parametrize("bias", [True, False])
def test_both_paths_compute_the_linear_with_bf16_weights(tmp_path, bias):
    torch.manual_seed(0)
    for label, flags in _builds():
        lib = skinny_gemv.open_library(skinny_gemv.build(flags, tmp_path))
        path = lib.vimtool_skinny_path()
        if label == "portable":
            assert path == 1
        elif X86:  # native: the dot-product instruction exactly where the CPU has it
            assert path == (2 if _cpu_has("avx512_bf16") else 1)
        for m, k, n in SHAPES:
            x, w = torch.randn(m, k), torch.randn(n, k).to(torch.bfloat16)
            b = torch.randn(n) if bias else None
            got = skinny_gemv.bf16_linear(lib, x, w, b)
            x_used = x.to(torch.bfloat16).float() if path == 2 else x  # path 2 rounds x to bf16 first
            want = F.linear(x_used.double(), w.double(), None if b is None else b.double()).float()
            scale = (x_used.abs() @ w.float().abs().T).max().item() + 1
            assert got.shape == (m, n) and got.dtype == torch.float32
            assert (got - want).abs().max().item() < 1e-5 * scale, (label, m, k, n)


def test_the_int8_kernel_computes_the_per_channel_scaled_linear(tmp_path):
    """int8 weights times one scale per output row: equal to the fp64 product to fp32 error, with x rounded to bf16
    on the panel path (as torch's int8 kernel rounds it) and unrounded on the row loop."""
    torch.manual_seed(2)
    for _, flags in _builds():
        lib = skinny_gemv.open_library(skinny_gemv.build(flags, tmp_path))
        for m, k, n in SHAPES:
            x = torch.randn(m, k)
            q = torch.randint(-127, 128, (n, k), dtype=torch.int8)
            scales, b = torch.rand(n) / 100, torch.randn(n)
            got = skinny_gemv.int8_linear(lib, x, q, scales, b)
            if lib.vimtool_skinny_path() == 2:
                x = x.to(torch.bfloat16).float()
            want = (F.linear(x.double(), q.double()) * scales.double() + b.double()).float()
            scale = (x.abs() @ q.float().abs().T * scales).max().item() + 1
            assert (got - want).abs().max().item() < 1e-5 * scale, (flags, m, k, n)


def test_leading_dims_and_strided_inputs_are_handled(tmp_path):
    lib = skinny_gemv.open_library(skinny_gemv.build(cache=tmp_path))
    torch.manual_seed(1)
    w, b = torch.randn(24, 48).to(torch.bfloat16), torch.randn(24)
    x = torch.randn(2, 1, 96)[..., ::2]  # (2, 1, 48), not contiguous
    got = skinny_gemv.bf16_linear(lib, x, w, b)
    assert got.shape == (2, 1, 24)
    assert torch.allclose(got, skinny_gemv.bf16_linear(lib, x.contiguous(), w, b), atol=0, rtol=0)


def test_the_build_is_cached_per_flags_and_leaves_no_temporary_files(tmp_path):
    first = skinny_gemv.build(cache=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert skinny_gemv.build(cache=tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    other = skinny_gemv.build(("-O2", "-shared", "-fPIC"), cache=tmp_path)
    assert other != first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def test_a_compiler_that_fails_is_a_clear_error_and_load_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")  # a "compiler" that exits 1
    with pytest.raises(RuntimeError, match="false failed"):
        skinny_gemv.build(cache=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the temporary output was removed
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(RuntimeError, match="no C compiler"):
        skinny_gemv.build(cache=tmp_path)
    skinny_gemv.load.cache_clear()
    try:
        with caplog.at_level("INFO", logger="vimtool.sampling.skinny_gemv"):
            assert skinny_gemv.load() is None
        assert "no C compiler" in caplog.text and "oneDNN" in caplog.text
    finally:
        skinny_gemv.load.cache_clear()


def test_the_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("VIMTOOL_SKINNY_KERNEL", "0")
    skinny_gemv.load.cache_clear()
    try:
        assert skinny_gemv.load() is None
        assert PackedLinear(nn.Linear(32, 8), 2, torch.bfloat16).skinny is None
    finally:
        skinny_gemv.load.cache_clear()


needs_onednn = pytest.mark.skipif(
    not packing_available("cpu"), reason="this torch build has no oneDNN (mkldnn) kernels"
)


def _packed_with_spy(monkeypatch, dtype):
    """(a PackedLinear of nn.Linear(64, 40) in `dtype`, that linear, the list of x shapes the kernel is called with)."""
    assert skinny_gemv.load() is not None, "the kernel did not build on this machine (see the log line)"
    calls = []
    real = skinny_gemv.SkinnyLinear.__call__
    monkeypatch.setattr(skinny_gemv.SkinnyLinear, "__call__", lambda self, x: calls.append(x.shape) or real(self, x))
    torch.manual_seed(0)
    lin = nn.Linear(64, 40)
    return PackedLinear(lin, 2, dtype), lin, calls


def _close_at_rows(packed, lin, rows):
    with torch.no_grad():
        for r in rows:
            x = torch.randn(r, 1, 64)
            got, want = packed(x), lin(x)
            assert got.dtype == torch.float32
            assert (got - want).norm() / want.norm() < 2e-2


ROWS = (1, 2, 3, 4, 8, 9)


def _kernel_rows(lib):
    """The row counts of ROWS at which the kernel should run (shapes as called: (rows, 1, 64))."""
    return [(r, 1, 64) for r in ROWS if r <= skinny_gemv.max_rows(lib)]


@needs_onednn
def test_packed_int8_linear_takes_the_int8_kernel_at_the_row_counts_where_it_pays(monkeypatch):
    packed, lin, calls = _packed_with_spy(monkeypatch, torch.int8)
    assert packed.kind == "int8"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _close_at_rows(packed, lin, ROWS)
    finally:
        torch.set_num_threads(threads)
    # the kernel only where it beat torch's int8 kernel: AVX-512 builds (bench/bench_decode.py --only gemv)
    lib = skinny_gemv.load()
    assert calls == (_kernel_rows(lib) if skinny_gemv.int8_pays(lib) else [])


@needs_onednn
def test_packed_bf16_linear_takes_the_kernel_at_few_rows_on_few_threads_only(monkeypatch):
    """Which path runs is what the docs promise: the kernel at <= max_rows rows (8 with panels, 2 with the row loop)
    and <= MAX_THREADS threads, oneDNN otherwise; both give the bf16 linear."""
    packed, lin, calls = _packed_with_spy(monkeypatch, torch.bfloat16)
    lib = skinny_gemv.load()
    expected = _kernel_rows(lib)
    assert expected[:2] == [(1, 1, 64), (2, 1, 64)] and (9, 1, 64) not in expected
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _close_at_rows(packed, lin, ROWS)
        assert calls == expected  # more rows: oneDNN
        torch.set_num_threads(skinny_gemv.MAX_THREADS + 1)
        with torch.no_grad():
            packed(torch.randn(2, 1, 64))
        assert len(calls) == len(expected)  # more threads than one core's kernel pays for: oneDNN
    finally:
        torch.set_num_threads(threads)
    with torch.enable_grad():
        packed(torch.randn(2, 1, 64))  # autograd on: the original layer, not the kernel
    assert len(calls) == len(expected)


def test_the_panel_layout_is_the_weight_in_32_column_panels_of_k_pairs(tmp_path):
    """pack() on the panel build: element [p, j, c, i] is W[32 p + c, 2 j + i], zero past N and K. (int8 weights are
    further re-encoded for the kernel's lookup: the int8 test above checks them through their products.)"""
    lib = skinny_gemv.open_library(skinny_gemv.build(cache=tmp_path))
    w = torch.arange(1, 40 * 7 + 1, dtype=torch.float32).reshape(40, 7).to(torch.bfloat16)
    packed = skinny_gemv.pack(lib, w)
    if lib.vimtool_skinny_layout() == 0:
        assert torch.equal(packed, w)
        return
    assert packed.shape == (2, 4, 64)  # panels, k-pairs, 32 columns x 2
    packed = packed.view(2, 4, 32, 2)
    for p, j, c, i in [(0, 0, 0, 0), (0, 0, 0, 1), (0, 3, 31, 0), (1, 2, 7, 1), (1, 3, 7, 0)]:
        assert packed[p, j, c, i].item() == w[32 * p + c, 2 * j + i].item()
    assert packed[1, :, 8:].abs().sum() == 0 and packed[:, 3, :, 1].abs().sum() == 0  # padding: N 40 -> 64, K 7 -> 8


def _attention_reference(q, k, v):
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    return (scores.softmax(-1) @ v.double()).float()


def test_the_attention_kernel_is_one_query_attention_over_the_cache(tmp_path):
    """Both builds: softmax(q k^T / sqrt(Dh)) v over views of a (B, H, max_len, Dh) cache, for cache lengths
    1, 7 and 33 and head widths the build's vectors divide; fp32 error only."""
    torch.manual_seed(3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _, flags in _builds():
            lib = skinny_gemv.open_library(skinny_gemv.build(flags, tmp_path))
            for b, h, dh in (
                (1, 1, 64),
                (3, 4, 32),
                (2, 8, 128),
                (8, 2, 48 if lib.vimtool_skinny_simd() == 512 else 40),
            ):
                k_cache, v_cache = torch.randn(2, b, h, 40, dh).unbind(0)
                for s in (1, 7, 33):
                    q, k, v = torch.randn(b, h, 1, dh), k_cache[:, :, :s], v_cache[:, :, :s]
                    got = skinny_gemv.one_query_attention(lib, q, k, v)
                    assert got is not None and got.shape == (b, h, 1, dh), (flags, b, h, dh, s)
                    assert (got - _attention_reference(q, k, v)).abs().max().item() < 1e-5, (flags, b, h, dh, s)
    finally:
        torch.set_num_threads(threads)


def test_the_attention_kernel_declines_what_it_does_not_cover():
    """None (the caller's torch path) for another dtype, a head width the vectors do not divide, a cache whose rows
    are not laid out as (B, H, max_len, Dh), or more torch threads than it pays for."""
    lib = skinny_gemv.load()
    assert lib is not None, "the kernel did not build on this machine (see the log line)"
    q, k, v = torch.randn(2, 4, 1, 64), torch.randn(2, 4, 9, 64), torch.randn(2, 4, 9, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert skinny_gemv.one_query_attention(lib, q, k, v) is not None
        assert skinny_gemv.one_query_attention(lib, q.double(), k.double(), v.double()) is None
        assert skinny_gemv.one_query_attention(lib, q[..., :36], k[..., :36], v[..., :36]) is None  # Dh 36
        assert skinny_gemv.one_query_attention(lib, q, k.transpose(0, 1).contiguous().transpose(0, 1), v) is None
        torch.set_num_threads(skinny_gemv.MAX_THREADS + 1)
        assert skinny_gemv.one_query_attention(lib, q, k, v) is None
    finally:
        torch.set_num_threads(threads)


def test_int8_weights_outside_the_symmetric_range_are_refused():
    lib = skinny_gemv.load()
    with pytest.raises(ValueError, match="-127, 127"):
        skinny_gemv.SkinnyLinear(lib, torch.full((4, 8), -128, dtype=torch.int8), None, torch.ones(4))


def test_the_openmp_build_gives_the_same_numbers_on_one_thread_and_on_two(tmp_path):
    """Built with -fopenmp, the panel and attention loops split their work over torch's threads; each output is
    still computed by one thread in one order, so 1 and 2 threads (and the serial build) agree bit for bit. Shapes
    above the parallel threshold (PARALLEL_MIN_WORK) so that the second thread really works."""
    torch.manual_seed(4)
    libs = [skinny_gemv.open_library(skinny_gemv.build(flags, tmp_path)) for flags in (skinny_gemv.DEFAULT_FLAGS,
                                                                                       skinny_gemv.SERIAL_FLAGS)]  # fmt: skip
    x, w = torch.randn(8, 200), torch.randn(1000, 200)
    q8, scales = torch.randint(-127, 128, (1000, 200), dtype=torch.int8), torch.rand(1000)
    q, k, v = torch.randn(8, 8, 1, 32), torch.randn(8, 8, 100, 32), torch.randn(8, 8, 100, 32)
    threads = torch.get_num_threads()
    outs = []
    try:
        for lib in libs:
            bf16 = skinny_gemv.SkinnyLinear(lib, w.to(torch.bfloat16), None)
            int8 = skinny_gemv.SkinnyLinear(lib, q8, None, scales)
            for n in (1, 2):
                torch.set_num_threads(n)
                outs.append((bf16(x), int8(x), skinny_gemv.one_query_attention(lib, q, k, v)))
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)
