"""Training plan before any training: parameters, FLOPs, per-device memory, micro-batch, time (`vimtool plan`).

`plan(PlanConfig) -> PlanResult`. The model comes from a recipe (the `train-lm` / `train-t2i` / `train-tokenizer`
run config, `--set` overrides applied as those commands apply them) or a named size (`vim-base`, `parti-3b`,
`tokenizer-ss`, ...). It is built on the meta device (no memory, instant even at 20B) for the real parameter
counts; everything else is counted analytically from the shapes (`costs.model_shape`), and the meta count must
equal the analytic one (tests/test_plan.py), which keeps the shapes honest. The package:

    __init__.py   PlanConfig -> the run and model configs -> PlanResult (this module)
    costs.py      shapes and the FLOP / memory formulas (what is counted, and how, in its docstring)
    hardware.py   GPUS (peak TFLOP/s, memory) and PAPER (the papers' sizes, batches, steps)

docs/PLAN.md lists what is counted and how bench/bench_plan.py measured it (CPU and H200: FLOPs equal to
FlopCounterMode, peak memory within 12%).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from vimtool.config import ConfigError, build, deep_merge, read_recipe, to_dict
from vimtool.plan.costs import (
    Memory,
    activation_bytes,
    analytic_params,
    cpu_sdpa_flop_formulas,
    flops,
    memory,
    model_shape,
)
from vimtool.plan.hardware import GPUS, PAPER, PAPER_RUN, Family


@dataclass
class PlanConfig:
    """What to plan: a model (recipe or named size) and the hardware to train it on."""

    model: str | None = None  # named size: vim-base, parti-3b, tokenizer-ss, ... or <family>-<any SIZES key>
    recipe: str | None = None  # a train-lm / train-t2i / train-tokenizer recipe file
    family: Literal["auto", "vim", "parti", "tokenizer"] = "auto"  # which command the recipe is for
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, applied to the run config
    devices: int = 1
    device_memory_gb: float | None = None  # default: the GPU's
    parallel: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False
    micro_batch: int | None = None  # per device; default: the largest that fits
    global_batch: int | None = None  # default: the recipe's train.batch_size (the paper's for named sizes)
    gpu: str = "h100"
    mfu: float = 0.4
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: the recipe's train.precision (auto -> bf16)
    memory_headroom: float = 0.1  # fraction of device memory left free (CUDA context, fragmentation, buffers)
    # Data facts the shards would give (stage 2): codebook size, token grid side, classes (None: 1000 when
    # the VIM run is class-conditional, as ImageNet).
    codebook_size: int = 8192
    token_grid: int = 32
    num_classes: int | None = None


@dataclass
class ParamCount:
    total: int
    trainable: int
    analytic: int  # from the shapes; equals `total` (tests/test_plan.py)


@dataclass
class PlanResult:
    name: str
    family: str
    size: str
    paper_params: float | None
    params: dict[str, ParamCount]  # per module: model (+ disc, lpips for tokenizers)
    total_params: int
    trainable_params: int
    flops_forward_per_sample: float
    flops_per_sample: float  # forward + backward
    flops_recompute_per_sample: float  # extra forward of the blocks with activation checkpointing
    flops_per_step: float  # per global batch
    flops_parts: dict[str, float]  # forward + backward per sample, by part
    precision: str
    gpu: str
    peak_tflops: float
    device_memory_gb: float
    devices: int
    mfu: float
    global_batch: int
    steps: int
    micro_batch: int
    grad_accum: int
    memory: list[Memory]  # ddp / fsdp x checkpointing off / on, at `micro_batch`
    chosen: Memory
    step_seconds: float
    total_days: float
    assumptions: list[str]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- resolving the model
def _family_modules(family: str):
    """(run config class, model module) of a family; imported here so that importing vimtool.plan stays light."""
    if family == "vim":
        from vimtool.models import vim as mod
        from vimtool.train.lm import LMRunConfig as run
    elif family == "parti":
        from vimtool.models import parti as mod
        from vimtool.train.t2i import T2IRunConfig as run
    else:
        from vimtool.models import vitvqgan as mod
        from vimtool.train.tokenizer import TokenizerRunConfig as run
    return run, mod


_SHAPE_KEYS = ("dim", "depth", "heads", "mlp_dim", "noble", "enc_dim", "enc_depth", "enc_mlp_dim", "dec_dim",
               "dec_depth", "dec_mlp_dim", "codebook_size", "lookup_dim", "patch_size", "image_size")  # fmt: skip
_COMMANDS = {"vim": "train-lm", "parti": "train-t2i", "tokenizer": "train-tokenizer"}


def _named(name: str) -> tuple[Family, str]:
    key = name.lower()
    if key in PAPER:
        return PAPER[key].family, PAPER[key].size
    family, _, size = key.partition("-")
    if family in _COMMANDS and size:
        sizes = _family_modules(family)[1].SIZES
        match = next((s for s in sizes if s.lower() == size), None)
        if match is not None:
            return family, match  # type: ignore[return-value]
    raise ConfigError(f"unknown model {name!r}; use one of {', '.join(PAPER)} or <vim|parti|tokenizer>-<size>")


def _header(path: str) -> str:
    """The recipe's comment lines (they name the command it is for)."""
    with open(path, encoding="utf-8") as f:
        return "".join(line for line in f if line.startswith("#"))


