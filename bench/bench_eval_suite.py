"""Speed and memory of eval-fid's one-pass suite: FID only vs every metric, for a small and a 10x larger set.

    python bench/bench_eval_suite.py --small          # CPU: N = 20 and 200 images per set (a few minutes)
    python bench/bench_eval_suite.py --device cuda    # N = 500 and 5,000 images per set
    python bench/bench_eval_suite.py --smoke          # N = 4, FID only vs all (CI; the 2048-d distances dominate)

Each configuration runs in its own process (peak RSS is per process): two ADM-style `.npz` batches of N
procedural 32x32 images are streamed through the Inception (`inception_pass`), each set into a
`SetAccumulator` that keeps what the metrics need: FID only keeps two float64 running Gaussians; the full
suite (FID, sFID, IS, precision/recall k=3, KID 100 x min(1000, N)) also keeps pool_3 (float32) and logits.
Peak RSS after the pass should grow with N only by the kept features (N x (2048 + 1008) x 4 bytes per
set) in the full suite, and not at all for FID only; the metric math adds a fixed-size peak on top (the
eigendecompositions of 2048 x 2048 covariances, independent of N). Weights: the real pt_inception file when it
resolves (path / cache), else
the tests' seeded stand-in weights of the same shapes (speed does not depend on the values).
Prints a table; writes bench/results/eval_suite.{json,md} through the harness (smoke runs: smoke_eval_suite).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # fid_fixtures: the stand-in weights when the real file is absent

from bench.harness import parser, setup, write_results  # noqa: E402
from vimtool.errors import VimtoolError  # noqa: E402
from vimtool.metrics.batches import open_npz, write_image_batch  # noqa: E402
from vimtool.metrics.fid import frechet_distance, inception_pass, inception_score  # noqa: E402
from vimtool.metrics.inception import load_inception  # noqa: E402
from vimtool.metrics.kid import kernel_inception_distance  # noqa: E402
from vimtool.metrics.prdc import precision_recall  # noqa: E402
from vimtool.metrics.suite import Needs, SetAccumulator  # noqa: E402


def procedural_images(n: int, seed: int, size: int = 32):
    """Smooth random colour fields (not white noise, so the Inception sees structure)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        low = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
        img = np.kron(low, np.ones((size // 4, size // 4, 1), np.float32))  # (size, size, 3) blocks
        yield np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(args) -> dict:
    device = torch.device(args.device)
    try:
        model, _ = load_inception(device=device, download=False)
        weights = "real"
    except VimtoolError:  # the tests' seeded stand-in weights: varied features (a default init gives ~constant ones)
        from fid_fixtures import model_from_state, seeded_inception_state

        model = model_from_state(seeded_inception_state(0)).to(device).fuse_for_inference(channels_last=True)
        weights = "seeded stand-in (tests/fid_fixtures.py)"
    full = args.suite == "all"
    needs = Needs.everything() if full else Needs(stats=True)
    x = torch.rand(2, 3, 32, 32, device=device)
    model(x)  # warm-up (cuDNN autotune, oneDNN primitives)
    rss_model = peak_rss_mb()
    feats = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for role in ("A", "B"):
        acc = SetAccumulator(needs)
        batch = open_npz(Path(args.data) / f"{role}.npz")
        sizes = inception_pass(batch.iter_images(), model, {role: (None, acc)}, args.batch_size, None, 2, role)
        feats[role] = acc.result(sizes)
    sync()
    t_pass = time.perf_counter() - t0
    rss_pass = peak_rss_mb()  # the streaming pass: what must not grow with N (beyond kept features)
    t0 = time.perf_counter()
    a, b = feats["A"], feats["B"]
    fid = frechet_distance(a.stats, b.stats)
    if full:
        frechet_distance(a.spatial, b.spatial)
        inception_score(b.logits, min(10, len(b.logits)))
        precision_recall(a.pool, b.pool, 3, device)
        kernel_inception_distance(b.pool, a.pool, 100, 1000, 0)
    t_metrics = time.perf_counter() - t0
    kept = sum(f.pool.nbytes + f.logits.nbytes for f in feats.values()) if full else 0
    return {
        "suite": "fid,sfid,is,precision,recall,kid" if full else "fid",
        "n_per_set": args.n,
        "device": str(device),
        "batch_size": args.batch_size,
        "weights": weights,
        "pass_s": round(t_pass, 3),
        "metrics_s": round(t_metrics, 3),
        "images_per_s_pass": round(2 * args.n / t_pass, 1),
        "images_per_s_total": round(2 * args.n / (t_pass + t_metrics), 1),
        "peak_rss_after_pass_mb": round(rss_pass, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_model_mb": round(rss_model, 1),
        "features_kept_mb": round(kept / 2**20, 1),
        "fid": round(fid, 4),
    }


def main() -> None:
    p = parser(__doc__, threads=None)
    p.add_argument("--small", action="store_true", help="CPU-sized: N = 20 and 200")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--suite", default="fid", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    setup(args)
    sizes = (4,) if args.smoke else (20, 200) if args.small or args.device == "cpu" else (500, 5000)
    batch_size = args.batch_size or (4 if args.smoke else 20 if args.device == "cpu" else 250)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            data = Path(tmp) / f"n{n}"
            for role, seed in (("A", 0), ("B", 1)):
                write_image_batch(data / f"{role}.npz", procedural_images(n, seed), n)
            for suite in ("fid", "all"):
                cmd = [sys.executable, __file__, "--worker", "--suite", suite, "--n", str(n), "--data", str(data)]
                cmd += ["--device", args.device, "--batch-size", str(batch_size)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"worker failed ({suite}, N={n}):\n{res.stderr[-3000:]}")
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    header = ("suite", "N/set", "img/s pass", "img/s total", "metrics s", "RSS pass MB", "RSS peak MB", "kept MB")
    table = [
        (r["suite"], r["n_per_set"], round(r["images_per_s_pass"], 1), round(r["images_per_s_total"], 1),
         round(r["metrics_s"], 2), round(r["peak_rss_after_pass_mb"]), round(r["peak_rss_mb"]),
         round(r["features_kept_mb"], 1))
        for r in rows
    ]  # fmt: skip
    write_results("eval_suite", header, table, args.out, extra={"device": args.device, "records": rows},
                  title="eval-fid: FID only vs the full suite, one Inception pass per set")  # fmt: skip


if __name__ == "__main__":
    main()
