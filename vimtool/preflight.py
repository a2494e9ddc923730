"""A checkpoint's sizes are checked against its weights file before its model is allocated.

A checkpoint is two claims that may disagree: config.json says how big the model is, model.safetensors holds the
weights. Believing the config first meant a 209 KB checkpoint whose config said width 4096 took 27 s and 6.5 GB of
memory before "does not match", and width 65536 asked for 51 GB. `build_for_weights` builds the model under an
allocation budget set by the weights file's header (safetensors keeps every tensor's shape in a JSON header, read
without loading anything): a model bigger than the file can hold is refused at its first tensor past the budget,
before that tensor exists; then the built model's tensor shapes are compared with the header's.

Why a budget rather than building on the meta device: the first arithmetic on meta tensors (`randn(...) * 0.02`,
sin-cos tables) imports torch._dynamo, 1-3 s added to every `sample` and `probe` start-up; the budget costs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.overrides import TorchFunctionMode

from vimtool.errors import VimtoolError

# Tensors a model may build beyond its saved weights (non-persistent buffers, a tied weight made before it is tied):
# up to as many elements again as the file holds, plus this many.
_SLACK = 1 << 20
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.randn, torch.rand}


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in a safetensors file, from its header only."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (a safe_open has no iter)
    except (SafetensorError, OSError, ValueError) as e:
        raise VimtoolError(
            f"{weights} is corrupt ({' '.join(str(e).split())[:160]}); re-save or re-download the checkpoint"
        ) from None


class _Over(Exception):
    pass


class _AllocationBudget(TorchFunctionMode):
    """Counts the elements every tensor factory is asked for and stops the one that would pass the budget."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.left = budget

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            size = kwargs.get("size", args[0] if args and isinstance(args[0], (tuple, list)) else None)
            if size is None:  # torch.empty(3, 4): the leading ints
                size = [a for a in args if isinstance(a, int)]
            if any(int(s) < 0 for s in size):
                raise _Over(f"a tensor of negative size {tuple(size)}")
            self.left -= math.prod(int(s) for s in size)
            if self.left < 0:
                raise _Over(f"a tensor of size {tuple(int(s) for s in size)}")
        return func(*args, **kwargs)


def build_for_weights(model_class: type, config, weights: Path, where: Path) -> nn.Module:
    """`model_class(config)`, refused before allocation when the config describes a model that `weights` (a
    safetensors file) cannot hold, or one whose tensor shapes differ from the file's. `where`: the config.json, for
    the messages."""
    shapes = weight_shapes(weights)
    stored = sum(math.prod(s) for s in shapes.values())
    budget = 2 * stored + _SLACK
    try:
        with _AllocationBudget(budget):
            model = model_class(config)
    except _Over as e:
        raise VimtoolError(
            f"{where} describes a model larger than {weights.name} holds ({stored:,} values; building it asked for "
            f"{e} past that): the config or the weights file is wrong; re-save or re-download the checkpoint"
        ) from None
    except VimtoolError as e:
        raise VimtoolError(f"{where}: {e}") from None
    except (RuntimeError, ValueError) as e:
        raise VimtoolError(
            f"{where} describes a model that cannot be built ({' '.join(str(e).split())[:160]}); re-save or re-download the checkpoint"
        ) from None
    built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k}: config {built[k]} vs file {s}" for k, s in shapes.items() if k in built and built[k] != s]
    if wrong:
        raise VimtoolError(
            f"{weights} does not match {where} ({len(wrong)} tensor shape(s) differ, e.g. {'; '.join(wrong[:2])}); "
            "re-save or re-download the checkpoint"
        )
    return model
