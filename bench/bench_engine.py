"""Overhead of the training engine vs a bare PyTorch loop doing the same work (target < 5%).

Both loops train the same small MLP with AdamW on the same in-memory dataset, batched by a DataLoader with the
default collate: forward, MSE, backward, optimizer step, zero_grad. The engine adds its data order, lr schedule
over parameter groups, the per-step finite-loss / stop-signal check, logging to metrics.jsonl and tqdm (off).
Each loop stamps CPU time (time.process_time) and wall time at the start of every step; the table gives the
median per-step cost after a warm-up tenth. CPU time of a 1-thread run is what to compare on a shared machine
(other processes' load inflates wall time at random); wall time is what you see on a quiet one.

    python bench/bench_engine.py            # ~1-2 min on a laptop CPU
    python bench/bench_engine.py --smoke    # seconds; what CI may run
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, parser, setup, write_results  # noqa: E402
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
        self.stamps: list[tuple[float, float]] = []

    def build_models(self):
        return {"model": BenchModel(self.width)}

    def train_dataset(self):
        return self.dataset

    def train_step(self, models, batch, step):
        self.stamps.append((time.process_time(), time.perf_counter()))
        return StepOutput(losses={"model": F.mse_loss(models["model"](batch["x"]), batch["y"])})

    def save_model(self, model, folder, card):  # the timing is of the loop; skip writing the model card files
        folder.mkdir(parents=True, exist_ok=True)


def bare_loop(dataset: Dataset, width: int, batch: int, steps: int, lr: float) -> list[tuple[float, float]]:
    """(CPU time, wall time) at the start of every step."""
    torch.manual_seed(0)
    model = make_model(width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    stamps: list[tuple[float, float]] = []
    while len(stamps) < steps:
        for b in loader:
            stamps.append((time.process_time(), time.perf_counter()))
            loss = F.mse_loss(model(b["x"]), b["y"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if len(stamps) % 10 == 0:
                loss.item()  # the engine reads its losses at every log: the same here
            if len(stamps) == steps:
                break
    return stamps


def engine_loop(dataset: Dataset, width: int, batch: int, steps: int, lr: float) -> list[tuple[float, float]]:
    """(CPU time, wall time) at the start of every step, stamped by the task inside the engine."""
    task = BenchTask(dataset, width)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            out_dir=tmp,
            steps=steps,
            batch_size=batch,
            lr=lr,
            schedule="constant",
            save_every=0,
            log_every=10,
            precision="fp32",
            progress=False,
            cpu=True,
        )
        train(task, cfg)
    return task.stamps


def per_step_ms(stamps: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Per-step CPU and wall milliseconds, the first tenth (warm-up) dropped."""
    d = [(1e3 * (b[0] - a[0]), 1e3 * (b[1] - a[1])) for a, b in zip(stamps, stamps[1:])]
    d = d[len(d) // 10 :]
    return [x[0] for x in d], [x[1] for x in d]


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    logging.basicConfig(level=logging.WARNING)
    a = setup(ap.parse_args())
    if a.smoke:
        a.width, a.steps, a.repeats = 64, 40, 1
    dataset = Pairs(a.batch * 50, a.width)
    cpu = {"bare": [], "engine": []}
    wall = {"bare": [], "engine": []}
    for _ in range(a.repeats):  # alternate, so slow spells of a shared machine hit both loops alike
        for name, fn in (("bare", bare_loop), ("engine", engine_loop)):
            c, w = per_step_ms(fn(dataset, a.width, a.batch, a.steps, 1e-3))
            cpu[name] += c
            wall[name] += w
    med = {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in cpu}
    params = sum(p.numel() for p in make_model(a.width).parameters())
    rows = [[label, med[k][0], min(cpu[k]), max(cpu[k]), med[k][1], 1e3 / med[k][1],
             "-" if k == "bare" else f"{100 * (med[k][0] / med['bare'][0] - 1):+.1f}%"]
            for k, label in (("bare", "bare PyTorch"), ("engine", "vimtool engine"))]  # fmt: skip
    header = ["loop", "CPU ms/step", "CPU min", "CPU max", "wall ms/step", "steps/s (wall)", "overhead (CPU)"]
    title = (f"Training engine vs a bare loop: MLP width {a.width} ({params / 1e6:.2f}M params), batch {a.batch}, "
             f"{a.steps} steps x {a.repeats} alternating repeats; medians per step after a warm-up tenth")  # fmt: skip
    write_results("engine", header, rows, a.out, extra={"args": vars(a)}, title=title)


if __name__ == "__main__":
    main()
