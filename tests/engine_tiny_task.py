"""Tiny tasks for the engine tests, importable in-process and runnable as a script (subprocess / accelerate launch).

- `RegressionTask`: an MLP with dropout regressing a fixed linear map; the dataset adds noise from the GLOBAL
  torch RNG in __getitem__, so exact resume needs both the data position and the RNG state restored.
- `GanLikeTask`: a generator ("model") and a discriminator ("disc") with two optimizers; the generator loss flows
  through the discriminator, the discriminator loss (on detached fakes) only starts at `disc_start`.

Script use: `python tests/engine_tiny_task.py --task tiny --out DIR --steps 12 [--die-at 7] [--resume] ...`
(`--die-at N` SIGKILLs the process inside step N; `--interrupt-at N` sends itself SIGINT inside step N).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

from vimtool.models.registry import register_model  # noqa: E402
from vimtool.train import OptimizerSpec, StepOutput, Task, TrainConfig, train  # noqa: E402

D_IN, D_OUT = 8, 4


@dataclass
class TinyConfig:
    d_in: int = D_IN
    hidden: int = 16
    d_out: int = D_OUT
    dropout: float = 0.0


@register_model
class TinyMLP(nn.Module):
    model_type = "tiny_mlp"

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.inp = nn.Linear(config.d_in, config.hidden)
        self.norm = nn.LayerNorm(config.hidden)
        self.out = nn.Linear(config.hidden, config.d_out)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.norm(self.inp(x)))))


class TinyDisc(nn.Module):
    def __init__(self, d: int = D_OUT):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y).squeeze(-1)


class TinyDataset(torch.utils.data.Dataset):
    """n fixed inputs and targets y = x A; __getitem__ adds noise from the global RNG (data augmentation)."""

    def __init__(self, n: int = 40, noise: float = 0.05):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, D_IN, generator=g)
        self.y = self.x @ torch.randn(D_IN, D_OUT, generator=g)
        self.noise = noise
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i] + self.noise * torch.randn(D_IN), "y": self.y[i], "index": i}


class RegressionTask(Task):
    name = "tiny"

    def __init__(
        self,
        n: int = 40,
        dropout: float = 0.1,
        noise: float = 0.05,
        die_at: int = -1,
        interrupt_at: int = -1,
        nan_at: int = -1,
    ):
        self.n, self.dropout, self.noise = n, dropout, noise
        self.die_at, self.interrupt_at, self.nan_at = die_at, interrupt_at, nan_at
        self.seen_indices: list[list[int]] = []
        self.model_kinds: set[str] = set()  # the classes train_step was handed (compiled: OptimizedModule)
        self.dataset = None

    def build_models(self):
        return {"model": TinyMLP(TinyConfig(dropout=self.dropout))}

    def train_dataset(self):
        self.dataset = TinyDataset(self.n, self.noise)
        return self.dataset

    def train_step(self, models, batch, step):
        if step == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == self.interrupt_at:
            self.interrupt_at = -1  # once: a second Ctrl-C (next micro-batch) would abort without saving
            os.kill(os.getpid(), signal.SIGINT)
        self.seen_indices.append(batch["index"].tolist())
        self.model_kinds.update(type(m).__name__ for m in models.values())
        loss = F.mse_loss(models["model"](batch["x"]), batch["y"])
        if step == self.nan_at:
            loss = loss * float("nan")
        return StepOutput(losses={"model": loss}, metrics={"batch_mean_y": batch["y"].mean()})

    def evaluate(self, models, step, out_dir):
        with torch.no_grad():
            ds = self.dataset
            return {"mse": F.mse_loss(models["model"](ds.x), ds.y).item()}

    def card_info(self):
        return {"data": "tiny synthetic regression"}


class GanLikeTask(RegressionTask):
    """Generator = the MLP; discriminator scores targets vs predictions. Two optimizers, disc starts late."""

    name = "tiny_gan"

    def __init__(self, disc_start: int = 2, adv_weight: float = 0.1, **kw):
        super().__init__(**kw)
        self.disc_start, self.adv_weight = disc_start, adv_weight

    def build_models(self):
        return {"model": TinyMLP(TinyConfig(dropout=self.dropout)), "disc": TinyDisc()}

    def optimizers(self):
        return [OptimizerSpec("model", "model"), OptimizerSpec("disc", "disc", lr=2e-3, betas=(0.5, 0.9))]

    def train_step(self, models, batch, step):
        self.seen_indices.append(batch["index"].tolist())
        self.model_kinds.update(type(m).__name__ for m in models.values())
        fake = models["model"](batch["x"])
        g_loss = F.mse_loss(fake, batch["y"]) + self.adv_weight * F.softplus(-models["disc"](fake)).mean()
        losses = {"model": g_loss}
        if step >= self.disc_start:  # fakes detached: the discriminator loss must not reach the generator
            d_real, d_fake = models["disc"](batch["y"]), models["disc"](fake.detach())
            losses["disc"] = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        return StepOutput(losses=losses)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="tiny", choices=["tiny", "gan"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--save-every", type=int, default=4)
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--die-at", type=int, default=-1)
    ap.add_argument("--interrupt-at", type=int, default=-1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--stop-at", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    a = ap.parse_args(argv)
    kw = dict(dropout=a.dropout, noise=a.noise, die_at=a.die_at, interrupt_at=a.interrupt_at)
    task = GanLikeTask(**kw) if a.task == "gan" else RegressionTask(**kw)
    cfg = TrainConfig(
        out_dir=a.out,
        steps=a.steps,
        batch_size=a.batch,
        grad_accum=a.accum,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=2,
        save_every=a.save_every,
        log_every=2,
        ema=a.ema,
        resume=a.resume,
        stop_at=a.stop_at,
        progress=False,
        weight_decay=0.01,
        clip_grad=1.0,
        compile=a.compile,
        parallel=a.parallel,
    )
    try:
        path = train(task, cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    # Which samples this rank trained on, per micro-batch (the multi-process test checks the split).
    rank = os.environ.get("RANK", "0")
    Path(a.out, f"seen_rank{rank}.json").write_text(json.dumps(task.seen_indices))
    Path(a.out, f"kinds_rank{rank}.json").write_text(json.dumps(sorted(task.model_kinds)))
    print(path)


if __name__ == "__main__":
    main()
