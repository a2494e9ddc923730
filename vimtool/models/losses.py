"""The ViT-VQGAN training objective (Yu et al. 2021, arXiv 2110.04627, section 3.3).

    L = L_VQ + 0.1 L_adv + 0.1 L_perceptual + 0.1 L_logit-laplace + 1.0 L_2          (paper defaults)

This file holds every term except the perceptual one (vimtool/models/perceptual.py, it needs VGG16 weights):

- ``logit_laplace_nll``: the logit-Laplace likelihood of DALL-E (Ramesh et al. 2021, arXiv 2102.12092,
  section A.3): pixels in [0, 1] are squeezed into (eps, 1 - eps) with eps = 0.1 so that the logit is finite,
  and the decoder predicts, per pixel channel, a location mu (in logit space; sigmoid(mu) is the mean image)
  and a log-scale ln b. The density on (0, 1) is

      f(x | mu, b) = 1 / (2 b x (1 - x)) * exp(-|logit(x) - mu| / b)

  so the per-value negative log-likelihood is ln 2 + ln b + ln x + ln(1 - x) + |logit(x) - mu| / b.
  This is *not* an L1 loss under another name: the scale is learned and the x(1-x) Jacobian is there.
- non-saturating GAN losses (Goodfellow et al. 2014, as used by StyleGAN) and the R1 penalty
  (Mescheder et al. 2018): gamma / 2 * E ||grad_x D(x)||^2 on real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vimtool.models.perceptual import PerceptualConfig

LOGIT_LAPLACE_EPS = 0.1  # DALL-E's epsilon (its `map_pixels` / `unmap_pixels`)


@dataclass
class TokenizerLossConfig:
    """Weights of each term (paper defaults) and the adversarial schedule.

    A weight of 0 switches a term off entirely (perceptual 0 -> no VGG weights needed; adversarial 0 -> no
    discriminator is trained). ``disc_start`` is the step where the discriminator and the adversarial term
    start (unstated in the paper; VQGAN-style codebases start it late so the codebook settles first).
    """

    vq: float = 1.0
    l2: float = 1.0
    # NOT in the paper (0 = off): mean absolute error on [-1, 1] pixels. Where the code leaves an edge's sub-pixel
    # place uncertain, L2 is minimised by the mean (a soft, wide edge) and L1 by the median (a sharp one).
    l1: float = 0.0
    logit_laplace: float = 0.1
    perceptual: float = 0.1
    adversarial: float = 0.1
    disc_start: int = 0
    r1_gamma: float = 10.0  # R1 weight (StyleGAN2 uses 10 at 256^2 on FFHQ-like data)
    r1_every: int = 4  # lazy R1 (StyleGAN2 section 3.1): every N discriminator steps, scaled by N
    disc_lr_mult: float = 1.0  # discriminator lr = train.lr * this
    perceptual_weights: PerceptualConfig = field(default_factory=PerceptualConfig)


def map_pixels(x01: torch.Tensor, eps: float = LOGIT_LAPLACE_EPS) -> torch.Tensor:
    """[0, 1] -> [eps, 1 - eps] (DALL-E's `map_pixels`)."""
    return (1.0 - 2.0 * eps) * x01 + eps


def unmap_pixels(x: torch.Tensor, eps: float = LOGIT_LAPLACE_EPS) -> torch.Tensor:
    """[eps, 1 - eps] -> [0, 1], clamped (DALL-E's `unmap_pixels`)."""
    return ((x - eps) / (1.0 - 2.0 * eps)).clamp(0.0, 1.0)


def logit_laplace_nll(
    x01: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor, eps: float = LOGIT_LAPLACE_EPS
) -> torch.Tensor:
    """Mean per-value negative log-likelihood of target pixels ``x01`` in [0, 1] under logit-Laplace(mu, e^log_scale).

    ``mu`` is the location in logit space (the decoder's pre-sigmoid output), ``log_scale`` is ln b; all three
    tensors have the same shape, e.g. (B, 3, H, W). Can be negative (it is a density, not a probability).
    """
    x = map_pixels(x01.float(), eps)
    mu, log_scale = mu.float(), log_scale.float()
    logit_x = torch.log(x) - torch.log1p(-x)
    nll = math.log(2.0) + log_scale + torch.log(x) + torch.log1p(-x) + (logit_x - mu).abs() * torch.exp(-log_scale)
    return nll.mean()


def l2_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error on [-1, 1] images (the paper's L_2 term)."""
    return F.mse_loss(recon.float(), target.float())


def l1_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error on [-1, 1] images (not in the paper; sharper edges than L2 where the code is unsure)."""
    return F.l1_loss(recon.float(), target.float())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: -log sigmoid(D(G(z))) = softplus(-D(G(z)))."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss: softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(disc: torch.nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E ||grad_x D(x)||^2 over real images, D(real) logits), with a graph so the penalty can be backpropagated.

    Returns the logits too so the caller can reuse this forward pass for the discriminator loss.
    """
    real = real.detach().requires_grad_(True)
    logits = disc(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean(), logits
