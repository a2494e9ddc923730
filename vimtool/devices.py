"""Which torch device a command runs on: one resolver for `--device` everywhere (sample, probe, eval-fid)."""

from __future__ import annotations

import torch

from vimtool.errors import VimtoolError


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when visible, else cpu; otherwise the named device, checked to exist here."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise VimtoolError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VimtoolError(f"--device {spec}: no CUDA GPU is visible here; use --device cpu")
    return device