def _recipe_family(path: str, data: dict[str, Any], overrides: dict[str, Any]) -> Family:
    """The family whose run config accepts the recipe; ties are broken by the command in the recipe's header."""
    fits = []
    for fam in _COMMANDS:
        try:
            build(_family_modules(fam)[0], deep_merge(data, overrides))
            fits.append(fam)
        except ConfigError:
            continue
    if len(fits) > 1:
        header = _header(path)
        fits = [fam for fam in fits if f" {_COMMANDS[fam]} " in header] or fits
    if not fits and " train-reranker " in _header(path):  # a small dual encoder: nothing to plan for
        raise ConfigError(
            f"{path} is a train-reranker recipe; vimtool plan covers train-lm, train-t2i and train-tokenizer"
        )
    if len(fits) != 1:
        raise ConfigError(f"cannot tell which training command recipe {path} is for; pass --family vim|parti|tokenizer")
    return fits[0]  # type: ignore[return-value]


def _resolve(cfg: PlanConfig):
    """-> (name, family, size, run config, {module name: its config}, the paper's facts of the size)."""
    if (cfg.model is None) == (cfg.recipe is None):
        raise ConfigError("give exactly one of --model NAME (e.g. vim-base) or --config RECIPE")
    if cfg.model is not None:
        family, size = _named(cfg.model)
        run_facts = PAPER_RUN[family]
        data: dict[str, Any] = {"size": size, "train": {"batch_size": run_facts.global_batch, "steps": run_facts.steps}}
        name = cfg.model.lower()
    else:
        data = read_recipe(cfg.recipe)
        family = cfg.family if cfg.family != "auto" else _recipe_family(cfg.recipe, data, cfg.overrides)
        name = str(cfg.recipe)
    if cfg.family not in ("auto", family):
        raise ConfigError(f"--family {cfg.family} does not match model {cfg.model} ({family})")
    run_cls, mod = _family_modules(family)
    run = build(run_cls, deep_merge(data, cfg.overrides))
    # an alias (the tokenizer's small/base/large) is the same config object as the paper's name (SS/BB/LL)
    size = next((k for k, v in mod.SIZES.items() if v is mod.SIZES.get(run.size)), run.size)
    paper = next((f for f in PAPER.values() if (f.family, f.size) == (family, size)), None)
    if paper is not None and any(k in run.model for k in _SHAPE_KEYS):
        paper = None  # a paper size reshaped by model overrides is no longer the paper's model
    grid = (cfg.token_grid, cfg.token_grid)
    models: dict[str, Any] = {}
    if family == "vim":
        classes = cfg.num_classes if cfg.num_classes is not None else (run.num_classes or 1000)
        models["model"] = run.model_config(cfg.codebook_size, grid, 0 if run.conditional == "no" else classes)
    elif family == "parti":
        if run.size not in mod.SIZES:
            raise ConfigError(f"unknown Parti size {run.size!r}; use one of {', '.join(mod.SIZES)}")
        sized = deep_merge(to_dict(mod.SIZES[run.size]), run.model)
        sized.update(text_vocab_size=run.text_vocab_size, codebook_size=cfg.codebook_size, grid=list(grid))
        if run.text_max_len is not None:
            sized["max_text_len"] = run.text_max_len
        models["model"] = build(mod.PartiConfig, sized, prefix="model.")
    else:
        from vimtool.models.discriminator import DiscriminatorConfig

        mcfg = run.model_config()
        models["model"] = mcfg
        if run.loss.adversarial > 0:
            models["disc"] = DiscriminatorConfig(mcfg.image_size, run.disc_channels, run.disc_max_channels)
        if run.loss.perceptual > 0:
            models["lpips"] = None  # frozen VGG16: no config
    return name, family, size, run, models, paper


