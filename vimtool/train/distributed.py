"""Distributed training in one place: FSDP2 sharding, activation checkpointing, sharded checkpoints (DCP).

The engine (train/engine.py) stays one loop; what differs between `train.parallel: ddp` and `fsdp` lives here.

- `ddp` (the default): accelerate wraps each trained module in DistributedDataParallel (engine.py, unchanged).
- `fsdp`: `parallelize()` applies, per trained module, activation checkpointing (when asked), then
  `torch.distributed.fsdp.fully_shard` (FSDP2) on every transformer `Block` (vimtool/nn/transformer.py: all three
  model families share it), then on the module itself (the root unit holds the embeddings, heads, norms, the
  tokenizer's quantizer and its convolution-free patch layers), under one `MixedPrecisionPolicy` (bf16 parameters
  and compute, fp32 gradient reduction) when the run trains in bf16. Parameters become DTensors sharded on dim 0;
  accelerate does not wrap them (with `Accelerator(cpu=True)` it silently ignores an FSDP plugin and uses DDP, so
  the engine shards itself). Optimizer groups are built AFTER sharding from the sharded parameters, with the
  per-parameter hints (`lr_mult`, `no_weight_decay`: NOBLE's multipliers) carried over from the originals.
- The tokenizer's discriminator is sharded too (its root only: it has no Blocks; the lazy R1 double backward
  works under FSDP2); a frozen network (the perceptual VGG) stays a full copy on each rank: it has no gradients
  or optimizer state to shard, and sharding would add an all-gather to each of its forwards.
- EMA shadows of a sharded model are DTensors sharded like it (train/ema.py works on them unchanged).
- A 1-process `fsdp` run forms a 1-rank gloo group of its own, so the same checkpoints resume on 1 or N processes.

Checkpoints under FSDP: `state/dcp/` holds the models, optimizers and EMA as a `torch.distributed.checkpoint`
(DCP) folder, written by every rank (its own shards) and readable by any number of processes (resharded on load);
model.safetensors + config.json beside it hold the consolidated weights (gathered to rank 0), as in every run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vimtool.nn.transformer import Block

log = logging.getLogger(__name__)

PARALLEL_MODES = ("ddp", "fsdp")
_PARAM_HINTS = ("lr_mult", "no_weight_decay")  # attributes layers set on parameters for train/optim.py


# ------------------------------------------------------------------------------------------ process group
def fsdp_mesh(device: torch.device):
    """The 1-D device mesh FSDP shards over; a run started without a launcher gets a 1-rank group of its own.

    Returns (mesh, owns_group): the caller destroys a group it owns when training ends (a second train() in one
    process must be able to form its own)."""
    from torch.distributed.device_mesh import init_device_mesh  # deferred: only FSDP runs need a mesh

    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"  # FSDP's collectives run on the device's tensors
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    return init_device_mesh(device.type, (dist.get_world_size(),)), owns


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


# -------------------------------------------------------------------------------------------- parallelize
def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each transformer Block's activations in the backward instead of keeping them (returns the count)."""
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for b in blocks:
        b.activation_checkpointing = True
    return len(blocks)


def parallelize(
    model: nn.Module, *, mesh=None, activation_checkpointing: bool = False, bf16: bool = False
) -> nn.Module:
    """Activation checkpointing (when asked), then FSDP2 per Block and on the root (when `mesh` is given).

    In place (fully_shard swaps the module's class and parameters); returns `model` for convenience."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if mesh is None:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # deferred: only FSDP runs shard

    hints = {n: {a: getattr(p, a) for a in _PARAM_HINTS if hasattr(p, a)} for n, p in model.named_parameters()}
    # bf16 params/compute with fp32 gradient reduction (summing many bf16 shards would lose the small gradients)
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    for n, p in model.named_parameters():  # fully_shard made new Parameter objects: carry the optimizer hints over
        for a, v in hints.get(n, {}).items():
            setattr(p, a, v)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor  # deferred: torch.distributed.tensor imports slowly

    return any(isinstance(p, DTensor) for p in model.parameters())


# ------------------------------------------------------------------------------------------------- a step
def set_gradient_sync(models: Iterable[nn.Module], sync: bool) -> None:
    """FSDP's no_sync: micro-batches before the last accumulate unsharded gradients without reduce-scatter."""
    for m in models:
        m.set_requires_gradient_sync(sync)


