"""Scaling: how sampling time and tokenize-dataset time grow with tokens per image and data size.

    python bench/bench_scaling.py            # VIM sampling at 16..1024 tokens; tokenize-dataset over sizes and grids
    python bench/bench_scaling.py --smoke    # seconds

Sampling: a VIM of fixed width/depth (random weights: speed does not depend on them), class-conditional with
guidance on, batch `--batch`, `vimtool.sampling.vim.generate_batch` with the KV cache at 16, 64, 256, 1024 tokens
per image, and without the cache up to `--max-uncached` tokens (a step then re-runs the whole prefix, so the cost
per image grows ~T^2 against ~T with the cache plus a small T^2 attention term). Median seconds per image after a
warm-up. Tokenize-dataset: `vimtool.tokenize.tokenize_dataset` (the `tokenize-dataset` command, Parquet shards
written) of the `shapes` set (a) with the tiny tokenizer at 64 tokens per image over `--sizes` images, and (b) at a
fixed number of images with tokenizers of 16..1024 tokens per image (random-weight tiny tokenizers on 16..128 px
images with 4 px patches; encoding cost does not depend on the weights). Wall seconds include opening the source
and writing shards; the image rendering of `shapes` is part of it, as reading images would be for real data.
Fitted log-log slopes are printed (1.0 = linear growth). Writes bench/results/scaling.{json,md} and
scaling_sampling.png, scaling_tokenize.png.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import (  # noqa: E402
    RESULTS,  # noqa: E402
    median_seconds,
    parser,
    setup,
    write_results,
)
from bench.plots import plot_lines  # noqa: E402
from bench.studies import fixtures as fx  # noqa: E402


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / den if den else float("nan")


def sampling_rows(a) -> tuple[list, dict]:
    from vimtool.models.vim import VIM, size_config
    from vimtool.sampling.logits import SamplingParams, row_uniforms
    from vimtool.sampling.vim import generate_batch

    params = SamplingParams(guidance_scale=3.0)
    rows, cached, uncached = [], ([], []), ([], [])
    for side in a.sides:
        T = side * side
        torch.manual_seed(0)
        cfg = size_config("micro", dim=a.dim, depth=a.depth, heads=a.heads, mlp_dim=4 * a.dim, vocab_size=a.vocab,
                          grid=(side, side), num_classes=10, dropout=0.0)  # fmt: skip
        model = VIM(cfg).eval()
        labels = torch.arange(a.batch) % 10
        u = row_uniforms(0, 0, a.batch, T)
        sec = median_seconds(lambda: generate_batch(model, labels, params, u, use_cache=True), a.repeats).median
        cached[0].append(T)
        cached[1].append(sec / a.batch)
        plain = None
        if T <= a.max_uncached:
            s2 = median_seconds(lambda: generate_batch(model, labels, params, u, use_cache=False), a.repeats).median
            plain = s2 / a.batch
            uncached[0].append(T)
            uncached[1].append(plain)
        rows.append(
            ["sampling s/image", T, "-", sec / a.batch, plain, f"{plain / (sec / a.batch):.1f}x" if plain else "n/a"]
        )
    series = {"KV cache": cached, "no cache": uncached}
    return rows, series


def tokenize_seconds(tok: Path, data: str, limit: int, out: Path) -> float:
    from vimtool.tokenize import TokenizeConfig, tokenize_dataset

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    tokenize_dataset(TokenizeConfig(tokenizer=str(tok), data=data, out=str(out), limit=limit, progress=False))
    return time.perf_counter() - t0


def random_tokenizer(image_size: int, folder: Path) -> Path:
    from vimtool.checkpoint import save_model
    from vimtool.models.vitvqgan import ViTVQGAN, size_config

    torch.manual_seed(0)
    return Path(save_model(ViTVQGAN(size_config("tiny", image_size=image_size)), folder))


def tokenize_rows(a, work: Path) -> tuple[list, dict]:
    rows, by_size, by_grid = [], ([], []), ([], [])
    tok = random_tokenizer(32, work / "tok32")
    tokenize_seconds(tok, "shapes:size=32,objects=1", 8, work / "warm")  # warm-up: imports, first kernels
    for n in a.sizes:
        sec = tokenize_seconds(tok, "shapes:size=32,objects=1", n, work / f"shards_{n}")
        by_size[0].append(n)
        by_size[1].append(sec)
        rows.append(["tokenize-dataset s", 64, n, sec, None, f"{n / sec:.0f} img/s"])
    for px in a.image_sizes:
        tok = random_tokenizer(px, work / f"tok{px}")
        T = (px // 4) ** 2
        tokenize_seconds(tok, f"shapes:size={px},objects=1", 4, work / "warm")  # warm-up at this size
        sec = tokenize_seconds(tok, f"shapes:size={px},objects=1", a.grid_images, work / f"shards_px{px}")
        by_grid[0].append(T)
        by_grid[1].append(sec)
        rows.append(["tokenize-dataset s", T, a.grid_images, sec, None, f"{a.grid_images / sec:.0f} img/s"])
    return rows, {"images (64 tokens each)": by_size, "tokens per image": by_grid}


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--sides", default="4,8,16,32", help="token grid sides (16..1024 tokens)")
    ap.add_argument("--max-uncached", type=int, default=256)
    ap.add_argument("--sizes", default="250,500,1000,2000,4000", help="images tokenized")
    ap.add_argument("--image-sizes", default="16,32,64,128", help="pixels (4 px patches: 16..1024 tokens)")
    ap.add_argument("--grid-images", type=int, default=256, help="images per tokens-per-image point")
    ap.add_argument("--repeats", type=int, default=3)
    a = setup(ap.parse_args())
    fx.quiet()
    a.sides = [int(s) for s in a.sides.split(",")]
    a.sizes = [int(s) for s in a.sizes.split(",")]
    a.image_sizes = [int(s) for s in a.image_sizes.split(",")]
    if a.smoke:
        a.dim, a.depth, a.heads, a.vocab, a.batch, a.sides, a.max_uncached = 32, 1, 2, 64, 2, [2, 4], 16
        a.sizes, a.image_sizes, a.grid_images, a.repeats = [16, 32], [16, 32], 16, 1
    work = Path(tempfile.mkdtemp(prefix="study_scaling_"))
    try:
        s_rows, s_series = sampling_rows(a)
        t_rows, t_series = tokenize_rows(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    slopes = {
        "sampling, KV cache, s/image vs tokens": slope(*s_series["KV cache"]),
        "sampling, no cache, s/image vs tokens": slope(*s_series["no cache"])
        if len(s_series["no cache"][0]) > 1
        else float("nan"),
        "tokenize, s vs images": slope(*t_series["images (64 tokens each)"]),
        "tokenize, s vs tokens per image": slope(*t_series["tokens per image"]),
    }
    header = ["what", "tokens/image", "images", "seconds (cached)", "seconds (no cache)", "note"]
    title = (f"Scaling: VIM width {a.dim}, depth {a.depth}, batch {a.batch}, guidance on; tokenize-dataset on shapes. "
             "Log-log slopes: " + "; ".join(f"{k} {v:.2f}" for k, v in slopes.items()))  # fmt: skip
    prefix = "smoke_" if a.smoke else ""
    write_results(
        f"{prefix}scaling", header, s_rows + t_rows, a.out, title=title, extra={"slopes": slopes, "args": vars(a)}
    )
    p1 = plot_lines(Path(a.out) / f"{prefix}scaling_sampling.png", s_series, "tokens per image", "seconds per image",
                    "VIM sampling time per image (log-log)", logx=True, logy=True)  # fmt: skip
    p2 = plot_lines(Path(a.out) / f"{prefix}scaling_tokenize.png", t_series, "images, or tokens per image", "seconds",
                    "tokenize-dataset time (log-log)", logx=True, logy=True)  # fmt: skip
    for p in (p1, p2):
        if p:
            print(f"plot: {p}")


if __name__ == "__main__":
    main()
