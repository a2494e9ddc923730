"""Data throughput: `shapes` generation, the shapes checker, ImageDataset loading, token shard write/read.

    python bench/bench_data.py            # a few seconds per row
    python bench/bench_data.py --smoke    # a fraction of a second per row, checks it all runs

Prints one table (single process, no DataLoader workers: multiply by workers for a loader's ceiling).
Rows:
- shapes render: scene generation + anti-aliased drawing (`ShapesSource[i]`), 32 and 64 px
- shapes check: the checker (`check(image, caption)`) on those images
- ImageDataset: `ds[i]` with the train transform (crop/flip) and `to_tensor`, 32 px, for shapes and mnist5k
- shard write: `ShardWriter.add_batch` + Parquet (zstd) at 256 tokens per row (a 16x16 grid)
- shard read: `load_token_table` (all in memory) and `TokenShardReader` (streaming, shuffle buffer 1000)
Each row: the median and the best rate of 3 timed repetitions after a warm-up.
Writes bench/results/data.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, median_seconds, parser, setup, write_results  # noqa: E402
from vimtool.data import ImageDataset, open_source  # noqa: E402
from vimtool.data.shapes import check  # noqa: E402
from vimtool.data.shards import ShardWriter, TokenizerIdentity, TokenShardReader, load_token_table  # noqa: E402


def rates(fn, units: int, reps: int = 3) -> tuple[float, float]:
    """(median, best) units per second of fn() over `reps` timed runs after a warm-up."""
    t = median_seconds(fn, reps)
    return units / t.median, units / t.min


def main() -> None:
    args = setup(parser(__doc__, RESULTS).parse_args())
    n_img = 20 if args.smoke else 500
    n_rows = 500 if args.smoke else 20000
    rows: list[tuple[str, str, tuple[float, float]]] = []

    for size in (32, 64):
        src = open_source(f"shapes:size={size}")
        rows.append((f"shapes render {size}px", "images/s", rates(lambda: [src[i] for i in range(n_img)], n_img)))
        examples = [src[i] for i in range(n_img)]
        rows.append(
            (
                f"shapes check {size}px",
                "images/s",
                rates(lambda: [check(e.image, e.caption) for e in examples], n_img),
            )
        )

    for spec in ("shapes:size=64", "mnist5k"):
        ds = ImageDataset(open_source(spec), 32, train=True, seed=0)
        rows.append((f"ImageDataset {spec} -> 32px", "images/s", rates(lambda: [ds[i] for i in range(n_img)], n_img)))

    identity = TokenizerIdentity("bench", "0" * 64, 8192, (16, 16), 256)
    tokens = np.random.default_rng(0).integers(0, 8192, (n_rows, 256))
    labels = list(np.arange(n_rows) % 1000)
    with tempfile.TemporaryDirectory() as tmp:

        def write(folder=Path(tmp) / "w"):
            with ShardWriter(folder, identity, rows_per_shard=max(1, n_rows // 4)) as w:
                for start in range(0, n_rows, 256):
                    w.add_batch(tokens[start : start + 256], labels[start : start + 256])
            return w.written

        rows.append(("shard write (zstd)", "tokens/s", rates(write, n_rows * 256)))
        paths = write(Path(tmp) / "r")
        rows.append(("shard read load_token_table", "tokens/s", rates(lambda: load_token_table(paths), n_rows * 256)))
        rows.append(
            (
                "shard read TokenShardReader",
                "tokens/s",
                rates(lambda: sum(1 for _ in TokenShardReader(paths, shuffle_buffer=1000)), n_rows * 256),
            )
        )

    header = ["row", "unit", "rate (median)", "rate (best)"]
    table = [[name, unit, *rate] for name, unit, rate in rows]
    title = f"Data throughput, one process: {n_img} images, {n_rows} shard rows of 256 tokens"
    write_results("data", header, table, args.out, extra={"args": vars(args)}, title=title)


if __name__ == "__main__":
    main()
