"""Overhead of the training engine vs a bare PyTorch loop doing the same work (issue 3: target < 5%).

Both loops train the same small MLP with AdamW on the same in-memory dataset, batched by a DataLoader with the
default collate: forward, MSE, backward, optimizer step, zero_grad. The engine adds its data order, lr schedule
over parameter groups, the per-step finite-loss / stop-signal check, logging to metrics.jsonl and tqdm (off).
Throughput is steady state: the engine's own steps/s from metrics.jsonl with the first interval dropped, and the
bare loop timed after the same number of warm-up steps. Best of `--repeats` alternating runs (shared machines
are noisy).

    python bench/bench_engine.py            # ~1 min on a laptop CPU
    python bench/bench_engine.py --smoke    # seconds; what CI may run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vimtool.train import StepOutput, Task, TrainConfig, train  # noqa: E402


class Pairs(Dataset):
    def __init__(self, n: int, width: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, width, generator=g)
        self.y = torch.randn(n, width, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def make_model(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))


class BenchModel(nn.Module):
    model_type = "bench_mlp"

    def __init__(self, width: int):
        super().__init__()
        self.net = make_model(width)

    def forward(self, x):
        return self.net(x)


class BenchTask(Task):
    name = "bench"

    def __init__(self, dataset: Dataset, width: int):
        self.dataset, self.width = dataset, width

    def build_models(self):
        return {"model": BenchModel(self.width)}

    def train_dataset(self):
        return self.dataset

    def train_step(self, models, batch, step):
        return StepOutput(losses={"model": F.mse_loss(models["model"](batch["x"]), batch["y"])})

    def save_model(self, model, folder, card):  # the timing is of the loop; skip writing the model card files
        folder.mkdir(parents=True, exist_ok=True)


def bare_loop(dataset: Dataset, width: int, batch: int, steps: int, warmup: int, lr: float) -> float:
    torch.manual_seed(0)
    model = make_model(width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    done, t0 = 0, None
    while done < steps + warmup:
        for b in loader:
            if done == warmup:
                t0 = time.perf_counter()
            loss = F.mse_loss(model(b["x"]), b["y"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done == steps + warmup:
                break
    return steps / (time.perf_counter() - t0)


def engine_loop(dataset: Dataset, width: int, batch: int, steps: int, warmup: int, lr: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out_dir=tmp, steps=warmup + steps, batch_size=batch, lr=lr, schedule="constant", save_every=0,
                          log_every=warmup, precision="fp32", progress=False, cpu=True)
        train(BenchTask(dataset, width), cfg)
        records = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "steps_per_s" in r and r["step"] > warmup]
    total_steps = sum(r["step"] - p["step"] for p, r in zip([records[0]] + timed, timed))
    total_time = sum((r["step"] - p["step"]) / r["steps_per_s"] for p, r in zip([records[0]] + timed, timed))
    return total_steps / total_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run (CI)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.smoke:
        a.width, a.steps, a.repeats = 64, 40, 1
    warmup = max(10, a.steps // 10)
    dataset = Pairs(a.batch * 50, a.width)
    bare, eng = [], []
    for _ in range(a.repeats):
        bare.append(bare_loop(dataset, a.width, a.batch, a.steps, warmup, 1e-3))
        eng.append(engine_loop(dataset, a.width, a.batch, a.steps, warmup, 1e-3))
    b, e = max(bare), max(eng)
    overhead = (b / e - 1.0) * 100.0
    params = sum(p.numel() for p in make_model(a.width).parameters())
    print(f"MLP width {a.width} ({params / 1e6:.2f}M params), batch {a.batch}, {a.steps} timed steps after {warmup} warm-up, "
          f"best of {a.repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"| loop | steps/s | ms/step |\n|---|---|---|\n| bare PyTorch | {b:.1f} | {1e3 / b:.2f} |\n| vimtool engine | {e:.1f} | {1e3 / e:.2f} |")
    print(f"engine overhead: {overhead:+.1f}% (target < 5%)")


if __name__ == "__main__":
    main()
