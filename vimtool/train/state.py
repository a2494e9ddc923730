"""What makes a resumed run equal to an uninterrupted one: the data order, the RNG streams, the training state.

Data order. The samples of global step s are a pure function of (seed, s): step s lies in epoch
e = s // steps_per_epoch (steps_per_epoch = len(dataset) // batch_size; the remainder of each epoch is dropped),
and takes positions [k*B, (k+1)*B) of the permutation of epoch e, drawn by a generator seeded from (seed, e).
That global batch is cut into `grad_accum` micro-batches, and each micro-batch into `num_processes` contiguous
slices, one per rank. So 1 process with batch B and 2 processes with B/2 each see the same global batches, and
resuming at step s restarts at exactly the same sample.

Training state (`<checkpoint>/state/`, never pickled weights):
    models/<name>.safetensors   raw weights of every module an optimizer trains (not the EMA)
    ema.safetensors             EMA shadow of "model" (when train.ema > 0)
    optimizers.pt               {name: optimizer.state_dict()}   -- torch.save, read with weights_only=True
    rng_rank<r>.pt              torch/CUDA/numpy/python RNG states of rank r (weights_only-safe types)
    task.safetensors            the task's own state (Task.train_state: the tokenizer's dead-code restart window)
    trainer.json                step, samples seen, epoch, batch layout, parallel mode, seed, versions
Under `train.parallel: fsdp`, models/, ema.safetensors and optimizers.pt are replaced by dcp/: one
torch.distributed.checkpoint folder (each rank's shards), resharded on load (vimtool/train/distributed.py).
The lr schedule is a pure function of the step, so it has no state of its own.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from vimtool.errors import VimtoolError


# -------------------------------------------------------------------------------------------- data order
def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch); hashing keeps nearby (seed, epoch) pairs' permutations unrelated."""
    return int.from_bytes(hashlib.sha256(f"vimtool:{seed}:{epoch}".encode()).digest()[:8], "little") >> 1


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


class RankBatchSampler:
    """Index lists of this rank's micro-batches for global steps [first_step, end_step) of one epoch."""

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        grad_accum: int,
        world_size: int,
        rank: int,
        seed: int,
        epoch: int,
        first_step: int,
        end_step: int,
    ):
        self.perm = epoch_permutation(n, seed, epoch)
        self.batch_size, self.grad_accum, self.world_size, self.rank = batch_size, grad_accum, world_size, rank
        self.steps_per_epoch = n // batch_size
        self.first, self.end = first_step, end_step
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.end - self.first) * self.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.batch_size // self.grad_accum
        per_rank = micro // self.world_size
        for step in range(self.first, self.end):
            k = step - self.epoch * self.steps_per_epoch  # position of this step inside its epoch
            base = k * self.batch_size
            for m in range(self.grad_accum):
                lo = base + m * micro + self.rank * per_rank
                yield self.perm[lo : lo + per_rank].tolist()


# ------------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict[str, Any]:
    """Every RNG a step may draw from, in types torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------ save / load state
def write_module(module: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(module, str(path))  # drops duplicate storage of tied weights


def read_module(module: nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    if not path.is_file():
        raise VimtoolError(
            f"{path} is missing: the checkpoint's training state is incomplete; resume from an earlier checkpoint (point 'latest' at it)"
        )
    try:
        load_model(module, str(path), strict=True, device=str(device))
    except Exception as e:
        raise VimtoolError(
            f"{path} is corrupt or does not fit the model ({' '.join(str(e).split())[:160]}); resume from an earlier checkpoint"
        ) from None


def write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise VimtoolError(
            f"{path} is missing: the checkpoint's training state is incomplete; resume from an earlier checkpoint"
        )
    try:
        return load_file(str(path))
    except Exception as e:
        raise VimtoolError(
            f"{path} is corrupt ({' '.join(str(e).split())[:160]}); resume from an earlier checkpoint"
        ) from None


def torch_save(obj: Any, path: Path) -> None:
    torch.save(obj, path)


def torch_load(path: Path) -> Any:
    if not path.is_file():
        raise VimtoolError(
            f"{path} is missing: the checkpoint's training state is incomplete; resume from an earlier checkpoint"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VimtoolError(
            f"{path} is corrupt or not a vimtool state file ({' '.join(str(e).split())[:160]}); resume from an earlier checkpoint"
        ) from None


def write_json(obj: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise VimtoolError(
            f"{path} is missing: the checkpoint's training state is incomplete; resume from an earlier checkpoint"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VimtoolError(f"{path} is corrupt ({e}); resume from an earlier checkpoint") from None