def backward_into(loss: torch.Tensor, others: list[torch.Tensor]) -> None:
    """loss.backward() whose gradients reach every parameter except `others` (another optimizer's parameters).

    Under FSDP `backward(inputs=...)` cannot name the sharded parameters (the graph holds their unsharded copies),
    so the other parameters' gradients are set aside before and put back after: a generator loss that flows
    through the discriminator leaves the discriminator's accumulated gradients as they were."""
    saved = [p.grad for p in others]
    for p in others:
        p.grad = None
    loss.backward()
    for p, g in zip(others, saved):
        p.grad = g


def clip_grad_norm_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip to a global norm over all ranks' shards (a DTensor norm is reduced over the mesh, then applied)."""
    from torch.distributed.tensor import DTensor  # deferred: torch.distributed.tensor imports slowly

    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


# ------------------------------------------------------------------------------------ outside a forward
@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[nn.Module]:
    """Full, writable parameters of `module` inside; on exit rank 0's values are on every rank (resharded).

    For changes made outside the optimizer (the tokenizer's dead-code restart and k-means init): each rank may
    compute its own, rank 0's decision wins, so every process keeps an identical codebook. `module` must not be
    an FSDP unit itself (call it on a submodule, e.g. the quantizer) and no forward may run inside."""
    from torch.distributed.tensor import DTensor, distribute_tensor  # deferred: torch.distributed.tensor is slow

    sharded = {n: p for n, p in module.named_parameters(recurse=False) if isinstance(p, DTensor)}
    full = {n: nn.Parameter(p.full_tensor(), requires_grad=p.requires_grad) for n, p in sharded.items()}
    try:
        for n, p in full.items():
            module._parameters[n] = p
        yield module
    finally:
        for n, p in sharded.items():
            module._parameters[n] = p
    if world() > 1:
        for n, p in module.named_parameters(recurse=False):
            src = full[n] if n in full else p
            dist.broadcast(src.data, src=0)
    for n, p in sharded.items():
        with torch.no_grad():
            p.to_local().copy_(distribute_tensor(full[n].data, p.device_mesh, p.placements).to_local())


@contextlib.contextmanager
def unsharded(model: nn.Module) -> Iterator[nn.Module]:
    """Read-only full parameters of an FSDP root outside its forward (its Blocks gather their own when called).

    Every rank must run the same code inside (the gathers are collectives)."""
    if not hasattr(model, "unshard"):
        yield model
        return
    model.unshard()
    try:
        yield model
    finally:
        model.reshard()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The consolidated weights on rank 0 (CPU; empty dict elsewhere). Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # deferred: FSDP only

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DTensors gathered to plain CPU tensors (collective); plain tensors pass through."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in tensors.items()}


# ----------------------------------------------------------------------------------- sharded checkpoints
def _state(models: dict[str, nn.Module], optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]], ema):
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state: dict[str, Any] = {
        "models": {n: get_model_state_dict(m) for n, m in models.items()},
        "optimizers": {n: get_optimizer_state_dict(m, o) for n, (m, o) in optimizers.items()},
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def save_sharded(folder: Path, models, optimizers, ema) -> None:
    """Every rank writes its shards of models, optimizers ({name: (module, optimizer)}) and EMA into `folder`."""
    import torch.distributed.checkpoint as dcp  # deferred: FSDP only

    dcp.save(_state(models, optimizers, ema), checkpoint_id=str(folder))


def load_sharded(folder: Path, models, optimizers, ema) -> None:
    """Read a `save_sharded` folder written by any number of processes into this run's shards."""
    import torch.distributed.checkpoint as dcp  # deferred: FSDP only
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = _state(models, optimizers, ema)
    dcp.load(state, checkpoint_id=str(folder))
    for n, m in models.items():
        set_model_state_dict(m, state["models"][n])
    for n, (m, o) in optimizers.items():
        set_optimizer_state_dict(m, o, state["optimizers"][n])
    if ema is not None:
        ema.load_state_dict(state["ema"])


__all__ = [
    "PARALLEL_MODES",
    "apply_activation_checkpointing",
    "backward_into",
    "clip_grad_norm_",
    "fsdp_mesh",
    "full_state_dict",
    "full_tensors",
    "gathered",
    "is_sharded",
    "load_sharded",
    "parallelize",
    "save_sharded",
    "set_gradient_sync",
    "unsharded",
]