def model_configs(cfg: PlanConfig) -> dict[str, Any]:
    """The configs of the modules the planned run trains: {"model": config} (+ "disc", and "lpips": None)."""
    return _resolve(cfg)[4]


def _build_meta(family: str, name: str, config: Any) -> torch.nn.Module:
    """The real module on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        if name == "disc":
            from vimtool.models.discriminator import StyleGANDiscriminator

            return StyleGANDiscriminator(config)
        if name == "lpips":
            from vimtool.models.perceptual import VGG16Features

            return VGG16Features().requires_grad_(False)
        if family == "vim":
            from vimtool.models.vim import VIM

            return VIM(config)
        if family == "parti":
            from vimtool.models.parti import Parti

            return Parti(config)
        from vimtool.models.vitvqgan import ViTVQGAN

        return ViTVQGAN(config)


# ---------------------------------------------------------------------------------------------- the plan
def _batching(global_batch: int, devices: int, max_micro: int, micro: int | None) -> tuple[int, int, list[str]]:
    """(micro-batch per device, accumulation steps, notes): the fewest accumulation steps that fit."""
    notes = []
    if global_batch % devices:
        notes.append(f"global batch {global_batch} is not divisible by {devices} devices; the engine refuses it")
    per_device = max(1, global_batch // devices)
    if micro is not None:
        if per_device % micro:
            notes.append(
                f"micro-batch {micro} does not divide the {per_device} samples per device; the engine refuses it"
            )
        return micro, max(1, math.ceil(per_device / micro)), notes
    for accum in range(1, per_device + 1):
        if per_device % accum == 0 and per_device // accum <= max(1, max_micro):
            return per_device // accum, accum, notes
    return 1, per_device, notes


def plan(cfg: PlanConfig) -> PlanResult:
    """Estimate parameters, FLOPs, per-device memory, batching and time of a training run (module docstring)."""
    if cfg.gpu.lower() not in GPUS:
        raise ConfigError(f"unknown gpu {cfg.gpu!r}; use one of {', '.join(GPUS)}")
    if cfg.devices < 1 or not 0 < cfg.mfu <= 1 or not 0 <= cfg.memory_headroom < 1:
        raise ConfigError("devices must be >= 1, mfu in (0, 1] and memory_headroom in [0, 1)")
    if (cfg.micro_batch is not None and cfg.micro_batch < 1) or (cfg.global_batch is not None and cfg.global_batch < 1):
        raise ConfigError("micro_batch and global_batch must be >= 1")
    gpu = GPUS[cfg.gpu.lower()]
    name, family, size, run, models, paper = _resolve(cfg)
    shape = model_shape(family, models, run)
    analytic = analytic_params(shape)
    params: dict[str, ParamCount] = {}
    for key, config in models.items():
        module = _build_meta(family, key, config)
        total = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        params[key] = ParamCount(total, trainable, analytic[key])
    counts = {k: v.total for k, v in params.items()}

    precision = cfg.precision if cfg.precision != "auto" else ("fp32" if run.train.precision == "fp32" else "bf16")
    optimizer = run.train.optimizer
    global_batch = cfg.global_batch or run.train.batch_size
    memory_gb = cfg.device_memory_gb or gpu.memory_gb
    budget = memory_gb * (1 - cfg.memory_headroom)

    def estimate(parallel: str, ckpt: bool, micro: int) -> Memory:
        return memory(shape, counts, precision, optimizer, parallel, ckpt, micro, cfg.devices, budget)

    probe = estimate(cfg.parallel, cfg.activation_checkpointing, 1)
    micro, accum, notes = _batching(global_batch, cfg.devices, probe.max_micro_batch, cfg.micro_batch)
    table = [estimate(p, ck, micro) for p in ("ddp", "fsdp") for ck in (False, True)]
    chosen = next(
        m for m in table if m.parallel == cfg.parallel and m.activation_checkpointing == cfg.activation_checkpointing
    )
    if not chosen.fits:
        better = [m for m in table if m.fits]
        hint = (
            f"; fits with {better[0].parallel}{' + checkpointing' if better[0].activation_checkpointing else ''}"
            if better
            else ""
        )
        notes.append(f"does not fit: {chosen.total_gb:.1f} GB needed per device, {budget:.1f} GB usable{hint}")

    fwd, per_sample, recompute, parts = flops(shape)
    peak = (gpu.bf16_tflops if precision == "bf16" else gpu.tf32_tflops) * 1e12
    step_flops = per_sample * global_batch
    step_seconds = step_flops / (cfg.devices * peak * cfg.mfu)
    assumptions = [f"precision {precision} ({'autocast, fp32 master weights' if precision == 'bf16' else 'fp32'}), "
                   f"optimizer {optimizer}, {memory_gb:g} GB per device with {cfg.memory_headroom:.0%} kept free"]  # fmt: skip
    if family in ("vim", "parti"):
        c = models["model"]
        data = f"data: {cfg.codebook_size} codes, {cfg.token_grid}x{cfg.token_grid} tokens"
        if family == "vim":
            data += f", {c.num_classes} classes" if c.num_classes else ", unconditional"
        else:
            data += f", text padded to {c.max_text_len} positions, text vocabulary {c.text_vocab_size}"
        assumptions.append(data + " (--codebook-size, --token-grid, --num-classes change them)")
    if cfg.activation_checkpointing:
        assumptions.append(
            f"checkpointing recomputes {recompute / per_sample:.0%} of the step's FLOPs (not in the time)"
        )
    return PlanResult(
        name=name, family=family, size=size, paper_params=paper.params if paper else None, params=params,
        total_params=sum(counts.values()), trainable_params=sum(p.trainable for p in params.values()),
        flops_forward_per_sample=fwd, flops_per_sample=per_sample, flops_recompute_per_sample=recompute,
        flops_per_step=step_flops, flops_parts=parts, precision=precision, gpu=cfg.gpu.lower(),
        peak_tflops=peak / 1e12, device_memory_gb=memory_gb, devices=cfg.devices, mfu=cfg.mfu,
        global_batch=global_batch, steps=run.train.steps, micro_batch=micro, grad_accum=accum, memory=table,
        chosen=chosen, step_seconds=step_seconds, total_days=step_seconds * run.train.steps / 86400,
        assumptions=assumptions, notes=notes,
    )  # fmt: skip


__all__ = [
    "GPUS",
    "PAPER",
    "Memory",
    "ParamCount",
    "PlanConfig",
    "PlanResult",
    "activation_bytes",
    "analytic_params",
    "cpu_sdpa_flop_formulas",
    "flops",
    "model_configs",
    "plan",
]
