"""`vimtool plan`: parameters, FLOPs, per-device memory, batching and time of a training run, before running it.

Registered in vimtool/commands/__init__.py before the training commands. The estimate itself is vimtool/plan/;
this module only turns its `PlanResult` into the report (or JSON).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from vimtool.plan import PlanResult


def plan_cmd(
    model: str | None = typer.Option(
        None,
        "--model",
        help="Named size: vim-base, vim-large, parti-350m/750m/3b/20b, tokenizer-ss/bb/sl, or <vim|parti|tokenizer>-<size>.",
    ),
    config_path: str | None = typer.Option(
        None, "--config", help="A train-lm / train-t2i / train-tokenizer recipe, e.g. recipes/vim_imagenet_base.yaml."
    ),
    family: str = typer.Option(
        "auto", "--family", help="Which command the recipe is for: auto, vim, parti, tokenizer."
    ),
    set_items: list[str] | None = typer.Option(
        None, "--set", help="Override any recipe setting: --set model.depth=12 --set train.steps=100000."
    ),
    devices: int = typer.Option(1, "--devices", min=1, help="Number of accelerators."),
    device_memory: float | None = typer.Option(
        None, "--device-memory", help="GB per device (default: the GPU's, e.g. 80 for h100)."
    ),
    parallel: str = typer.Option(
        "ddp", "--parallel", help="ddp (replicated) or fsdp (sharded params/grads/optimizer)."
    ),
    activation_checkpointing: bool = typer.Option(
        False, "--activation-checkpointing/--no-activation-checkpointing", help="Recompute each block in backward."
    ),
    micro_batch: int | None = typer.Option(
        None, "--micro-batch", min=1, help="Per-device micro-batch (default: the largest that fits)."
    ),
    global_batch: int | None = typer.Option(
        None, "--global-batch", min=1, help="Global batch (default: the recipe's; the paper's for named sizes)."
    ),
    gpu: str = typer.Option(
        "h100", "--gpu", help="Accelerator: a100, h100, h100-pcie, h200, b200, l40s, l4, a10, mi300x."
    ),
    mfu: float = typer.Option(0.4, "--mfu", help="Assumed model FLOP utilisation for the time estimate."),
    precision: str = typer.Option(
        "auto", "--precision", help="bf16 (autocast, fp32 master), fp32, or auto (recipe's)."
    ),
    codebook_size: int = typer.Option(8192, "--codebook-size", help="Stage 2: the tokenizer's codebook size."),
    token_grid: int = typer.Option(32, "--token-grid", help="Stage 2: side of the token grid (32 = 1024 tokens)."),
    num_classes: int | None = typer.Option(
        None, "--num-classes", help="VIM: classes of a conditional run (default: the recipe's, else 1000)."
    ),
    memory_headroom: float = typer.Option(
        0.1, "--memory-headroom", help="Fraction of device memory kept free (CUDA context, fragmentation, buffers)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the report."),
) -> None:
    """Estimate a training run before starting it: parameters (beside the paper's), FLOPs per step, memory per
    device under DDP and FSDP with and without activation checkpointing, the largest micro-batch that fits, the
    gradient accumulation for the global batch, and the time at an assumed MFU. Models are built on the meta
    device, so even Parti 20B takes a second.

    Example: vimtool plan --model parti-3b --devices 64 --parallel fsdp --activation-checkpointing --gpu h100
    """
    from vimtool.config import build, parse_set  # deferred: they pull in torch; `vimtool --help` should not wait
    from vimtool.plan import PlanConfig, plan

    options = dict(
        model=model, recipe=config_path, family=family, overrides=parse_set(set_items), devices=devices,
        device_memory_gb=device_memory, parallel=parallel, activation_checkpointing=activation_checkpointing,
        micro_batch=micro_batch, global_batch=global_batch, gpu=gpu, mfu=mfu, precision=precision,
        codebook_size=codebook_size, token_grid=token_grid, num_classes=num_classes, memory_headroom=memory_headroom,
    )  # fmt: skip
    # build() checks the choices (parallel, family, precision) with the one-line errors of every recipe key
    result = plan(build(PlanConfig, {k: v for k, v in options.items() if v is not None}))
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_plan(result))


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def format_plan(r: PlanResult) -> str:
    """The plan as a short text report (what `vimtool plan` prints)."""
    paper = f" (paper: {_human(r.paper_params)})" if r.paper_params else ""
    lines = [f"{r.name}: {r.family} size {r.size}", f"parameters  {_human(r.total_params)} total, "
             f"{_human(r.trainable_params)} trainable{paper}"]  # fmt: skip
    for key, p in r.params.items():
        if len(r.params) > 1:
            lines.append(f"  {key:<10} {p.total:,} ({p.trainable:,} trainable)")
    lines.append(
        f"FLOPs       {_human(r.flops_per_sample)} per sample (forward + backward; forward {_human(r.flops_forward_per_sample)}), "
        f"{_human(r.flops_per_step)} per step of {r.global_batch}"
    )
    lines += [f"  {k:<28} {_human(v)}" for k, v in r.flops_parts.items()]
    lines.append(f"memory per device (GB) at micro-batch {r.micro_batch} on {r.devices} x {r.gpu}:")
    lines.append(
        f"  {'':<12}{'params':>8}{'grads':>8}{'optim':>8}{'activ':>8}{'trans':>8}{'total':>8}  max micro-batch"
    )
    chosen = (r.chosen.parallel, r.chosen.activation_checkpointing)
    for m in r.memory:
        label = m.parallel + (" + ckpt" if m.activation_checkpointing else "")
        mark = "*" if (m.parallel, m.activation_checkpointing) == chosen else " "
        vals = (m.params_gb, m.grads_gb, m.optimizer_gb, m.activations_gb, m.transient_gb, m.total_gb)
        lines.append(f"{mark} {label:<12}" + "".join(f"{v:8.3g}" for v in vals) + f"  {m.max_micro_batch}")
    lines.append(
        f"batch       global {r.global_batch} = {r.devices} device{'s' if r.devices > 1 else ''} x micro-batch {r.micro_batch} x "
        f"{r.grad_accum} accumulation steps"
    )
    lines.append(
        f"time        {r.step_seconds:.3g} s per step at MFU {r.mfu:g} of {r.peak_tflops:g} TFLOP/s; "
        f"{r.steps:,} steps = {r.total_days:.3g} days"
    )
    lines += [f"assumed     {a}" for a in r.assumptions] + [f"note        {n}" for n in r.notes]
    return "\n".join(lines)
