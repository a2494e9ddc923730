"""StyleGAN-style discriminator for ViT-VQGAN training (arXiv 2110.04627, section 3.3; Table 4 shows it beats
a PatchGAN: rFID 1.55 vs 3.88).

The residual architecture of StyleGAN2 (Karras et al. 2020, arXiv 1912.04958, Figure 7c): a 1x1 "fromRGB"
conv, then one residual block per resolution (two 3x3 convs, 2x downsampling, a 1x1 skip; the sum scaled by
1/sqrt(2) to keep the variance), down to 4x4; there a minibatch-standard-deviation channel (Karras et al.
2018, section 3) lets the discriminator see the diversity of the batch, then a 3x3 conv and two dense layers
give one logit per image. Leaky ReLU 0.2 throughout. Omitted for simplicity: equalized learning rate and the
FIR blur before downsampling (we use 2x2 average pooling). Works for any power-of-two multiple of 4 in size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DiscriminatorConfig:
    """Channels double per halving of the resolution: ch(r) = min(max_channels, channels * image_size / r)."""

    image_size: int = 256
    channels: int = 64
    max_channels: int = 512
    mbstd_group: int = 4  # images per minibatch-stddev group (StyleGAN2 default 4)


class ResidualDownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), 0.2), 2)
        s = self.skip(F.avg_pool2d(x, 2))
        return (h + s) / math.sqrt(2.0)  # StyleGAN2: keep unit variance through the residual sum


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one channel: the mean over features of the per-group std over images (ProGAN section 3)."""
    b, c, h, w = x.shape
    g = min(group, b)
    while b % g:  # a group size that divides the batch (a last partial batch still works)
        g -= 1
    y = x.float().view(g, b // g, c, h, w)  # (G, B/G, C, H, W)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (B/G, C, H, W)
    y = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)  # (B/G, 1, 1, 1)
    y = y.repeat(g, 1, h, w).to(x.dtype)  # (B, 1, H, W)
    return torch.cat([x, y], dim=1)


class StyleGANDiscriminator(nn.Module):
    """(B, 3, S, S) images in [-1, 1] -> (B,) real/fake logits."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        s = config.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"discriminator image_size must be a power of two >= 8, got {s}")

        def ch(res: int) -> int:
            return min(config.max_channels, config.channels * (s // res))

        self.from_rgb = nn.Conv2d(3, ch(s), 1)
        blocks = []
        res = s
        while res > 4:
            blocks.append(ResidualDownBlock(ch(res), ch(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = ch(4)
        self.final_conv = nn.Conv2d(c4 + 1, c4, 3, padding=1)
        self.fc = nn.Linear(c4 * 16, c4)
        self.out = nn.Linear(c4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.from_rgb(x), 0.2)
        h = self.blocks(h)  # (B, C4, 4, 4)
        h = minibatch_stddev(h, self.config.mbstd_group)  # (B, C4 + 1, 4, 4)
        h = F.leaky_relu(self.final_conv(h), 0.2)
        h = F.leaky_relu(self.fc(h.flatten(1)), 0.2)  # (B, C4)
        return self.out(h).squeeze(1)
