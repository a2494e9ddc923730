"""Exponential moving average of a model's weights (optional; `train.ema` = decay, 0 = off).

shadow <- decay * shadow + (1 - decay) * weight after every optimizer step of the "model". The shadow is kept
in float32 whatever the training precision. When EMA is on, the EMA weights are what the checkpoint's
model.safetensors holds (the raw weights live in state/ for resume only). Buffers are copied, not averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().float().clone() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        current = [params[n].detach().float() for n in self.names]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.contiguous() for n, t in zip(self.names, self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[:3]}")
        for n, t in zip(self.names, self.shadow):
            t.copy_(state[n])

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily give `model` the EMA weights (no copy of the model; restored on exit)."""
        params = dict(model.named_parameters())
        saved = {}
        try:
            for n, t in zip(self.names, self.shadow):
                p = params[n]
                saved[n] = p.data
                p.data = t.to(p.dtype)
            yield model
        finally:
            for n, data in saved.items():
                params[n].data = data
