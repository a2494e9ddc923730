"""Image loading at scale: the data pipeline (JPEG draft decoding, DataLoader workers) against a naive PIL loop.

    python bench/bench_data_pipeline.py            # 400 JPEGs of 300-500 px, about a minute
    python bench/bench_data_pipeline.py --smoke    # 16 JPEGs, seconds: checks it all runs

Generates `--images` JPEGs (sides 300-500 px, every aspect, quality 90, in ImageNet-style class folders) and
measures images/s to turn them into (3, S, S) tensors in [-1, 1], S = `--size` (default 64, 128):
- naive PIL loop: `Image.open(f).convert("RGB")`, shorter side -> S (bicubic), center crop, tensor; one process;
- ImageDataset, no draft: the pipeline's own transform, every JPEG decoded at full size;
- ImageDataset, draft: JPEGs decoded at the smallest 1/2^k scale that still covers S (`data.draft`, default on);
- DataLoader, draft, W workers: the same through `torch.utils.data.DataLoader(**loader_kwargs(...))`, batches of
  32, W = 1, 2 and the default min(4, cores - 1); worker start-up is counted (a fresh loader per pass, as the
  engine builds one per epoch);
- decode threads, draft, W threads: tokenize-dataset's path (`decode_ahead`: PIL decodes and resizes without the
  GIL, so threads run in parallel without a process start-up), W = 1, 2 and the default.
Every pass reads every file; all variants run interleaved in the same rounds (bench/harness.paired_rounds) and
"x naive" is the median over rounds of naive time / variant time, so the machine's load hits all alike. The load
averages before and after are recorded: this machine is shared, and worker rows need free cores to pay off.
Writes bench/results/data_pipeline.{json,md}.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.harness import RESULTS, paired_ratio, paired_rounds, parser, setup, write_results  # noqa: E402
from vimtool.data import ImageDataset, open_source  # noqa: E402
from vimtool.data.loading import DataLoading, decode_ahead, default_workers, loader_kwargs  # noqa: E402
from vimtool.data.transforms import to_tensor  # noqa: E402


def write_jpegs(root: Path, n: int, seed: int = 0) -> list[Path]:
    """n JPEGs with sides in [300, 500], smooth gradients plus noise (photo-like compressed sizes)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 501, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        path = root / f"class{i % 10}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def naive(paths: list[Path], size: int) -> None:
    """What one writes without a pipeline: full decode, resize, crop, tensor, one image after another."""
    for p in paths:
        img = Image.open(p).convert("RGB")
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        to_tensor(img.crop((left, top, left + size, top + size)))


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--images", type=int, default=400, help="JPEGs to generate (default 400)")
    ap.add_argument("--sizes", default="64,128", help="target sizes S, comma-separated (default 64,128)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of every variant (default 3)")
    args = setup(ap.parse_args())
    n = 16 if args.smoke else args.images
    rounds = 1 if args.smoke else args.rounds
    sizes = [int(s) for s in args.sizes.split(",")]
    worker_counts = sorted({1, 2, default_workers()} - {0})
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), n)
        for size in sizes:

            def dataset(draft: bool) -> ImageDataset:
                return ImageDataset(open_source(tmp, "all"), size, train=False, draft=draft)

            plain, drafted = dataset(False), dataset(True)

            def loader_pass(workers: int) -> None:
                kwargs = loader_kwargs(DataLoading(workers=workers))
                for _ in torch.utils.data.DataLoader(drafted, batch_size=32, **kwargs):
                    pass

            fns = {
                "naive PIL loop": lambda: naive(paths, size),
                "ImageDataset, no draft": lambda: [plain[i] for i in range(len(plain))],
                "ImageDataset, draft": lambda: [drafted[i] for i in range(len(drafted))],
            }

            def threads_pass(workers: int) -> None:
                jobs = (lambda i=i: drafted[i] for i in range(len(drafted)))
                for _ in decode_ahead(jobs, workers, window=64):
                    pass

            for w in worker_counts:
                fns[f"DataLoader, draft, {w} worker(s)"] = lambda w=w: loader_pass(w)
            for w in worker_counts:
                fns[f"decode threads, draft, {w} thread(s)"] = lambda w=w: threads_pass(w)
            timings = paired_rounds(fns, rounds)
            base = timings["naive PIL loop"]
            for name, t in timings.items():
                rows.append([f"{name}, {size}px", n / t.median, n / t.min, paired_ratio(base, t)])
    load_after = os.getloadavg()
    header = ["variant", "images/s (median)", "images/s (best)", "x naive"]
    notes = [
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} cores: "
        "the worker rows compete with other processes for the same cores",
        f"default workers here: {default_workers()} (min(4, cores - 1))",
    ]
    title = f"Image loading, {n} JPEGs of 300-500 px -> S x S tensors: pipeline vs a naive PIL loop"
    extra = {"args": vars(args), "load_before": list(load_before), "load_after": list(load_after), "notes": notes}
    write_results("data_pipeline", header, rows, args.out, extra=extra, title=title)


if __name__ == "__main__":
    main()
