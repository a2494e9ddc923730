"""What the paper-claim studies share: trained tokenizers, token shards, and reading a run's metrics.

Everything is built through vimtool's own library functions (the ones the CLI calls) from the project's recipes,
and cached under runs/bench/ (git-ignored) so that a second study reuses the first one's tokenizer and shards:

    tokenizer("mnist5k" | "shapes", steps, cache)   -> checkpoint folder (a given --tokenizer path wins)
    shards(tokenizer, data, split, cache, limit)    -> token shard paths (tokenize-dataset)
    evals(out_dir)                                  -> the evaluation lines of metrics.jsonl, in step order

`SHAPES` is the quickstart's data spec (32 px, one object, three colour+shape combinations held out).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import REPO
from vimtool.config import load_config

CACHE = REPO / "runs" / "bench"
HOLDOUT = "red+triangle;blue+circle;green+square"
SHAPES = f"shapes:size=32,objects=1,n=6000,holdout={HOLDOUT}"
RECIPES = {
    "mnist5k": REPO / "recipes" / "tokenizer_mnist.yaml",
    "shapes": REPO / "recipes" / "parti_shapes_tokenizer.yaml",
}
DATA = {"mnist5k": "mnist5k", "shapes": SHAPES}


def quiet() -> None:
    """Library INFO lines off (a study prints its own table); the Hub offline (the studies build their own data)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@contextmanager
def building(target: Path) -> Iterator[None]:
    """Hold `target`'s build lock: studies run side by side (the bench smoke test runs several at once) and share
    this cache, so a second process asking for the same tokenizer or shards waits here, then reuses the first's."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def train_tokenizer(
    data: str, out_dir: Path, steps: int, model: dict | None = None, extra: dict | None = None, seed: int = 0
) -> Path:
    """Train a tokenizer from the project's recipe for `data` with `steps` steps; returns its final folder."""
    with building(out_dir):
        return _train_tokenizer(data, out_dir, steps, model, extra, seed)


def _train_tokenizer(data: str, out_dir: Path, steps: int, model: dict | None, extra: dict | None, seed: int) -> Path:
    from vimtool.train.tokenizer import TokenizerRunConfig
    from vimtool.train.tokenizer import train_tokenizer as run

    final = out_dir / "final"
    if (final / "model.safetensors").exists():
        return final
    overrides = {"data": DATA[data], "model": model or {}, **(extra or {}),
                 "train": {"out_dir": str(out_dir), "steps": steps, "eval_every": steps, "save_every": steps,
                           "warmup_steps": min(100, steps // 10), "progress": False, "log_every": max(10, steps // 10), "seed": seed}}  # fmt: skip
    cfg = load_config(TokenizerRunConfig, RECIPES[data], overrides)
    return Path(run(cfg))


def tokenizer(data: str, steps: int, cache: Path = CACHE, given: str | None = None) -> Path:
    """A trained tokenizer for `data`: `given`, else the one this cache holds, else a fresh one of `steps` steps."""
    if given:
        return Path(given)
    return train_tokenizer(data, cache / f"tok_{data}_{steps}", steps)


def shards(tok: Path, data: str, split: str, cache: Path = CACHE, limit: int | None = None) -> list[Path]:
    """Token shards of `data`/`split` made with `tok` (tokenize-dataset), cached per tokenizer."""
    from vimtool.tokenize import TokenizeConfig, tokenize_dataset

    name = f"shards_{data}_{split}_{limit or 'all'}_{hashlib.sha256(str(tok.resolve()).encode()).hexdigest()[:8]}"
    out = cache / name
    done = out / "DONE"
    with building(out):
        if not done.exists():
            spec = DATA.get(data, data)
            paths = tokenize_dataset(
                TokenizeConfig(tokenizer=str(tok), data=spec, out=str(out), split=split, limit=limit, progress=False)
            )
            done.write_text("\n".join(str(p) for p in paths))
        return [Path(p) for p in done.read_text().split()]


def evals(out_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of every metrics.jsonl line holding `key`, in step order."""
    rows = []
    path = Path(out_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if key in rec:
            rows.append((int(rec["step"]), float(rec[key])))
    return sorted(rows)


def metric_lines(out_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (Path(out_dir) / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def mcnemar(a_ok, b_ok) -> dict:
    """Exact two-sided McNemar test of two classifiers on the same items (sequences of right/wrong): b = items
    only `a` gets right, c = only `b` gets right; p of b vs c ~ Bin(b + c, 1/2)."""
    from scipy.stats import binomtest

    b = sum(1 for x, y in zip(a_ok, b_ok) if x and not y)
    c = sum(1 for x, y in zip(a_ok, b_ok) if y and not x)
    return {"b": b, "c": c, "p": float(binomtest(b, b + c).pvalue) if b + c else 1.0}
