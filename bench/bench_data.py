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
Each row is the best of 3 repetitions (the machine is shared; best-of compares the code, not the neighbours).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from vimtool.data import ImageDataset, open_source  # noqa: E402
from vimtool.data.shapes import check  # noqa: E402
from vimtool.data.shards import ShardWriter, TokenizerIdentity, TokenShardReader, load_token_table  # noqa: E402


def best_rate(fn, units: int, reps: int = 3) -> float:
    """units per second of fn(), best of `reps` runs."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return units / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every row runs")
    args = ap.parse_args()
    n_img = 20 if args.smoke else 500
    n_rows = 500 if args.smoke else 20000
    rows: list[tuple[str, str, float]] = []

    for size in (32, 64):
        src = open_source(f"shapes:size={size}")
        rows.append((f"shapes render {size}px", "images/s", best_rate(lambda: [src[i] for i in range(n_img)], n_img)))
        examples = [src[i] for i in range(n_img)]
        rows.append(
            (
                f"shapes check {size}px",
                "images/s",
                best_rate(lambda: [check(e.image, e.caption) for e in examples], n_img),
            )
        )

    for spec in ("shapes:size=64", "mnist5k"):
        ds = ImageDataset(open_source(spec), 32, train=True, seed=0)
        rows.append(
            (f"ImageDataset {spec} -> 32px", "images/s", best_rate(lambda: [ds[i] for i in range(n_img)], n_img))
        )

    identity = TokenizerIdentity("bench", "0" * 64, 8192, (16, 16), 256)
    tokens = np.random.default_rng(0).integers(0, 8192, (n_rows, 256))
    labels = list(np.arange(n_rows) % 1000)
    with tempfile.TemporaryDirectory() as tmp:

        def write(folder=Path(tmp) / "w"):
            with ShardWriter(folder, identity, rows_per_shard=max(1, n_rows // 4)) as w:
                for start in range(0, n_rows, 256):
                    w.add_batch(tokens[start : start + 256], labels[start : start + 256])
            return w.written

        rows.append(("shard write (zstd)", "tokens/s", best_rate(write, n_rows * 256)))
        paths = write(Path(tmp) / "r")
        rows.append(
            ("shard read load_token_table", "tokens/s", best_rate(lambda: load_token_table(paths), n_rows * 256))
        )
        rows.append(
            (
                "shard read TokenShardReader",
                "tokens/s",
                best_rate(lambda: sum(1 for _ in TokenShardReader(paths, shuffle_buffer=1000)), n_rows * 256),
            )
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'row':<{width}}  {'rate':>14}  unit")
    for name, unit, rate in rows:
        print(f"{name:<{width}}  {rate:>14,.0f}  {unit}")


if __name__ == "__main__":
    main()
