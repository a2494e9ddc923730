"""Learning-rate schedules of the papers, as a pure function of the step (so resuming needs no scheduler state).

`lr_factor(step, ...)` multiplies every optimizer's base lr (and each parameter group's `lr_mult`):

- ``cosine``   linear warmup to lr over `warmup_steps`, then cosine to `min_lr` at the last step
               (ViT-VQGAN: warmup to 1e-4 over 50k steps, cosine to 5e-5; docs/PAPERS.md section 1).
- ``exp``      linear warmup, constant until `decay_start`, then exponential decay reaching `min_lr` at the last
               step (VIM: warmup to 4.5e-4 over 5k, decay to 1e-5 from step 80k; Parti: decay right after
               warmup -- `decay_start` at or before `warmup_steps` means "right after warmup").
- ``constant`` linear warmup, then constant.

Steps are 0-based; step s uses factor(s), so the first update already has lr/warmup (never exactly 0).
"""

from __future__ import annotations

import math

from vimtool.errors import VimtoolError

SCHEDULES = ("cosine", "exp", "constant")


def lr_factor(
    step: int, *, schedule: str, steps: int, warmup_steps: int, lr: float, min_lr: float, decay_start: int = 0
) -> float:
    """Multiplier of the base lr at 0-based `step` (1.0 = the peak lr)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    floor = min_lr / lr if lr > 0 else 0.0
    if schedule == "cosine":
        span = max(1, steps - 1 - warmup_steps)
        progress = min(1.0, max(0.0, (step - warmup_steps) / span))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "exp":
        start = max(decay_start, warmup_steps)
        if step < start:
            return 1.0
        span = max(1, steps - 1 - start)
        progress = min(1.0, (step - start) / span)
        return floor**progress  # lr * (min_lr/lr)^progress: geometric from lr to min_lr
    raise VimtoolError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")


def check_schedule(*, schedule: str, lr: float, min_lr: float) -> None:
    """Reject settings the schedules cannot honour, with what to change."""
    if schedule not in SCHEDULES:
        raise VimtoolError(f"train.schedule {schedule!r} is not one of {', '.join(SCHEDULES)}")
    if lr <= 0:
        raise VimtoolError(f"train.lr must be > 0, got {lr}")
    if min_lr < 0 or min_lr > lr:
        raise VimtoolError(f"train.min_lr must be in [0, lr={lr}], got {min_lr}")
    if schedule == "exp" and min_lr <= 0:
        raise VimtoolError("train.schedule=exp decays geometrically to train.min_lr, which must be > 0 (VIM uses 1e-5)")
