"""LPIPS-style perceptual loss on VGG16 features (Zhang et al. 2018, arXiv 1801.03924), our own VGG16.

ViT-VQGAN (arXiv 2110.04627, section 3.3) adds 0.1 x a VGG-based perceptual loss. We compute LPIPS v0.1:
scale the [-1, 1] images with LPIPS's shift/scale, take VGG16 activations after relu1_2, relu2_2, relu3_3,
relu4_3 and relu5_3, unit-normalize each activation over channels, square the difference, weight channels
with LPIPS's learned 1x1 "lin" layers, average over space and sum over the five layers.

The weights cannot ship with the package. Each file resolves in one fixed order: explicit path
option -> local cache -> download of the standard file -> a one-line ``VimtoolError`` naming the file and the
option. Never a silent fallback to random weights. The two files:

- ``vgg16-397923af.pth``: torchvision's ImageNet VGG16 (keys ``features.N.weight/bias``; our module keeps the
  same indices so the file loads as is). Searched in the vimtool cache and in torch's hub checkpoint folder.
- ``lpips_v0.1_vgg.pth``: LPIPS v0.1's ``weights/v0.1/vgg.pth`` (keys ``linK.model.1.weight``, shapes
  (1, C, 1, 1)). ``lpips_weights: uniform`` explicitly asks for equal channel weights instead (the
  "baseline" variant of the LPIPS paper), which needs only the VGG16 file.

A loss weight of 0 never builds this module, so training without the perceptual term needs no files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.atomic import atomic_path
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_FILE = "lpips_v0.1_vgg.pth"
LPIPS_URL = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth"

# torchvision's VGG16 "D" configuration; numbers are conv widths, "M" a 2x2 max-pool.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Indices in `features` that end each LPIPS slice: after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_LPIPS_TAPS = (4, 9, 16, 23, 30)
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


@dataclass
class PerceptualConfig:
    """Where the perceptual loss finds its weights (see the module docstring for the resolution order)."""

    vgg_weights: str | None = None  # path to vgg16-397923af.pth
    lpips_weights: str | None = None  # path to LPIPS v0.1 vgg.pth, or "uniform" for equal channel weights
    download: bool = True  # try the standard URL when the file is neither given nor cached


def cache_dir() -> Path:
    """vimtool's weight cache: $VIMTOOL_CACHE or ~/.cache/vimtool/weights."""
    return Path(os.environ.get("VIMTOOL_CACHE", Path.home() / ".cache" / "vimtool" / "weights")).expanduser()


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("VIMTOOL_OFFLINE", "HF_HUB_OFFLINE"))


def resolve_weights(file_name: str, url: str, explicit: str | None, option: str, download: bool) -> Path:
    """Explicit path -> cache (vimtool's, then torch hub's) -> download -> VimtoolError naming file and option."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise VimtoolError(f"{option}={explicit}: file not found; give the path of {file_name}")
        return p
    candidates = [cache_dir() / file_name, Path(torch.hub.get_dir()) / "checkpoints" / file_name]
    for p in candidates:
        if p.is_file():
            return p
    why = "downloads are off"
    if download and not _offline():
        target = candidates[0]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s from %s", file_name, url)
            with atomic_path(target) as tmp:  # a cached file is always complete
                torch.hub.download_url_to_file(url, str(tmp), progress=False)
            return target
        except Exception as e:  # no network, proxy, HTTP error: report, do not fall back to random weights
            why = f"download from {url} failed ({type(e).__name__})"
    elif download:
        why = "offline mode (HF_HUB_OFFLINE/VIMTOOL_OFFLINE) forbids the download"
    raise VimtoolError(
        f"perceptual loss needs {file_name} ({why}): pass --set {option}=PATH, put it in {candidates[0].parent}, "
        f"or train without it with --set loss.perceptual=0"
    )


class VGG16Features(nn.Module):
    """The convolutional part of VGG16 with torchvision's layer indices; returns the five LPIPS taps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        start = 0
        for end in _LPIPS_TAPS:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs


class LPIPS(nn.Module):
    """LPIPS v0.1 distance on images in [-1, 1]; frozen (no parameter is trained)."""

    def __init__(self, vgg_state: dict[str, torch.Tensor], lin_state: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.vgg = VGG16Features()
        feats = {k: v for k, v in vgg_state.items() if k.startswith("features.")}
        missing, unexpected = self.vgg.load_state_dict(feats, strict=False)
        if missing or unexpected:
            raise VimtoolError(
                f"VGG16 weights do not match torchvision's vgg16 (missing {missing[:2]}); use {VGG16_FILE}"
            )
        for k, c in enumerate(_LPIPS_CHANNELS):
            if lin_state is None:
                w = torch.full((1, c, 1, 1), 1.0 / c)  # "uniform": explicit choice, documented above
            else:
                key = f"lin{k}.model.1.weight"
                if key not in lin_state or tuple(lin_state[key].shape) != (1, c, 1, 1):
                    raise VimtoolError(
                        f"LPIPS weights lack {key} of shape (1, {c}, 1, 1); use LPIPS v0.1 vgg.pth ({LPIPS_FILE})"
                    )
                w = lin_state[key].float()
            self.register_buffer(f"lin{k}", w, persistent=False)
        # LPIPS's ScalingLayer constants for inputs in [-1, 1].
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:  # always eval: no dropout/batch-norm state to change
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance between two (B, 3, H, W) batches in [-1, 1] (differentiable w.r.t. both)."""
        fx = self.vgg((x.float() - self.shift) / self.scale)
        fy = self.vgg((y.float() - self.shift) / self.scale)
        total = x.new_zeros((), dtype=torch.float32)
        for k, (a, b) in enumerate(zip(fx, fy)):
            w = getattr(self, f"lin{k}")
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((a - b).pow(2), w).mean()
        return total


def load_lpips(cfg: PerceptualConfig, option_prefix: str = "loss.perceptual_weights") -> LPIPS:
    """Resolve both weight files (or fail with a one-line error) and build the frozen LPIPS module."""
    vgg_path = resolve_weights(VGG16_FILE, VGG16_URL, cfg.vgg_weights, f"{option_prefix}.vgg_weights", cfg.download)
    lin_state = None
    if (cfg.lpips_weights or "").lower() != "uniform":
        lin_path = resolve_weights(
            LPIPS_FILE, LPIPS_URL, cfg.lpips_weights, f"{option_prefix}.lpips_weights", cfg.download
        )
        lin_state = _load_state(lin_path)
    return LPIPS(_load_state(vgg_path), lin_state)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise VimtoolError(f"cannot read weights file {path} ({type(e).__name__}); download it again") from None
    if not isinstance(state, dict):
        raise VimtoolError(f"weights file {path} does not hold a state dict; use the standard file")
    return state
