"""A small C kernel for the decode step's bf16 linears at 1-2 rows, built on first use with the system's compiler.

    kernel = load()               # None where no C compiler works (callers then use oneDNN)
    y = bf16_linear(kernel, x, weight_bf16, bias_fp32)

Why: a KV-cached decode step with guidance multiplies 2 rows by every weight matrix, a stream over the weights.
oneDNN's packed bf16 inner product reads them at 10-14 GB/s on one core of an AMD Zen 4 (AVX512-BF16), where a
plain sum reads ~27 GB/s; this loop (skinny_gemv.c: one weight row at a time, one dependency chain per activation
row, vdpbf16ps) reads 19-23 GB/s at 1-2 rows, 1.7-2.0x oneDNN, but only 0.8-1.35x at 3 rows and ~1x at 4
(bench/bench_decode.py --only gemv); past 2 rows it is bound by vdpbf16ps throughput (~2 cycles each there). It runs on one thread, and still
beat oneDNN on two (VIM width 512 at batch 1 with guidance: 192 tokens/s against 136), so `packed_linear` uses it
up to MAX_THREADS torch threads; with more cores oneDNN's threads read more bandwidth than one core can.

Build: `cc -O3 -march=native -shared -fPIC` (or $CC) into a cache folder ($VIMTOOL_KERNEL_CACHE, default
~/.cache/vimtool/kernels), named by a hash of the source, the compiler and this CPU's flags, so a changed CPU or
source builds anew; written to a temporary name and renamed, so a concurrent or interrupted build never leaves
a half-written library. About 0.3 s, once per machine. No compiler, a failed build or VIMTOOL_SKINNY_KERNEL=0:
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
MAX_ROWS = 2  # 1.7-2.0x oneDNN at 1-2 rows (batch 1 with guidance), 0.8-1.35x at 3 (bench/bench_decode.py gemv)
MAX_THREADS = 2  # measured up to 2 (the machine had 2 cores); more threads go to oneDNN
PATHS = {1: "portable (bf16 widened to fp32)", 2: "AVX512-BF16 (vdpbf16ps)"}
DEFAULT_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")


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
    lib.vimtool_int8_linear.argtypes = [p, i64, i64, p, i64, p, p, p]
    lib.vimtool_int8_linear.restype = None
    lib.vimtool_skinny_path.restype = ctypes.c_int
    lib.vimtool_skinny_simd.restype = ctypes.c_int
    return lib


@functools.cache  # one build / load per process
def load() -> ctypes.CDLL | None:
    """The kernel library for this CPU, or None (disabled, not x86/ARM Linux/macOS, or no working compiler)."""
    if os.environ.get("VIMTOOL_SKINNY_KERNEL", "1") == "0":
        return None
    try:
        lib = open_library(build())
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
    """The int8 loop beats torch's int8 kernel only with AVX-512 (bench/bench_decode.py --only gemv); on AVX2 it
    widens 8 weights per step and lost to the bf16 loop in a -march=x86-64-v3 build."""
    return lib.vimtool_skinny_simd() == 512


def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    x2 = x.reshape(-1, k)
    return x2 if x2.dtype == torch.float32 and x2.is_contiguous() else x2.float().contiguous()


def bf16_linear(lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., K) fp32 @ weight (N, K) bf16 ^T + bias (N,) fp32 -> (..., N) fp32, on the CPU, no autograd."""
    n, k = weight.shape
    x2 = _rows(x, k)
    m = x2.shape[0]
    y = torch.empty(m, n)
    scratch = torch.empty(m * k, dtype=torch.bfloat16)
    lib.vimtool_bf16_linear(
        x2.data_ptr(), m, k, weight.data_ptr(), n, None if bias is None else bias.data_ptr(), y.data_ptr(),
        scratch.data_ptr(),
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], n)


def int8_linear(
    lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x (..., K) fp32 @ (weight (N, K) int8 * scales (N,) fp32 per row) ^T + bias -> (..., N) fp32."""
    n, k = weight.shape
    x2 = _rows(x, k)
    y = torch.empty(x2.shape[0], n)
    lib.vimtool_int8_linear(
        x2.data_ptr(), x2.shape[0], k, weight.data_ptr(), n, scales.data_ptr(),
        None if bias is None else bias.data_ptr(), y.data_ptr(),
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], n)


__all__ = [
    "MAX_ROWS",
    "MAX_THREADS",
    "PATHS",
    "bf16_linear",
    "build",
    "int8_linear",
    "int8_pays",
    "load",
    "open_library",
    "path_name",
]
