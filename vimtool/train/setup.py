"""The training engine's start-up parts (engine.py runs the loop): config checks, the accelerator, resume.

Split from engine.py so that the ONE loop reads on its own: what happens once before step 0 lives here, what
happens every step lives there. Optimizers and their parameter groups: optim.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import signal
from pathlib import Path
from typing import Any

import torch

import vimtool.train.state as st
from vimtool.errors import VimtoolError
from vimtool.train.distributed import PARALLEL_MODES
from vimtool.train.optim import OPTIMIZERS
from vimtool.train.schedules import check_schedule
from vimtool.train.task import Task, TrainConfig

log = logging.getLogger(__name__)


def check_train_config(cfg: TrainConfig) -> None:
    check_schedule(schedule=cfg.schedule, lr=cfg.lr, min_lr=cfg.min_lr)
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise VimtoolError("train.steps, train.batch_size and train.grad_accum must be >= 1")
    if cfg.micro_batch < 0:
        raise VimtoolError(
            f"train.micro_batch must be >= 0 (0 = batch_size / (grad_accum x processes)), got {cfg.micro_batch}"
        )
    if cfg.parallel not in PARALLEL_MODES:
        raise VimtoolError(f"train.parallel must be {' or '.join(PARALLEL_MODES)}, got {cfg.parallel!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise VimtoolError(f"train.optimizer must be {' or '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if not 0.0 <= cfg.ema < 1.0:
        raise VimtoolError(f"train.ema is a decay in [0, 1) (0 = off), got {cfg.ema}")
    for t in cfg.trackers:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(t)
        if module is None:
            raise VimtoolError(f"train.trackers: unknown tracker {t!r}; use tensorboard and/or wandb")
        if importlib.util.find_spec(module) is None and not (
            t == "tensorboard" and importlib.util.find_spec("tensorboardX")
        ):
            raise VimtoolError(
                f"train.trackers: {t} is not installed; pip install {module}, or drop it from train.trackers"
            )


def derive_grad_accum(cfg: TrainConfig, processes: int) -> TrainConfig:
    """The config with grad_accum = batch_size / (micro_batch x processes) when micro_batch is set; checks the split.

    So the same recipe (global batch + a micro-batch that fits) gives the same optimisation on any process count."""
    if cfg.micro_batch:
        per_step = cfg.micro_batch * processes
        if cfg.batch_size % per_step:
            raise VimtoolError(
                f"train.batch_size={cfg.batch_size} is not a multiple of micro_batch x processes = "
                f"{cfg.micro_batch} x {processes}; change train.micro_batch or the number of processes"
            )
        accum = cfg.batch_size // per_step
        if cfg.grad_accum not in (1, accum):
            raise VimtoolError(
                f"train.grad_accum={cfg.grad_accum} contradicts micro_batch: batch_size / (micro_batch x processes) "
                f"= {accum}; set only one of them"
            )
        cfg = dataclasses.replace(cfg, grad_accum=accum)
    if cfg.batch_size % (cfg.grad_accum * processes):
        raise VimtoolError(
            f"train.batch_size={cfg.batch_size} must be divisible by grad_accum x processes = {cfg.grad_accum} x {processes}"
        )
    return cfg


def make_accelerator(cfg: TrainConfig, out_dir: Path, task: Task):
    # deferred on purpose: accelerate takes ~1 s to import, and importing this module for its configs needs none of it
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    has_gpu = torch.cuda.is_available() and not cfg.cpu
    if cfg.precision == "bf16" or (cfg.precision == "auto" and has_gpu and torch.cuda.is_bf16_supported()):
        mixed = "bf16"
    else:
        mixed = "no"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        # accelerate's FSDP plugin (FSDP1) would wrap the models behind the engine's back (and on a CPU it is
        # silently replaced by DDP): the engine shards with FSDP2 itself (vimtool/train/distributed.py)
        raise VimtoolError(
            "launch with a data-parallel accelerate config (distributed_type: MULTI_GPU, e.g. "
            "recipes/accelerate/fsdp.yaml) and set train.parallel=fsdp: vimtool applies FSDP2 itself"
        )
    forget_other_precision(mixed)
    # On a machine without an accelerator, cpu=True is what makes `accelerate launch --multi_gpu` (or torchrun)
    # form a real gloo process group (plain `--cpu` starts one process): a known trap.
    return Accelerator(
        cpu=not has_gpu,
        mixed_precision=mixed,
        log_with=list(cfg.trackers) or None,
        project_dir=str(out_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=task.find_unused_parameters)],
    )


def forget_other_precision(mixed: str) -> None:
    """Let one Python process run trainings of different precisions one after another (a tokenizer in fp32, then a
    transformer in bf16: the Python API, notebooks, the bench studies). accelerate keeps the first Accelerator's
    mixed precision in a process-wide state and refuses any other afterwards; the state of a finished run is
    dropped here (not the process group, which lives in PartialState and is kept)."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", mixed)) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


class StopSignals:
    """SIGINT/SIGTERM set a flag checked once per step (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.flag = True
        log.warning(
            "signal %d: finishing this step, saving a checkpoint, then stopping (Ctrl-C again to abort)", signum
        )

    def __enter__(self) -> StopSignals:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread: no handlers, Ctrl-C behaves as usual
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def load_optimizers(latest: Path, optimizers) -> None:
    """The optimizer states of a single-process or DDP checkpoint (FSDP: distributed.load_sharded)."""
    saved = st.torch_load(latest / "state" / "optimizers.pt")
    for name, opt in optimizers.items():
        if name not in saved:
            raise VimtoolError(
                f"{latest}/state/optimizers.pt has no optimizer {name!r}; the task changed since this checkpoint"
            )
        opt.load_state_dict(saved[name])


def hint_threads(device: torch.device) -> None:
    """On a CPU busier than its cores, torch's default of one thread per core can be many times slower than one.

    Why: every op is split over all threads and waits for the slowest; when other processes hold the cores, each
    small op waits for a descheduled thread (measured on a shared 2-core machine: tiny models 10-25x slower).
    """
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if (
        device.type == "cpu"
        and torch.get_num_threads() > 1
        and "OMP_NUM_THREADS" not in os.environ
        and busy > cores - 0.5
    ):
        log.warning(
            "the CPU is busy (load %.1f on %d cores): training with torch's %d threads may be many times slower "
            "than with `vimtool --threads 1 ...`",
            busy,
            cores,
            torch.get_num_threads(),
        )


def warn_if_changed(trainer: dict, cfg: TrainConfig, latest: Path) -> None:
    # grad_accum is not here: the samples of a global step depend on (seed, batch_size) only, so another split into
    # micro-batches (e.g. micro_batch on another number of processes) continues the same data order
    for key in ("batch_size", "seed"):
        if key in trainer and trainer[key] != getattr(cfg, key):
            log.warning(
                "resuming %s with train.%s=%s (it was %s): the data order changes from here on",
                latest,
                key,
                getattr(cfg, key),
                trainer[key],
            )
