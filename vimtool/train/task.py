"""The interface between a training task and the engine: TrainConfig, OptimizerSpec, StepOutput, Task.

Semantics (what the engine does with them) are in the docstring of vimtool/train/engine.py. Import these from
`vimtool.train` (or `vimtool.train.engine`, which re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import default_collate

import vimtool.train.distributed as distributed
from vimtool import checkpoint as ckpt


@dataclass
class TrainConfig:
    """The `train` section every training command embeds (recipe keys `train.*`, `--set train.lr=...`)."""

    out_dir: str = ""  # "" -> runs/<task name>
    steps: int = 1000
    # pause after this step (0 = never): a checkpoint is saved and the command returns it; `resume` then goes on
    # with the same schedule, so a run can move to other hardware (more threads) at a fixed step, repeatably
    stop_at: int = 0
    batch_size: int = 32  # GLOBAL (the paper's batch): across processes and accumulation
    grad_accum: int = 1
    # Per-process micro-batch (0 = batch_size / (grad_accum x processes)). When set, the accumulation is derived:
    # grad_accum = batch_size / (micro_batch x processes) (an error if it does not divide), so one recipe gives the
    # same optimisation on 1 CPU or 8 GPUs; leave grad_accum at 1 (or equal to the derived value).
    micro_batch: int = 0
    # ddp: data parallel (accelerate's DistributedDataParallel); fsdp: FSDP2, parameters, gradients and optimizer
    # state sharded over the processes, one unit per transformer block (vimtool/train/distributed.py).
    parallel: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False  # recompute each transformer block's activations in the backward
    lr: float = 3e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "exp", "constant"] = "cosine"
    decay_start: int = 0  # exp decay starts here (VIM: 80k); at/before warmup = right after warmup (Parti)
    # adamw (default) or adafactor: torch.optim.Adafactor, factored second moments (O(rows + cols) optimizer
    # memory per matrix instead of AdamW's 2x the weights: what makes Parti's 3B/20B fit), NO first moment
    # (Parti's b1=0.9 is not reproduced), its own beta2 schedule (betas are ignored) and lr as its relative step.
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    clip_grad: float | None = None  # max global grad norm per optimizer (Parti: 4.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPUs that support it, fp32 on CPU
    ema: float = 0.0  # 0 = off, else the decay (e.g. 0.999)
    eval_every: int = 0  # 0: evaluate at the end only
    save_every: int = 1000  # 0: save at the end only
    log_every: int = 10
    keep_last: int = 0  # keep this many newest checkpoints (0 = keep all)
    seed: int = 0
    resume: bool = False
    push_to_hub: str | None = None  # Hub repo id to upload the final model to
    hub_private: bool | None = None  # create that repo private (True) or public (False); None: the account's default
    trackers: list[str] = field(default_factory=list)  # "tensorboard", "wandb"
    num_workers: int | None = None  # DataLoader workers; None: min(4, cores - 1) on a GPU, 0 on a CPU
    cpu: bool = False  # force CPU even when a GPU is present
    # torch.compile the trained models (inductor): fused elementwise kernels, for GPUs. Costs a compile at the first
    # steps (~30-60 s here, and again after shape changes); on this project's 2-core CPU the base decoder's step is
    # within 3% of eager's and NOBLE's 3-8% faster (docs/BENCHMARKS.md section 8b). NOBLE runs op by op under it.
    compile: bool = False
    progress: bool = True  # tqdm bar on stderr (main process)


@dataclass
class OptimizerSpec:
    """One optimizer (`train.optimizer`: AdamW or Adafactor) over the trainable parameters of `models[module]`;
    None = value from TrainConfig."""

    name: str = "model"
    module: str = "model"
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None


@dataclass
class StepOutput:
    losses: dict[str, torch.Tensor]  # keyed by optimizer name; a missing key = that optimizer skips the step
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass
class EngineHandle:
    """What a task may read from the running engine (set as `task.engine`)."""

    accelerator: Any
    out_dir: Path
    cfg: TrainConfig
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model, keep_torch_compile=False)

    def gathered(self, module: nn.Module):
        """Context: `module`'s own parameters full and writable inside; rank 0's values on every rank after.

        For changes made outside the optimizer (a codebook restart); see vimtool/train/distributed.py."""
        return distributed.gathered(module)

    def unsharded(self, model: nn.Module):
        """Context: read-only full parameters of a (possibly FSDP-sharded) trained model outside its forward."""
        return distributed.unsharded(self.unwrap(model))


class Task:
    """Base class: override build_models, train_dataset and train_step; the rest has defaults."""

    name: str = "task"
    find_unused_parameters: bool = False  # DDP: set True if some parameters get no gradient in a step
    engine: EngineHandle | None = None

    def build_models(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> list[OptimizerSpec]:
        return [OptimizerSpec("model", "model")]

    def train_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, items: list[Any]) -> Any:
        return default_collate(items)

    def train_step(self, models: dict[str, nn.Module], batch: Any, step: int) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, models: dict[str, nn.Module], step: int, out_dir: Path) -> dict[str, float]:
        return {}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {}

    def train_state(self) -> dict[str, torch.Tensor]:
        """Task state that exact resume needs beyond weights and RNG (saved in state/task.safetensors).

        Called on every rank at each save (it may run collectives); rank 0's dict is written."""
        return {}

    def load_train_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `train_state` returned (every rank reads the same file)."""

    def card_info(self) -> dict[str, Any]:
        return {}

    def save_model(self, model: nn.Module, folder: Path, card: dict) -> None:
        ckpt.save_model(model, folder, card=card, extra=self.checkpoint_extra())
