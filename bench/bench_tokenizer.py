"""Tokenizer throughput: encode and decode images/s (tiny at 32x32, Small (SS) at 256x256) and tokenize-dataset
end to end (data loading + resize + encode + Parquet writing), images/s. Prints a table.

    python bench/bench_tokenizer.py            # batch 64 for both sizes (SS at 256 on a CPU takes minutes:
                                               #   --small-batch 8 there; images/s hardly depends on it)
    python bench/bench_tokenizer.py --smoke    # seconds: tiny only at batch 64, SS at batch 2, a small tokenize run

Weights are random (throughput does not depend on them). Threads: torch's default unless --threads is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vimtool.checkpoint import save_model  # noqa: E402
from vimtool.models.vitvqgan import ViTVQGAN, size_config  # noqa: E402
from vimtool.tokenize import TokenizeConfig, tokenize_dataset  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_codec(size: str, image_size: int | None, batch: int, iters: int, device: torch.device) -> tuple[float, float]:
    kw = {"image_size": image_size} if image_size else {}
    model = ViTVQGAN(size_config(size, **kw)).to(device).eval()
    s = model.config.image_size
    x = torch.rand(batch, 3, s, s, device=device) * 2 - 1
    with torch.inference_mode():
        ids = model.encode(x)  # warm-up
        model.decode(ids)
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            ids = model.encode(x)
        _sync(device)
        enc = batch * iters / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(iters):
            model.decode(ids)
        _sync(device)
        dec = batch * iters / (time.perf_counter() - t)
    return enc, dec


def time_tokenize(n: int, batch: int, data: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp) / "tok"
        save_model(ViTVQGAN(size_config("tiny")), tok)
        cfg = TokenizeConfig(tokenizer=str(tok), data=data, out=str(Path(tmp) / "shards"), limit=n,
                             batch_size=batch, rows_per_shard=max(1, n // 4), progress=False)  # fmt: skip
        t = time.perf_counter()
        paths = tokenize_dataset(cfg)
        dt = time.perf_counter() - t
        assert paths
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--small-batch", type=int, default=64, help="batch for Small at 256x256 (CPU: try 8)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--tokenize-images", type=int, default=2000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    small_batch = 2 if args.smoke else args.small_batch
    iters = 1 if args.smoke else args.iters
    for name, size, img, batch in (("tiny", "tiny", 32, args.batch), ("Small (SS)", "SS", 256, small_batch)):
        enc, dec = time_codec(size, img, batch, iters if size == "SS" else max(iters, 3), device)
        rows.append((f"{name} {img}x{img}", batch, f"{enc:,.1f}", f"{dec:,.1f}"))
    n = 256 if args.smoke else args.tokenize_images
    tok = time_tokenize(n, args.batch, "mnist5k")
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(f"{'model':<20} {'batch':>5} {'encode img/s':>14} {'decode img/s':>14}")
    for r in rows:
        print(f"{r[0]:<20} {r[1]:>5} {r[2]:>14} {r[3]:>14}")
    print(f"tokenize-dataset end to end (tiny, mnist5k, {n} images, batch {args.batch}): {tok:,.1f} img/s")


if __name__ == "__main__":
    main()
