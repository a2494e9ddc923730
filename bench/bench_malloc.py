"""Training-step time with glibc's default malloc against `vimtool.devices.keep_freed_memory` (CPU).

    python bench/bench_malloc.py            # the 25M decoder of bench_transformer.py (width 512, depth 8, seq 256)
    python bench/bench_malloc.py --smoke    # seconds: a tiny decoder, checks the script runs

Why: torch's CPU tensors come from malloc; glibc serves a large block from a fresh mmap when no free heap block
fits, gives it back on free and trims the heap top, so every step page-faults its activations, gradients and
logits in again. `keep_freed_memory` (applied by the training engine on CPU) keeps freed memory in the heap.
Each (dtype, rank, setting) runs in a FRESH process (a heap grown under one setting would serve the other one
too); the rounds alternate the two settings so the machine's load hits both alike. The table gives the median
step (CPU clock), the median of the per-round ratios, minor page faults per step and each process's peak RSS.
Writes bench/results/malloc.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, parser, setup, write_results  # noqa: E402

SMOKE = dict(vocab=64, seq=16, dim=32, depth=2, heads=2, batch=2)
FULL = dict(vocab=8192, seq=256, dim=512, depth=8, heads=8, batch=8)


def child(dtype: str, rank: int, mode: str, steps: int, size: dict) -> dict:
    """One process: build the model, apply the malloc setting, 2 warm-up steps, then `steps` timed ones."""
    import torch
    import torch.nn.functional as F

    from bench.bench_transformer import BenchLM
    from vimtool.devices import keep_freed_memory
    from vimtool.nn import NobleConfig
    from vimtool.train.optim import param_groups

    torch.set_num_threads(1)
    applied = keep_freed_memory() if mode == "kept" else False
    torch.manual_seed(0)
    v = size["vocab"]
    model = BenchLM(v, size["seq"], size["dim"], size["depth"], size["heads"], NobleConfig(rank=rank) if rank else None)
    opt = torch.optim.AdamW(param_groups(model, 1e-4, 0.1), fused=True)
    ids = torch.randint(0, v, (size["batch"], size["seq"] + 1))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext():
            logits = model(ids[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.float().reshape(-1, v), ids[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step()
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    for _ in range(steps):
        step()
    return {
        "applied": applied,
        "step_s": (time.process_time() - t0) / steps,
        "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.set_defaults(clock="cpu")  # the children time CPU seconds on one thread
    ap.add_argument("--rounds", type=int, default=3, help="fresh-process pairs per row")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--ranks", default="0,32", help="NOBLE ranks to run (0 = the base model)")
    ap.add_argument("--child", nargs=3, metavar=("DTYPE", "RANK", "MODE"), help=argparse.SUPPRESS)
    a = setup(ap.parse_args())
    size = SMOKE if a.smoke else FULL
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.child[2], a.steps, size)))
        return

    from vimtool.devices import glibc

    if glibc() is None:
        print("glibc only: nothing to compare on this platform")
        return
    rounds, steps = (1, 1) if a.smoke else (a.rounds, a.steps)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for dtype in ("fp32",) if a.smoke else ("fp32", "bf16"):
        for rank in (0,) if a.smoke else (int(r) for r in a.ranks.split(",")):
            runs: dict[str, list[dict]] = {"default": [], "kept": []}
            for _ in range(rounds):
                for mode in ("default", "kept"):
                    cmd = [sys.executable, __file__, "--child", dtype, str(rank), mode, "--steps", str(steps)]
                    out = subprocess.run(
                        cmd + (["--smoke"] if a.smoke else []), capture_output=True, text=True, env=env, check=True
                    ).stdout
                    runs[mode].append(json.loads(out.strip().splitlines()[-1]))
            gain = 1 - statistics.median(k["step_s"] / d["step_s"] for k, d in zip(runs["kept"], runs["default"]))
            for mode, rs in runs.items():
                rows.append(
                    (
                        dtype,
                        rank,
                        mode,
                        1000 * statistics.median(r["step_s"] for r in rs),
                        statistics.median(r["faults"] for r in rs),
                        max(r["rss_mb"] for r in rs),
                        f"{100 * gain:+.1f}%" if mode == "kept" else "-",
                    )
                )
    header = ["dtype", "noble r", "malloc", "step ms", "minor faults/step", "peak RSS MB", "faster (paired)"]
    title = (f"Training step, glibc malloc default vs freed memory kept: decoder width {size['dim']}, depth "
             f"{size['depth']}, seq {size['seq']}, batch {size['batch']}, vocab {size['vocab']}; {rounds} fresh-process "
             f"pairs x {steps} timed steps per row, CPU clock, 1 thread")  # fmt: skip
    write_results("malloc", header, [list(r) for r in rows], a.out, extra={"args": vars(a)}, title=title)


if __name__ == "__main__":
    main()
