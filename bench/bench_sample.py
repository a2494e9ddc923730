"""Sampling speed of VIM (issue 5 "Done when"): tokens/s with the KV cache against recomputing the prefix.

    python bench/bench_sample.py            # width 256, depth 4, batch 8, at 64 (8x8) and 256 (16x16) tokens
    python bench/bench_sample.py --smoke    # seconds: a micro model at 16 and 64 tokens, checks it all runs
    python bench/bench_sample.py --threads 1 --repeats 1   # steadiest on a loaded shared CPU (no OpenMP barriers)

Measured 2026-11-24 on the shared 2-core CPU (--threads 1): 64 tokens 2491 vs 229 tok/s (10.9x), 256 tokens
1762 vs 58.7 tok/s (30.0x), identical ids.

Prints one table: for each sequence length, generated tokens per second (batch x length / seconds) of
`vimtool.sampling.vim.generate_batch` with `use_cache=True` (prefill the start token, then one position per
step) and `use_cache=False` (the whole prefix through the model every step, the naive sampler), the speed-up,
and whether both produced the same tokens (they must: same seed, same uniforms). Best of `--repeats` runs
each (a shared machine's load slows runs; best-of compares the code, not the neighbours).
Target (issue 5): >= 10x at 256 tokens. Cost model: uncached decoding runs sum_t t = T^2 / 2 positions of the
whole stack per sequence against T cached ones, so the ratio grows ~linearly with T (attention over the cache
is the cached path's only T-dependent cost).

Peer comparison (benchmarks issue): `PEERS` maps a name to a function(dim, depth, heads, tokens, batch) ->
tokens/s; the table adds one column per peer whose package is installed (e.g. parti-pytorch at equal model size).
Not wired here: the benchmarks engineer registers it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from vimtool.models.vim import VIM, size_config  # noqa: E402
from vimtool.sampling.logits import SamplingParams, row_uniforms  # noqa: E402
from vimtool.sampling.vim import generate_batch  # noqa: E402

# name -> fn(dim, depth, heads, tokens, batch) -> tokens/s, or None when the peer is not installed.
PEERS: dict[str, Callable[[int, int, int, int, int], float | None]] = {}


def best_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(
    dim: int,
    depth: int,
    heads: int,
    grids: list[int],
    batch: int,
    repeats: int,
    device: str,
    decode_dtype: str = "fp32",
) -> list[dict]:
    rows = []
    for side in grids:
        torch.manual_seed(0)
        cfg = size_config("micro", dim=dim, depth=depth, heads=heads, mlp_dim=4 * dim, vocab_size=1024, grid=(side, side),
                          num_classes=10, dropout=0.0)  # fmt: skip
        model = VIM(cfg).to(device).eval()
        T = cfg.num_tokens
        labels = torch.arange(batch) % 10
        u = row_uniforms(0, 0, batch, T)
        params = SamplingParams()
        generate_batch(
            model, labels, params, u[:, :], use_cache=True, decode_dtype=decode_dtype
        )  # warm-up (allocations, kernels)
        t_cached, a = best_seconds(
            lambda: generate_batch(model, labels, params, u, use_cache=True, decode_dtype=decode_dtype), repeats
        )
        t_plain, b = best_seconds(
            lambda: generate_batch(model, labels, params, u, use_cache=False, decode_dtype=decode_dtype), repeats
        )
        row = {
            "tokens": T,
            "cached": batch * T / t_cached,
            "uncached": batch * T / t_plain,
            "same": bool(torch.equal(a, b)),
        }
        for name, peer in PEERS.items():
            row[name] = peer(dim, depth, heads, T, batch)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="micro model, small grids: seconds")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--decode-dtype", choices=("fp32", "bf16"), default="fp32", help="decode weights (both paths)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.dim, args.depth, args.heads, args.batch, args.repeats = 32, 2, 2, 2, 1
        grids = [4, 8]
    else:
        grids = [8, 16]
    rows = run(args.dim, args.depth, args.heads, grids, args.batch, args.repeats, args.device, args.decode_dtype)
    peers = list(PEERS)
    print(f"VIM sampling, width {args.dim}, depth {args.depth}, heads {args.heads}, batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} threads, {args.decode_dtype} decode weights, best of {args.repeats}")  # fmt: skip
    header = f"{'tokens':>7} {'KV cache tok/s':>15} {'no cache tok/s':>15} {'speed-up':>9} {'same ids':>9}"
    print(header + "".join(f" {p + ' tok/s':>18}" for p in peers))
    for r in rows:
        line = f"{r['tokens']:>7} {r['cached']:>15.1f} {r['uncached']:>15.1f} {r['cached'] / r['uncached']:>8.1f}x {str(r['same']):>9}"
        print(line + "".join(f" {('n/a' if r[p] is None else f'{r[p]:.1f}'):>18}" for p in peers))
    if not all(r["same"] for r in rows):
        sys.exit("cached and uncached sampling disagree")


if __name__ == "__main__":
    main()
