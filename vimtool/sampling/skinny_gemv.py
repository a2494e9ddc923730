"""Small C kernels for the decode step, built on first use with the system's compiler: its bf16 and int8 linears at
1-8 rows, and its one-query self-attention over the KV cache (`one_query_attention`, fp32).

    kernel = load()                                  # None where no C compiler works (callers then use oneDNN)
    linear = SkinnyLinear(kernel, weight_bf16, bias_fp32)          # or (kernel, weight_int8, bias, scales)
    y = linear(x)                                    # x (..., K) fp32 -> (..., N) fp32, at most linear.max_rows rows

Why: a KV-cached decode step multiplies batch x 2 rows (guidance) by every weight matrix, a stream over the
weights. oneDNN's packed bf16 inner product reads them at 8-17 GB/s on one core of an AMD Zen 4 (AVX512-BF16) and
torch's int8 kernel at 3-8 GB/s, where a plain sum reads ~27 GB/s. On AVX512-BF16 + AVX512-VBMI the kernel
(skinny_gemv.c) stores the weights once in panels of 32 output columns with k-pairs side by side, so that each
64-byte weight vector is multiplied with every row's broadcast k-pair by vdpbf16ps and no horizontal sums remain:
18-25 GB/s of bf16 weights at 1-4 rows and 15-17 at 8 (1.4-2.5x oneDNN), int8 11-22 GB/s at 1-4 rows and 7.5-9.4
at 8 (2.1-3.0x torch's kernel; bench/bench_decode.py --only gemv). Elsewhere (AVX2, AVX-512 without BF16) a
row-by-row loop in fp32 that pays at 1-2 rows only (`max_rows`). Built with -fopenmp, its loops run on torch's
OpenMP threads (on 2: ~30 GB/s at 2 rows, 1.5x one thread at 8); `packed_linear` uses it up to MAX_THREADS torch
threads, the count measured; more go to oneDNN.

Build: `cc -O3 -march=native -fopenmp -shared -fPIC` (or $CC; without -fopenmp if that fails) into a cache
folder ($VIMTOOL_KERNEL_CACHE, default ~/.cache/vimtool/kernels), named by a hash of the source, the compiler, its
flags and this CPU's flags, so a changed CPU or source builds anew; written to a temporary name and renamed, so a
concurrent or interrupted build never leaves a half-written library. About 0.5 s, once per machine. No compiler, a failed build or VIMTOOL_SKINNY_KERNEL=0:
`load()` returns None and sampling runs exactly as without this module (one log line says why).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("skinny_gemv.c")
# rows per call where the kernel beats oneDNN / torch's int8 kernel (bench/bench_decode.py --only gemv): the panels
# at every count up to 8 (1.4-2.5x; more rows would take further passes over the weights: oneDNN's turn); the row
# loop 1.7-2.0x at 1-2 rows, 0.8-1.35x at 3
PANEL_MAX_ROWS, ROW_LOOP_MAX_ROWS = 8, 2
MAX_THREADS = 2  # measured up to 2 (the machine had 2 cores); more threads go to oneDNN
PATHS = {1: "portable (row by row, widened to fp32)", 2: "AVX512-BF16 (panels, vdpbf16ps)"}
# -fopenmp: the panel and attention loops run on torch's OpenMP threads (its libgomp, already loaded; skinny_gemv.c);
# a compiler without OpenMP gets the serial build (SERIAL_FLAGS)
DEFAULT_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
SERIAL_FLAGS = tuple(f for f in DEFAULT_FLAGS if f != "-fopenmp")


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if Path(cc).is_file() else None)
    return next((p for p in map(shutil.which, ("cc", "gcc", "clang")) if p), None)


def _cpu_fingerprint() -> str:
    """What -march=native depends on: the CPU's feature flags (Linux), else the processor's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _cache_dir() -> Path:
    root = os.environ.get("VIMTOOL_KERNEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vimtool" / "kernels"


def build(flags: tuple[str, ...] = DEFAULT_FLAGS, cache: Path | None = None) -> Path:
    """Compile skinny_gemv.c with `flags` (cached); the library's path. Raises RuntimeError with the compiler's
    message on failure (load() turns that into a log line)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags).encode(), _cpu_fingerprint().encode()]))
    folder = cache or _cache_dir()
    lib = folder / f"skinny_gemv-{key.hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(cc).name} failed: {(done.stderr or done.stdout).strip()[-400:]}")
        os.replace(tmp, lib)  # atomic: another process sees the whole library or none
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{Path(cc).name} did not run: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def open_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.vimtool_bf16_linear.argtypes = [p, i64, i64, p, i64, p, p, p]
    lib.vimtool_bf16_linear.restype = None
    lib.vimtool_int8_linear.argtypes = [p, i64, i64, p, i64, p, p, p, p]
    lib.vimtool_int8_linear.restype = None
    lib.vimtool_skinny_layout.restype = ctypes.c_int
    lib.vimtool_attention_scores.argtypes = [p, p, i64, i64, i64, i64, ctypes.c_float, p]
    lib.vimtool_attention_scores.restype = None
    lib.vimtool_attention_values.argtypes = [p, p, i64, i64, i64, i64, p]
    lib.vimtool_attention_values.restype = None
    lib.vimtool_skinny_path.restype = ctypes.c_int
    lib.vimtool_skinny_simd.restype = ctypes.c_int
    return lib


@functools.cache  # one build / load per process
def load() -> ctypes.CDLL | None:
    """The kernel library for this CPU, or None (disabled, not x86/ARM Linux/macOS, or no working compiler)."""
    if os.environ.get("VIMTOOL_SKINNY_KERNEL", "1") == "0":
        return None
    try:
        try:
            lib = open_library(build())
        except (RuntimeError, OSError) as e:
            log.info("decode kernel: the OpenMP build failed (%s); trying a serial one", e)
            lib = open_library(build(SERIAL_FLAGS))
    except (RuntimeError, OSError) as e:
        log.info("decode kernel not built (%s); bf16 decode weights use oneDNN", e)
        return None
    if lib.vimtool_skinny_simd() == 0:  # measured on x86 with AVX2 / AVX-512 only
        log.info("decode kernel not used: this CPU has neither AVX2 nor AVX-512; bf16 decode weights use oneDNN")
        return None
    log.debug("decode kernel: %s", PATHS.get(lib.vimtool_skinny_path(), "?"))
    return lib


def path_name(lib: ctypes.CDLL) -> str:
    return PATHS.get(lib.vimtool_skinny_path(), "unknown")


def int8_pays(lib: ctypes.CDLL) -> bool:
    """The int8 kernel beats torch's int8 kernel only with AVX-512 (bench/bench_decode.py --only gemv); on AVX2 the
    row loop widens 8 weights per step and lost to the bf16 loop in a -march=x86-64-v3 build."""
    return lib.vimtool_skinny_simd() == 512


def max_rows(lib: ctypes.CDLL) -> int:
    """The most rows per call at which this build's kernel is the faster choice."""
    return PANEL_MAX_ROWS if lib.vimtool_skinny_layout() else ROW_LOOP_MAX_ROWS


def pack(lib: ctypes.CDLL, weight: torch.Tensor) -> torch.Tensor:
    """weight (N, K) bf16 or int8 in the layout this build reads (skinny_gemv.c): row-major as is, or panels of 32
    output columns (zero-padded), k-pairs side by side: [N / 32][K / 2][32][2]; int8 there is sign-magnitude, each
    step's 64 bytes in the order the kernel's byte unpacks take them."""
    width = lib.vimtool_skinny_layout()
    if not width:
        return weight.contiguous()
    n, k = weight.shape
    half, panels = (k + 1) // 2, -(-n // width)
    padded = weight.new_zeros(panels * width, 2 * half)
    padded[:n, :k] = weight
    steps = padded.view(panels, width, half, 2).permute(0, 2, 1, 3).reshape(panels, half, 2 * width)
    if weight.dtype != torch.int8:
        return steps.contiguous()
    # |q| <= 127 (quantize_int8 clamps there): bit 7 is free for the sign
    magnitude_sign = (steps.abs().view(torch.uint8) | ((steps < 0).view(torch.uint8) << 7)).view(torch.int8)
    # unpacklo / unpackhi of two bytes take bytes 0-7 / 8-15 of each 16-byte lane: weight 32 h + 8 g + i of a step
    # (half h of the 64, group g of 8) goes to byte 16 g + 8 h + i
    return magnitude_sign.view(panels, half, 2, 4, 8).transpose(2, 3).reshape(panels, half, 2 * width).contiguous()


class SkinnyLinear:
    """One linear's weights in the kernel's layout, packed once: `linear(x)` is x (..., K) fp32 @ W^T (times the per
    output channel `scales` for int8) + bias -> (..., N) fp32, on the CPU, no autograd. bf16 weights, or int8 with
    fp32 scales (N,); bias fp32 (N,) or None."""

    def __init__(
        self, lib: ctypes.CDLL, weight: torch.Tensor, bias: torch.Tensor | None, scales: torch.Tensor | None = None
    ) -> None:
        if weight.dtype not in (torch.bfloat16, torch.int8) or (weight.dtype == torch.int8) != (scales is not None):
            raise ValueError("SkinnyLinear takes bf16 weights, or int8 weights with their per-row scales")
        if weight.dtype == torch.int8 and bool((weight == -128).any()):
            raise ValueError("int8 weights must lie in [-127, 127] (symmetric, as quantize_int8 makes them)")
        self.lib, (self.out_features, self.in_features) = lib, weight.shape
        self.weight = pack(lib, weight)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.scales = None if scales is None else scales.detach().float().contiguous()
        self.max_rows = max_rows(lib)
        # the per-call work kept small (a decode step makes ~30 such calls): pointers read once, and one scratch
        # buffer (x as bf16, rows padded to even length) reused: a layer runs one call at a time
        self.scratch = torch.empty(self.max_rows * (self.in_features + 1), dtype=torch.bfloat16)
        self.weight_ptr = self.weight.data_ptr()
        self.bias_ptr = None if self.bias is None else self.bias.data_ptr()
        self.scales_ptr = None if self.scales is None else self.scales.data_ptr()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        if x.dtype != torch.float32 or not x.is_contiguous():
            x = x.float().contiguous()
        m = x.numel() // k
        y = torch.empty(*x.shape[:-1], n)
        scratch = self.scratch if m <= self.max_rows else torch.empty(m * (k + 1), dtype=torch.bfloat16)
        if self.scales is None:
            self.lib.vimtool_bf16_linear(x.data_ptr(), m, k, self.weight_ptr, n, self.bias_ptr, y.data_ptr(),
                                         scratch.data_ptr())  # fmt: skip
        else:
            self.lib.vimtool_int8_linear(x.data_ptr(), m, k, self.weight_ptr, n, self.scales_ptr, self.bias_ptr,
                                         y.data_ptr(), scratch.data_ptr())  # fmt: skip
        return y


def one_query_attention(lib: ctypes.CDLL, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """softmax(q k^T / sqrt(Dh)) v for one query per (batch, head): q (B, H, 1, Dh), k / v (B, H, S, Dh) fp32 views
    of a KV cache's (B, H, max_len, Dh) buffers -> (B, H, 1, Dh); None where the kernel does not apply (other dtypes
    or layouts, Dh not a multiple of the build's vector width, more than MAX_THREADS torch threads), for the caller's
    torch path. Two C loops around torch's softmax: about half the time of two batched GEMMs in a decode step, whose
    R tiny (1 x Dh x S) GEMMs read the cache at ~5 GB/s (bench/bench_decode.py --only step)."""
    b, h, t, dh = q.shape
    s = k.shape[2]
    if (
        t != 1
        or q.dtype != torch.float32
        or k.dtype != torch.float32
        or v.dtype != torch.float32
        or dh % (lib.vimtool_skinny_simd() // 32)
        or torch.get_num_threads() > MAX_THREADS
        or any(x.stride(3) != 1 or x.stride(2) != dh or x.stride(0) != h * x.stride(1) for x in (k, v))
        or k.stride(1) != v.stride(1)
    ):
        return None
    q = q.contiguous()
    scores = torch.empty(b * h, s)
    lib.vimtool_attention_scores(q.data_ptr(), k.data_ptr(), k.stride(1), b * h, s, dh, dh**-0.5, scores.data_ptr())
    probs = scores.softmax(-1)
    out = torch.empty(b, h, 1, dh)
    lib.vimtool_attention_values(probs.data_ptr(), v.data_ptr(), v.stride(1), b * h, s, dh, out.data_ptr())
    return out


def bf16_linear(lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One call without keeping the packed weights: x (..., K) fp32 @ weight (N, K) bf16 ^T + bias -> (..., N) fp32."""
    return SkinnyLinear(lib, weight, bias)(x)


def int8_linear(
    lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """One call: x (..., K) fp32 @ (weight (N, K) int8 * scales (N,) per row) ^T + bias -> (..., N) fp32."""
    return SkinnyLinear(lib, weight, bias, scales)(x)


__all__ = [
    "MAX_THREADS",
    "PANEL_MAX_ROWS",
    "PATHS",
    "ROW_LOOP_MAX_ROWS",
    "SERIAL_FLAGS",
    "SkinnyLinear",
    "bf16_linear",
    "build",
    "int8_linear",
    "int8_pays",
    "load",
    "max_rows",
    "one_query_attention",
    "open_library",
    "pack",
    "path_name",
]
