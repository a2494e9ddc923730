"""Tokenizer throughput: encode and decode images/s (tiny at 32x32, Small (SS) at 256x256) and tokenize-dataset
end to end (data loading + resize + encode + Parquet writing), images/s. Prints a table.

    python bench/bench_tokenizer.py            # batch 64 for both sizes (SS at 256 on a CPU takes minutes:
                                               #   --small-batch 8 there; images/s hardly depends on it)
    python bench/bench_tokenizer.py --smoke    # seconds: tiny at batch 64, SS at 64x64 batch 2, a small tokenize run

Weights are random (throughput does not depend on them). Threads: torch's default unless --threads is given.
Medians of --iters timed calls after a warm-up. Writes bench/results/tokenizer.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, median_seconds, now, parser, setup, write_results  # noqa: E402
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
        ids = model.encode(x)

        def run(fn):
            def call():
                fn()
                _sync(device)

            return batch / median_seconds(call, iters).median

        enc = run(lambda: model.encode(x))
        dec = run(lambda: model.decode(ids))
    return enc, dec


def time_tokenize(n: int, batch: int, data: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp) / "tok"
        save_model(ViTVQGAN(size_config("tiny")), tok)
        cfg = TokenizeConfig(tokenizer=str(tok), data=data, out=str(Path(tmp) / "shards"), limit=n,
                             batch_size=batch, rows_per_shard=max(1, n // 4), progress=False)  # fmt: skip
        t = now()
        paths = tokenize_dataset(cfg)
        dt = now() - t
        assert paths
    return n / dt


def main() -> None:
    ap = parser(__doc__, RESULTS, threads=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--small-batch", type=int, default=64, help="batch for Small at 256x256 (CPU: try 8)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--tokenize-images", type=int, default=2000)
    args = setup(ap.parse_args())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    small_batch = 2 if args.smoke else args.small_batch
    iters = 1 if args.smoke else args.iters
    small_img = 64 if args.smoke else 256  # smoke: the SS architecture at a quarter of its side
    for name, size, img, batch in (("tiny", "tiny", 32, args.batch), ("Small (SS)", "SS", small_img, small_batch)):
        enc, dec = time_codec(size, img, batch, iters if size == "SS" else max(iters, 3), device)
        rows.append([f"{name} {img}x{img}", batch, enc, dec, None])
    n = 256 if args.smoke else args.tokenize_images
    tok = time_tokenize(n, args.batch, "mnist5k")
    rows.append([f"tokenize-dataset (tiny, mnist5k, {n} images)", args.batch, None, None, tok])
    header = ["model", "batch", "encode img/s", "decode img/s", "end to end img/s"]
    title = f"Tokenizer throughput on {device}, random weights; medians of {iters} calls after a warm-up"
    write_results("tokenizer", header, rows, args.out, extra={"args": vars(args)}, title=title)


if __name__ == "__main__":
    main()
