"""How images reach the Inception's 299x299 input: the resize is part of the metric, so it is named on the card.

- `torch-bilinear` (pytorch-fid 0.3.0, the default): `F.interpolate(bilinear, align_corners=False)` without
  antialiasing, inside the network, on [0, 1] floats.
- `pil-bicubic` (clean-fid's "clean" mode, Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in
  GAN Evaluation"): each channel as a float32 PIL image ('F' mode) resized with PIL's antialiased bicubic filter to
  299x299, clipped to [0, 255]. We then divide by 255 and feed pytorch-fid's network (whose own 299 -> 299 resize
  is the identity), so the network and its `2x - 1` scaling stay pytorch-fid's; clean-fid's own network scales by
  `(x - 128) / 128` instead, so only the resize, not clean-fid's full protocol, is reproduced.

Different resizes give different FIDs (clean-fid's paper: several points at low resolution), which is why
`eval-fid` refuses to compare sets of different resolutions until a resize is chosen explicitly.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vimtool.errors import VimtoolError
from vimtool.metrics.inception import INPUT_SIZE

RESIZE_MODES = ("torch-bilinear", "pil-bicubic")
DEFAULT_RESIZE = "torch-bilinear"

DESCRIPTIONS = {
    "torch-bilinear": "bilinear 299x299, align_corners=False, no antialias (torch F.interpolate; pytorch-fid 0.3.0)",
    "pil-bicubic": "PIL bicubic (antialiased) per channel on float32 0-255 to 299x299, clipped to [0, 255], / 255 "
    "(clean-fid's 'clean' resize)",
}


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise VimtoolError(f"--resize {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    return mode


def pil_bicubic_299(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 299x299x3 float32 in [0, 255], clean-fid's `resize_single_channel` applied per channel."""
    channels = []
    for c in range(3):
        im = Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
        im = im.resize((INPUT_SIZE, INPUT_SIZE), resample=Image.BICUBIC)
        channels.append(np.asarray(im).clip(0, 255))
    return np.stack(channels, axis=2)  # (299, 299, 3) float32


def pil_bicubic_batch(batch: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 arrays (any sizes) -> (B, 3, 299, 299) float32 in [0, 1] on `device`."""
    x = torch.from_numpy(np.stack([pil_bicubic_299(a) for a in batch])).to(device)  # (B, 299, 299, 3)
    return x.permute(0, 3, 1, 2).div(255)  # (B, 3, 299, 299)
