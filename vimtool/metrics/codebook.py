"""Tokenizer health metrics: reconstruction quality and how much of the codebook is alive.

- Reconstruction L2 (MSE) and PSNR on [0, 1] pixels: PSNR = 10 log10(1 / MSE) per image, averaged over images.
- Codebook usage as ViT-VQGAN defines it (arXiv 2110.04627, Table 4 "codebook usage"): the share of the K
  codes that occur among the tokens of 256 images, averaged over consecutive groups of 256 held-out images
  (fewer than 256 images: one group of all of them, reported with ``usage_group`` = its size).
- Codebook perplexity: exp(entropy) of the code histogram over all held-out tokens (K = every code equally
  often; 1 = collapse onto one code).
- Dead codes: codes that never occur among all held-out tokens.

``CodebookHealth`` accumulates batches (images, reconstructions, ids) so evaluation never holds all images.
"""

from __future__ import annotations

import math

import torch

USAGE_GROUP = 256  # images per usage group, as in the paper


def psnr_per_image(x01: torch.Tensor, y01: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] -> (B,) PSNR in dB (capped at 100 dB for identical images)."""
    mse = (x01.float() - y01.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def codebook_usage(ids: torch.Tensor, codebook_size: int, group: int = USAGE_GROUP) -> float:
    """Share of codes used per ``group`` images, averaged over full groups. ``ids``: (N, T) token ids."""
    n = ids.shape[0]
    if n == 0:
        return float("nan")
    if n < group:
        return torch.unique(ids).numel() / codebook_size
    shares = [torch.unique(ids[i : i + group]).numel() / codebook_size for i in range(0, n - group + 1, group)]
    return sum(shares) / len(shares)


def codebook_perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code histogram ``counts`` (K,)."""
    p = counts.double() / counts.sum().clamp_min(1)
    nz = p[p > 0]
    return math.exp(float(-(nz * nz.log()).sum()))


class CodebookHealth:
    """Accumulate held-out batches; ``compute()`` -> dict of the metrics in the module docstring."""

    def __init__(self, codebook_size: int, group: int = USAGE_GROUP) -> None:
        self.codebook_size = codebook_size
        self.group = group
        self.counts = torch.zeros(codebook_size, dtype=torch.long)
        self.ids: list[torch.Tensor] = []
        self.sq_err = 0.0
        self.values = 0
        self.psnr_sum = 0.0
        self.images = 0

    @torch.no_grad()
    def update(self, images: torch.Tensor, recons: torch.Tensor, ids: torch.Tensor) -> None:
        """images, recons: (B, 3, H, W) in [-1, 1]; ids: (B, T) token ids."""
        x = (images.float().cpu() + 1) / 2
        y = ((recons.float().cpu() + 1) / 2).clamp(0, 1)
        err = (x - y).pow(2)
        self.sq_err += float(err.sum())
        self.values += err.numel()
        self.psnr_sum += float(psnr_per_image(x, y).sum())
        self.images += x.shape[0]
        ids = ids.cpu().long()
        self.ids.append(ids)
        self.counts += torch.bincount(ids.flatten(), minlength=self.codebook_size)

    def compute(self) -> dict[str, float]:
        all_ids = torch.cat(self.ids) if self.ids else torch.zeros(0, 1, dtype=torch.long)
        return {
            "recon_l2": self.sq_err / max(self.values, 1),
            "psnr": self.psnr_sum / max(self.images, 1),
            "codebook_usage": codebook_usage(all_ids, self.codebook_size, self.group),
            "usage_group": float(min(self.group, all_ids.shape[0])),
            "codebook_perplexity": codebook_perplexity(self.counts),
            "dead_codes": float(int((self.counts == 0).sum())),
            "images": float(self.images),
        }
