"""The ONE training loop: every training command runs its task through `train(task, cfg)`.

A task supplies what is particular to it; the engine supplies everything else (accelerate, precision,
gradient accumulation, clipping, schedules, parameter groups, EMA, checkpoints, exact resume, logging).

    class MyTask(Task):
        name = "vim"
        def build_models(self): return {"model": VIM(cfg)}                 # "model" is what gets saved
        def optimizers(self): return [OptimizerSpec("model", "model")]     # default; a GAN adds ("disc", "disc")
        def train_dataset(self): return dataset                             # map-style; engine shuffles + shards
        def collate(self, items): return default_collate(items)             # default
        def train_step(self, models, batch, step):
            loss = models["model"](batch["tokens"])                        # call models through forward()
            return StepOutput(losses={"model": loss}, metrics={"acc": acc})
        def evaluate(self, models, step, out_dir): return {"val_loss": ...}  # optional; main process only
        def checkpoint_extra(self): return {"tokenizer": identity}          # optional: into config.json
        def card_info(self): return {"data": "mnist5k"}                     # optional: into the model card
        def save_model(self, model, folder, card): ...                      # default: checkpoint.save_model

    path = train(MyTask(), cfg.train)   # -> the final model checkpoint folder

Semantics of one step (global step s, 0-based; `train_step` receives s):
- The global batch (`batch_size`, across processes AND accumulation) is `grad_accum` micro-batches, each split
  over the processes; data order is a pure function of (seed, s) (see train/state.py), so 1 process with batch B
  and 2 processes with B/2 each see the same samples, and resume restarts at the exact sample.
- `train_step` runs once per micro-batch under autocast; its losses are divided by `grad_accum` and
  back-propagated per optimizer, in list order. With several optimizers each loss only reaches ITS optimizer's
  parameters (`backward(inputs=...)`), so a generator loss that flows through the discriminator does not leak
  gradients into the discriminator (detach fakes in the discriminator loss). A loss key missing from the
  StepOutput = that optimizer skips this step (e.g. the discriminator before its start step).
- Then per optimizer: clip (`clip_grad`), step, zero its grads; lr = base lr x group lr_mult x schedule(s).
  Parameter groups and the optimizer come from vimtool/train/optim.py (no decay on norms/biases/embeddings,
  per-parameter `lr_mult`, e.g. NOBLE's).
- `compile`: the trained models run under torch.compile (after DDP wrapping); checkpoints and `engine.unwrap` give
  the plain modules.
- EMA (`ema` > 0): after each step of "model". The EMA weights are what checkpoints save as model.safetensors
  and what `evaluate` sees; raw weights stay in state/ for resume.
- Modules in build_models() that no optimizer trains (frozen nets) are moved to the device, not wrapped, and
  not saved in the training state (build them deterministically).
- In multi-process runs, models passed to train_step are DDP-wrapped or FSDP2-sharded (`train.parallel`): call
  them (forward), and reach other methods with `self.engine.unwrap(model)` (a method call on the unwrapped model
  does not sync gradients; under FSDP wrap it in `self.engine.unsharded(model)`). Changes made outside the
  optimizer go through `self.engine.gathered(submodule)` (rank 0's values end up on every rank, resharded).
  `self.engine` (set before build_models is used) holds the accelerator, device, optimizers, out_dir.
- Distributed concerns (FSDP2 sharding per transformer Block, activation checkpointing, DTensor clipping, DCP
  checkpoints) live in vimtool/train/distributed.py; docs/DISTRIBUTED.md says how to launch.
- `micro_batch` (per process) derives `grad_accum = batch_size / (micro_batch x processes)`.
- Task state beyond weights and RNG (the tokenizer's restart window): `Task.train_state()` / `load_train_state()`,
  saved in state/task.safetensors.

Checkpoints: out_dir/checkpoints/step_000100/{config.json, model.safetensors, README.md, state/...} (under FSDP the
model is gathered to rank 0 for model.safetensors, and state/dcp/ holds every rank's shards), written in a
temp folder and renamed (vimtool/atomic.py `atomic_dir`; a failed save leaves no temp folder behind); out_dir/latest and out_dir/final are pointers (relative symlinks, text files where
symlinks fail). metrics.jsonl holds one JSON line per log/eval. `resume=True` continues from `latest` (or starts
fresh when there is none); a fresh run refuses an out_dir that already has checkpoints.
Stops: a NaN/inf loss stops the run before any update with it (VimtoolError; the last good checkpoint stays);
SIGINT/SIGTERM finishes the current step, saves a checkpoint and raises KeyboardInterrupt. `stop_at` pauses at
that step: a checkpoint is saved and returned (the `final` pointer is not written); `resume` continues.
Exactness: on CPU in fp32, SIGKILL + resume ends bitwise equal to an uninterrupted run (tests/test_engine_resume.py).
With num_workers > 0 that needs a dataset whose randomness is seeded from (seed, epoch, index), not from the
worker's RNG. On GPUs it is close but not bitwise: non-deterministic kernels (atomic adds in attention and
embedding backward) reorder float sums, so runs differ at the rounding level and drift apart slowly.
1 process vs N processes with the same global batch: equal up to float summation order (DDP and FSDP average
the gradients of per-rank means; tests/test_engine_multiproc.py, tests/test_distributed.py: < 1e-5 after 10 steps)
when the step draws no random numbers; with dropout each rank has its own RNG stream (seed + rank), so the draws
differ. Under FSDP the training state is a DCP folder (state/dcp/) that resumes on any number of processes.
Limits: task metrics must have the same keys on every rank (they are averaged across ranks at log time).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import vimtool.train.distributed as distributed
import vimtool.train.runlock as runlock
import vimtool.train.state as st
from vimtool import __version__, atomic
from vimtool import checkpoint as ckpt
from vimtool.config import to_dict
from vimtool.data.loading import DataLoading, loader_kwargs
from vimtool.devices import keep_freed_memory, release_freed_memory
from vimtool.errors import VimtoolError
from vimtool.provenance import describe as describe_software
from vimtool.provenance import software_info
from vimtool.train.ema import EMA
from vimtool.train.optim import make_optimizer, param_groups, set_lr
from vimtool.train.schedules import lr_factor
from vimtool.train.setup import (
    StopSignals,
    check_train_config,
    derive_grad_accum,
    hint_threads,
    load_optimizers,
    make_accelerator,
    warn_if_changed,
)
from vimtool.train.task import EngineHandle, OptimizerSpec, StepOutput, Task, TrainConfig

__all__ = ["EngineHandle", "OptimizerSpec", "StepOutput", "Task", "TrainConfig", "train"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ schedule
def _set_lrs(
    optimizers: dict[str, torch.optim.Optimizer], base_lrs: dict[str, float], cfg: TrainConfig, step: int
) -> float:
    f = lr_factor(
        step,
        schedule=cfg.schedule,
        steps=cfg.steps,
        warmup_steps=cfg.warmup_steps,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        decay_start=cfg.decay_start,
    )
    for name, opt in optimizers.items():
        set_lr(opt, base_lrs[name] * f)  # the schedule multiplies every group's lr_mult
    return f


# ------------------------------------------------------------------------------------------------ train
def train(task: Task, cfg: TrainConfig) -> Path:
    """Train `task` as `cfg` says; returns the final model checkpoint folder."""
    out_dir = Path(cfg.out_dir or f"runs/{task.name}")
    check_train_config(cfg)
    acc = make_accelerator(cfg, out_dir, task)
    # One run per folder, held by the main process (train/runlock.py); then what a killed run left half-written.
    lock = runlock.take(out_dir) if acc.is_main_process else None
    if lock is not None:
        atomic.clean_leftovers(out_dir, shared=True)  # shared temp names too: the lock says no one else writes here
    try:
        if acc.device.type == "cpu":
            keep_freed_memory()  # CPU steps 2-16% faster: no page faults on every step's large tensors (devices.py)
        if acc.is_main_process:
            hint_threads(acc.device)
        cfg = derive_grad_accum(cfg, acc.num_processes)
        mesh, owns_group = distributed.fsdp_mesh(acc.device) if cfg.parallel == "fsdp" else (None, False)
        try:
            return _train(task, cfg, acc, out_dir, mesh)
        finally:
            if owns_group:
                dist.destroy_process_group()
    finally:
        if lock is not None:
            lock.release()


def _train(task: Task, cfg: TrainConfig, acc, out_dir: Path, mesh) -> Path:
    world, rank = acc.num_processes, acc.process_index
    fsdp = mesh is not None
    ckpt_root = out_dir / "checkpoints"
    latest = ckpt.read_pointer(out_dir / "latest") if cfg.resume else None
    if not cfg.resume and (out_dir / "latest").exists():
        raise VimtoolError(
            f"{out_dir} already holds checkpoints of a run: pass --resume (train.resume=true) to continue it, or choose another out_dir"
        )
    acc.wait_for_everyone()  # every rank has looked before rank 0 creates anything
    if acc.is_main_process:
        ckpt_root.mkdir(parents=True, exist_ok=True)
    if cfg.resume and latest is None:
        log.info("nothing to resume in %s: starting a fresh run", out_dir)

    handle = EngineHandle(accelerator=acc, out_dir=out_dir, cfg=cfg)
    task.engine = handle
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    models = task.build_models()
    if "model" not in models:
        raise TypeError(f"{type(task).__name__}.build_models() must return a dict with a 'model' entry")
    specs = task.optimizers()
    if not specs:
        raise TypeError(f"{type(task).__name__}.optimizers() returned no OptimizerSpec; the engine needs at least one")
    trained = list(dict.fromkeys(s.module for s in specs))
    for s in specs:
        if s.module not in models:
            raise TypeError(
                f"OptimizerSpec {s.name!r} trains models[{s.module!r}], which build_models() did not return"
            )
    start_step, trainer = 0, {}
    if latest is not None:
        recorded = task.checkpoint_extra().get("tokenizer")  # stage 2: the shards' tokenizer is the one it trained on
        if recorded:
            ckpt.check_pairing(ckpt.read_config(latest), recorded)
        trainer = st.read_json(latest / "state" / "trainer.json")
        if trainer.get("optimizer", "adamw") != cfg.optimizer:  # checkpoints from before the option were AdamW
            raise VimtoolError(
                f"{latest} was trained with another train.optimizer ({trainer.get('optimizer', 'adamw')}); "
                f"resume with --set train.optimizer={trainer.get('optimizer', 'adamw')}"
            )
        if trainer.get("parallel", "ddp") != cfg.parallel:
            raise VimtoolError(
                f"{latest} was trained with train.parallel={trainer.get('parallel', 'ddp')}; resume with "
                f"--set train.parallel={trainer.get('parallel', 'ddp')}"
            )
        if not fsdp:  # raw weights go in before wrapping, so DDP broadcasts the right ones (FSDP: after sharding)
            for name in trained:
                st.read_module(models[name], latest / "state" / "models" / f"{name}.safetensors")
        start_step = int(trainer["step"])

    # Activation checkpointing and FSDP2 sharding happen before the optimizers exist: their groups hold the
    # sharded parameters (distributed.py carries NOBLE's per-parameter lr_mult over).
    for name in trained:
        if fsdp:
            models[name] = models[name].to(acc.device)
        distributed.parallelize(
            models[name],
            mesh=mesh,
            activation_checkpointing=cfg.activation_checkpointing,
            bf16=acc.mixed_precision == "bf16",
        )

    base_lrs: dict[str, float] = {}
    raw_opts: dict[str, torch.optim.Optimizer] = {}
    for s in specs:
        lr = s.lr if s.lr is not None else cfg.lr
        wd = s.weight_decay if s.weight_decay is not None else cfg.weight_decay
        base_lrs[s.name] = lr
        groups = param_groups(models[s.module], lr, wd)
        raw_opts[s.name] = make_optimizer(cfg.optimizer, groups, lr, tuple(s.betas or cfg.betas), wd)
    if fsdp:  # already sharded: accelerate must not wrap them again (with cpu=True it would add DDP)
        wrapped, optimizers = {n: models[n] for n in trained}, raw_opts
    else:
        prepared = acc.prepare(*[models[n] for n in trained], *raw_opts.values())
        wrapped = dict(zip(trained, prepared[: len(trained)]))
        optimizers = dict(zip(raw_opts, prepared[len(trained) :]))
    run_models = {n: (wrapped[n] if n in wrapped else m.to(acc.device)) for n, m in models.items()}
    if cfg.compile:  # the trained models, after DDP wrapping; our own call, not accelerate's dynamo plugin, which
        # its process-wide state fixes at the first Accelerator (a second train() in one process would ignore it)
        run_models.update({n: torch.compile(wrapped[n]) for n in trained})
    handle.optimizers = optimizers
    model_raw = acc.unwrap_model(run_models["model"], keep_torch_compile=False)
    ema = EMA(model_raw, cfg.ema) if cfg.ema else None
    if latest is not None:
        if fsdp:  # resharded on load: the checkpoint may come from another number of processes
            opt_pairs = {s.name: (wrapped[s.module], optimizers[s.name]) for s in specs}
            distributed.load_sharded(latest / "state" / "dcp", wrapped, opt_pairs, ema)
        else:
            load_optimizers(latest, optimizers)
            if ema is not None:
                ema.load_state_dict(st.read_tensors(latest / "state" / "ema.safetensors"))
        if (latest / "state" / "task.safetensors").is_file():
            task.load_train_state(st.read_tensors(latest / "state" / "task.safetensors"))
        warn_if_changed(trainer, cfg, latest)
    # The training RNG streams start here: restored on resume, else seed + rank (different dropout per rank).
    rng_file = (latest / "state" / f"rng_rank{rank}.pt") if latest is not None else None
    if rng_file is not None and rng_file.exists():
        st.set_rng_state(st.torch_load(rng_file))
    else:
        if rng_file is not None:
            log.warning(
                "%s missing (different process count?): rank %d reseeded; resume is not bitwise exact", rng_file, rank
            )
        st.seed_everything(cfg.seed + rank + 1_000_003 * start_step)

    dataset = task.train_dataset()
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise VimtoolError(
            f"{task.name}: the training dataset must be map-style (len + getitem) so the engine can shuffle and shard it"
        )
    n = len(dataset)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise VimtoolError(
            f"the training set has {n} items, fewer than one global batch ({cfg.batch_size}); lower train.batch_size or add data"
        )

    if cfg.trackers:
        acc.init_trackers(
            task.name,
            config={k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in to_dict(cfg).items()},
        )
    micro = cfg.batch_size // cfg.grad_accum
    log.info(
        "training %s: %d steps, global batch %d = %d processes x %d x %d accumulation, %s, %s, precision %s%s, out_dir %s; %s%s",
        task.name,
        cfg.steps,
        cfg.batch_size,
        world,
        micro // world,
        cfg.grad_accum,
        cfg.parallel,
        acc.device,
        acc.mixed_precision,
        ", activation checkpointing" if cfg.activation_checkpointing else "",
        out_dir,
        describe_software(),
        f", resuming at step {start_step} from {latest}" if latest is not None else "",
    )
    loop = _Loop(
        task,
        cfg,
        acc,
        run_models,
        wrapped,
        optimizers,
        base_lrs,
        ema,
        dataset,
        steps_per_epoch,
        out_dir,
        ckpt_root,
        fsdp,
    )
    try:
        final = loop.run(start_step, latest)
    finally:
        if cfg.trackers:
            acc.end_training()
        task.engine = None
    if cfg.push_to_hub and acc.is_main_process:
        ckpt.push_to_hub(final, cfg.push_to_hub, private=cfg.hub_private)
    acc.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------------------- loop
class _Loop:
    def __init__(
        self,
        task,
        cfg,
        acc,
        run_models,
        wrapped,
        optimizers,
        base_lrs,
        ema,
        dataset,
        steps_per_epoch,
        out_dir,
        ckpt_root,
        fsdp,
    ):
        self.task, self.cfg, self.acc = task, cfg, acc
        self.models, self.wrapped, self.optimizers, self.base_lrs = run_models, wrapped, optimizers, base_lrs
        self.ema, self.dataset, self.steps_per_epoch = ema, dataset, steps_per_epoch
        self.out_dir, self.ckpt_root, self.fsdp = out_dir, ckpt_root, fsdp
        specs = {s.name: s for s in task.optimizers()}
        self.opt_module = {name: specs[name].module for name in optimizers}
        # With several optimizers each loss reaches only its own parameters (no leak from G's loss into D).
        self.params = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimizers.items()}
        self.inputs = self.params if len(optimizers) > 1 else None
        # accelerate's optimizer wrapper only adds work here without a grad scaler (we offer fp32/bf16, no fp16):
        # its step() probes for optional packages on every call (~0.3 ms), so step the torch optimizer directly.
        self.raw_opts = {
            n: (o.optimizer if acc.scaler is None and hasattr(o, "optimizer") else o) for n, o in optimizers.items()
        }
        self.last_metrics: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    # -- one global step ---------------------------------------------------------------------------
    def _step(
        self, step: int, batches: list[Any], stop: StopSignals
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], bool]:
        cfg, acc = self.cfg, self.acc
        lr_f = _set_lrs(self.optimizers, self.base_lrs, cfg, step)
        loss_sums: dict[str, torch.Tensor] = {}
        metrics: dict[str, Any] = {}
        for m, batch in enumerate(batches):
            last = m == len(batches) - 1
            # DDP: only the last micro-batch all-reduces gradients (no_sync on the others). FSDP: likewise with one
            # optimizer; with several, every micro-batch reduce-scatters (backward_into sets the sharded gradients
            # of the other optimizer aside, which unsharded accumulated gradients would bypass).
            sync = contextlib.ExitStack()
            if self.fsdp and len(self.optimizers) == 1:
                distributed.set_gradient_sync(self.wrapped.values(), last)
            elif not last and not self.fsdp:
                for w in self.wrapped.values():
                    sync.enter_context(acc.no_sync(w))
            with sync:
                with self._autocast():
                    out = self.task.train_step(self.models, batch, step)
                unknown = set(out.losses) - set(self.optimizers)
                if unknown:
                    raise KeyError(
                        f"{type(self.task).__name__}.train_step returned losses for unknown optimizers {sorted(unknown)}"
                    )
                for name in self.optimizers:  # list order
                    loss = out.losses.get(name)
                    if loss is None:
                        continue
                    kwargs = {"inputs": self.inputs[name]} if self.inputs else {}
                    if cfg.grad_accum > 1:
                        loss = loss / cfg.grad_accum
                    if self.fsdp:
                        others = [p for n, ps in self.params.items() if n != name for p in ps]
                        distributed.backward_into(loss, others)
                    else:
                        acc.backward(loss, **kwargs)
                    loss_sums[name] = loss.detach() if name not in loss_sums else loss_sums[name] + loss.detach()
            for k, v in out.metrics.items():
                v = v.detach() if torch.is_tensor(v) else float(v)
                metrics[k] = metrics.get(k, 0) + (v / cfg.grad_accum if cfg.grad_accum > 1 else v)
        # One sync per step: any non-finite loss on any rank, or a stop signal on any rank.
        sums = list(loss_sums.values())
        finite = (
            (sums[0].isfinite() if len(sums) == 1 else torch.stack(sums).isfinite().all())
            if sums
            else torch.tensor(True)
        )
        if acc.num_processes > 1:
            flags = torch.stack([(~finite).float(), torch.tensor(float(stop.flag), device=acc.device)])
            bad, interrupted = (bool(x > 0) for x in acc.reduce(flags, reduction="sum").tolist())
        else:
            bad, interrupted = not bool(finite), stop.flag
        if bad:
            values = {k: float(v) for k, v in loss_sums.items()}
            latest = ckpt.read_pointer(self.out_dir / "latest")
            raise VimtoolError(
                f"loss is not finite at step {step} ({values}); stopped before updating the weights. Last good checkpoint: "
                f"{latest or 'none'}; lower train.lr, set train.clip_grad, or check the data, then resume"
            )
        for name in self.optimizers:
            if name not in loss_sums:
                continue
            if cfg.clip_grad:
                clip = distributed.clip_grad_norm_ if self.fsdp else acc.clip_grad_norm_  # fsdp: norm over all shards
                norm = clip(self.params[name], cfg.clip_grad)
                metrics[f"grad_norm/{name}"] = norm.detach().float() if torch.is_tensor(norm) else float(norm)
            raw = self.raw_opts[name]
            raw.step()
            raw.zero_grad(set_to_none=True)
            if name == "model" and self.ema is not None:
                self.ema.update(self.acc.unwrap_model(self.models["model"], keep_torch_compile=False))
        metrics["lr"] = self.cfg.lr * lr_f
        return loss_sums, metrics, interrupted

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, start_step: int, latest: Path | None) -> Path:
        cfg, acc = self.cfg, self.acc
        main = acc.is_main_process

        bar = tqdm(
            total=cfg.steps,
            initial=start_step,
            desc=self.task.name,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not (main and cfg.progress),
        )
        metrics_file = open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") if main else None
        last_saved = latest if latest is not None and start_step >= cfg.steps else None
        sums: dict[str, Any] = {}
        count, t0 = 0, time.perf_counter()
        step = start_step
        for m in self.models.values():
            m.train()
        try:
            with StopSignals() as stop:
                while step < cfg.steps:
                    epoch = step // self.steps_per_epoch
                    end = min(cfg.steps, (epoch + 1) * self.steps_per_epoch)
                    it = iter(self._loader(epoch, step, end))
                    while step < end:
                        batches = [self._to_device(next(it)) for _ in range(cfg.grad_accum)]
                        losses, metrics, interrupted = self._step(step, batches, stop)
                        step += 1
                        count += 1
                        for k, v in {**{f"loss/{n}": value for n, value in losses.items()}, **metrics}.items():
                            sums[k] = sums.get(k, 0) + v
                        bar.update(1)
                        if step % max(1, cfg.log_every) == 0 or step == cfg.steps or interrupted:
                            dt = time.perf_counter() - t0
                            record = self._log(step, sums, count, dt, bar, metrics_file)
                            self.last_metrics = record
                            sums, count, t0 = {}, 0, time.perf_counter()
                        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                            self._evaluate(step, metrics_file)
                        paused = step == cfg.stop_at and step < cfg.steps
                        regular = cfg.save_every and step % cfg.save_every == 0
                        if regular or step == cfg.steps or interrupted or paused:
                            last_saved = self._save(step)
                        if paused and not interrupted:
                            log.info("paused at step %d of %d (train.stop_at); checkpoint %s; continue with --resume",
                                     step, cfg.steps, last_saved)  # fmt: skip
                            acc.wait_for_everyone()
                            return Path(last_saved)
                        if interrupted:
                            log.warning(
                                "stopped at step %d; checkpoint %s; continue with --resume (train.resume=true)",
                                step,
                                last_saved,
                            )
                            raise KeyboardInterrupt
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
        if last_saved is None:  # resumed a run that had already finished
            last_saved = latest
        if main:
            ckpt.write_pointer(self.out_dir / "final", last_saved)
            log.info("finished: model checkpoint %s (also %s)", last_saved, self.out_dir / "final")
        acc.wait_for_everyone()
        return Path(last_saved)

    def _loader(self, epoch: int, first: int, end: int) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        sampler = st.RankBatchSampler(
            len(self.dataset),
            batch_size=self.cfg.batch_size,
            grad_accum=self.cfg.grad_accum,
            world_size=self.acc.num_processes,
            rank=self.acc.process_index,
            seed=self.cfg.seed,
            epoch=epoch,
            first_step=first,
            end_step=end,
        )
        # A private generator: creating the iterator must not draw from the global RNG (that would make a run
        # resumed mid-epoch differ from an uninterrupted one).
        gen = torch.Generator().manual_seed(st.epoch_seed(self.cfg.seed + 7919 * self.acc.process_index, epoch))
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=self.task.collate,
            generator=gen,
            **loader_kwargs(DataLoading(workers=self._workers()), self.acc.device.type),
        )

    def _workers(self) -> int | None:
        """train.num_workers, or by default: None on a GPU (data/loading.py's min(4, cores - 1), decoding beside the
        accelerator), 0 on a CPU, where the training step itself keeps every core busy."""
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        return None if self.acc.device.type == "cuda" else 0

    def _to_device(self, batch: Any) -> Any:
        if self.acc.device.type == "cpu":  # already there (the DataLoader builds CPU tensors)
            return batch
        # deferred on purpose: accelerate takes ~1 s to import, and importing this module for its configs needs none of it
        from accelerate.utils import send_to_device

        return send_to_device(batch, self.acc.device, non_blocking=True)

    def _autocast(self):
        # acc.autocast() re-reads environment flags on every call; without mixed precision there is nothing to do
        return contextlib.nullcontext() if self.acc.mixed_precision == "no" else self.acc.autocast()

    def _log(self, step: int, sums: dict[str, Any], count: int, dt: float, bar, metrics_file) -> dict[str, float]:
        acc = self.acc
        keys = sorted(sums)
        vals = torch.tensor([float(sums[k]) for k in keys], device=acc.device, dtype=torch.float64) / max(1, count)
        if acc.num_processes > 1:  # the mean over ranks, so the log is the global batch's
            vals = acc.reduce(vals, reduction="mean")
        # step = optimizer updates done; samples_seen = training samples read, over all processes and micro-batches
        record: dict[str, float] = {"step": step, "samples_seen": step * self.cfg.batch_size}
        record.update(zip(keys, vals.tolist()))
        record["samples_per_s"] = count * self.cfg.batch_size / max(dt, 1e-9)
        record["steps_per_s"] = count / max(dt, 1e-9)
        if metrics_file is not None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            losses = {k.split("/", 1)[1]: f"{v:.4g}" for k, v in record.items() if k.startswith("loss/")}
            bar.set_postfix(
                **losses, lr=f"{record.get('lr', 0):.3g}", samples_s=f"{record['samples_per_s']:.1f}", refresh=False
            )
        if self.cfg.trackers:
            acc.log({k: v for k, v in record.items() if k != "step"}, step=step)
        return record

    def _consolidated(self) -> dict[str, nn.Module] | None:
        """FSDP: fresh full copies of the trained models on the main process (None elsewhere), "model" holding the
        EMA weights when EMA is on; frozen modules as they are. Collective: every rank calls it."""
        states = {n: distributed.full_state_dict(w) for n, w in self.wrapped.items()}
        ema = distributed.full_tensors(self.ema.state_dict()) if self.ema is not None else None
        if not self.acc.is_main_process:
            return None
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep the training RNG stream
            fresh = self.task.build_models()
        for n, sd in states.items():
            fresh[n].load_state_dict(sd)
        if ema is not None:
            fresh["model"].load_state_dict(ema, strict=False)  # the EMA holds the floating-point parameters only
        return {n: (fresh[n].to(self.acc.device) if n in states else m) for n, m in self.models.items()}

    def _evaluate(self, step: int, metrics_file) -> None:
        acc = self.acc
        full = self._consolidated() if self.fsdp else None  # collective: before the main-process-only part
        if acc.is_main_process:
            raw = full or {n: acc.unwrap_model(m, keep_torch_compile=False) for n, m in self.models.items()}
            modes = {n: m.training for n, m in raw.items()}
            for m in raw.values():
                m.eval()
            use_ema = self.ema is not None and not self.fsdp  # the FSDP copy already holds the EMA weights
            swap = self.ema.swapped_in(raw["model"]) if use_ema else contextlib.nullcontext()
            try:
                with swap, torch.no_grad(), acc.autocast():
                    result = self.task.evaluate(raw, step, self.out_dir) or {}
            finally:
                for n, m in raw.items():
                    m.train(modes[n])
            if result:
                self.last_eval = {k: float(v) for k, v in result.items()}
                metrics_file.write(
                    json.dumps({"step": step, **{f"eval/{k}": v for k, v in self.last_eval.items()}}) + "\n"
                )
                metrics_file.flush()
                log.info("step %d eval: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in self.last_eval.items()))
                if self.cfg.trackers:
                    acc.log({f"eval/{k}": v for k, v in self.last_eval.items()}, step=step)
        acc.wait_for_everyone()
        release_freed_memory()  # the evaluation's one-off peak need not stay reserved (devices.keep_freed_memory)

    # -- checkpoints -------------------------------------------------------------------------------
    def _save(self, step: int) -> Path:
        acc = self.acc
        main = acc.is_main_process
        final = self.ckpt_root / f"step_{step:06d}"
        # Every rank writes into the same temp folder (shared name), made and renamed into place by the main
        # process (atomic: 'latest' only ever names a complete folder); an error removes it, and a leftover of a
        # killed run is cleared by the next save of that step.
        folder = (
            atomic.atomic_dir(final, shared=True) if main else contextlib.nullcontext(atomic.temp_path(final, True))
        )
        try:
            with folder as tmp:
                self._write_checkpoint(step, tmp)
        except VimtoolError as e:
            # e.g. disk full (atomic.py): the temp folder is gone and 'latest' still names a complete checkpoint
            last = ckpt.read_pointer(self.out_dir / "latest")
            raise VimtoolError(f"saving checkpoint {final.name} failed: {e}; the last complete checkpoint is "
                               f"{last or 'none'}: fix that, then continue with --resume") from e  # fmt: skip
        if main:
            ckpt.write_pointer(self.out_dir / "latest", final)
            self._prune(final)
            log.info("saved checkpoint %s", final)
        acc.wait_for_everyone()
        release_freed_memory()  # the save's full-weight copies need not stay reserved (devices.keep_freed_memory)
        return final

    def _write_checkpoint(self, step: int, tmp: Path) -> None:
        """Everything of checkpoint `step` into the (temp) folder `tmp`: the model, then each rank's state."""
        acc, cfg = self.acc, self.cfg
        main = acc.is_main_process
        if main:  # FSDP: the trained models' state lives in state/dcp (written by every rank)
            (tmp / "state" / ("models" if not self.fsdp else "")).mkdir(parents=True)
        acc.wait_for_everyone()
        card = {
            "task": self.task.name,
            "steps": step,
            "samples_seen": step * cfg.batch_size,
            "ema": cfg.ema or None,
            "metrics": {**{k: v for k, v in self.last_metrics.items() if k.startswith("loss/")}, **self.last_eval},
            "train": to_dict(cfg),
            **self.task.card_info(),
        }
        full = self._consolidated() if self.fsdp else None  # collective: the consolidated export of FSDP shards
        task_state = self.task.train_state()  # on every rank: it may run collectives
        if main:
            if self.fsdp:
                self.task.save_model(full["model"], tmp, card)  # already holds the EMA weights when EMA is on
            else:
                raw_model = acc.unwrap_model(self.models["model"], keep_torch_compile=False)
                swap = self.ema.swapped_in(raw_model) if self.ema is not None else contextlib.nullcontext()
                with swap:
                    self.task.save_model(raw_model, tmp, card)
                for n, w in self.wrapped.items():
                    st.write_module(
                        acc.unwrap_model(w, keep_torch_compile=False), tmp / "state" / "models" / f"{n}.safetensors"
                    )
                st.torch_save({n: o.state_dict() for n, o in self.optimizers.items()}, tmp / "state" / "optimizers.pt")
                if self.ema is not None:
                    st.write_tensors(self.ema.state_dict(), tmp / "state" / "ema.safetensors")
            if task_state:
                st.write_tensors(task_state, tmp / "state" / "task.safetensors")
            st.write_json(
                {
                    "step": step,
                    "samples_seen": step * cfg.batch_size,
                    "epoch": step // self.steps_per_epoch,
                    "batch_size": cfg.batch_size,
                    "grad_accum": cfg.grad_accum,
                    "world_size": acc.num_processes,
                    "parallel": cfg.parallel,
                    "seed": cfg.seed,
                    "optimizer": cfg.optimizer,
                    "vimtool_version": __version__,
                    "torch_version": torch.__version__,
                    "software": software_info(),
                },
                tmp / "state" / "trainer.json",
            )
        if self.fsdp:  # every rank writes its own shards (readable by any number of processes)
            acc.wait_for_everyone()
            opt_pairs = {n: (self.wrapped[self.opt_module[n]], o) for n, o in self.optimizers.items()}
            distributed.save_sharded(tmp / "state" / "dcp", self.wrapped, opt_pairs, self.ema)
        acc.wait_for_everyone()  # the folder exists and holds the model before ranks add their RNG
        st.torch_save(st.rng_state(), tmp / "state" / f"rng_rank{acc.process_index}.pt")
        acc.wait_for_everyone()  # every rank's files are in before the main process renames the folder
        if main:
            ckpt.default_modes(tmp)

    def _prune(self, keep: Path) -> None:
        if self.cfg.keep_last <= 0:
            return
        done = sorted(p for p in self.ckpt_root.glob("step_*") if p.is_dir())
        for old in done[: -self.cfg.keep_last]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
