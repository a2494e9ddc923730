"""Vector quantizers for the ViT-VQGAN tokenizer (Yu et al. 2021, arXiv 2110.04627, section 3.2).

Two kinds, one class:

- ``factorized`` (the paper's default): project the encoder output down to a small lookup space (dim 32),
  l2-normalize both the projected vector and every code, take the nearest code (on the unit sphere nearest
  in Euclidean distance = largest cosine), then project the chosen code back up to the decoder width.
  Section 3.2: "factorized codes" + "l2-normalized codes" raise codebook usage from a few % to ~96% (Table 4).
- ``plain`` (Table 4's "no l2-normalization" ablation, as in the original VQ-VAE/VQGAN): lookup in the full
  encoder width, no normalization; it is here to show the codebook collapse the paper reports.

Loss (eq. 1 of VQ-VAE, kept by ViT-VQGAN):  ||sg[z] - e||^2 + beta * ||z - sg[e]||^2 with beta = 0.25, computed
in the lookup space (after normalization for ``factorized``). The codebook learns from the first term only, the
encoder from the second term and, through the straight-through estimator z + sg[e - z], from the decoder.
No EMA codebook: the paper notes EMA updates on l2-normalized codes blow up the code norms.
Codebook init: random (the paper) or, through ``kmeans_init``, data-dependent k-means centroids of encoder outputs
(an init done once by the training task, not a restart; see vimtool/train/tokenizer.py for when and why).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

QuantizerKind = Literal["factorized", "plain"]


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with a straight-through gradient.

    ``forward(z (B, T, in_dim)) -> (z_q (B, T, out_dim), vq_loss scalar, ids (B, T) long)``;
    ``embed(ids (B, T)) -> (B, T, out_dim)`` is the decoder's entry from token ids alone.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        codebook_size: int,
        lookup_dim: int = 32,
        kind: QuantizerKind = "factorized",
        beta: float = 0.25,
    ) -> None:
        super().__init__()
        if kind not in ("factorized", "plain"):
            raise ValueError(f"unknown quantizer kind {kind!r}")
        self.kind = kind
        self.codebook_size = codebook_size
        self.beta = beta
        self.l2_normalize = kind == "factorized"
        if kind == "factorized":
            self.lookup_dim = lookup_dim
            self.down: nn.Module = nn.Linear(in_dim, lookup_dim)
            self.up: nn.Module = nn.Linear(lookup_dim, out_dim)
            # Unit-norm codes in: N(0, 1) weights give the decoder inputs of unit scale per channel, the scale of
            # its sin-cos positions (a small init would let positions drown the codes at the start).
            nn.init.normal_(self.up.weight, std=1.0)
            nn.init.zeros_(self.up.bias)
            # Codes live on the unit sphere after normalization, so their scale at init is irrelevant.
            self.codebook = nn.Parameter(torch.randn(codebook_size, lookup_dim))
        else:
            # Unfactorized lookup in the encoder's own width with the VQGAN-style uniform(-1/K, 1/K) init.
            self.lookup_dim = in_dim
            self.down = nn.Identity()
            self.up = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)
            self.codebook = nn.Parameter(
                torch.empty(codebook_size, in_dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
            )
        # Codebooks are embeddings: the engine leaves them out of weight decay (decay would shrink plain codes).
        self.codebook.no_weight_decay = True

    def _codes(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1) if self.l2_normalize else self.codebook

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output -> lookup space (down-projected and l2-normalized for ``factorized``)."""
        z = self.down(z)
        return F.normalize(z, dim=-1) if self.l2_normalize else z

    @torch.no_grad()
    def nearest(self, z_lookup: torch.Tensor) -> torch.Tensor:
        """(B, T, L) lookup-space vectors -> (B, T) ids of the nearest codes (squared Euclidean distance)."""
        codes = self._codes()
        flat = z_lookup.reshape(-1, z_lookup.shape[-1]).float()  # (B*T, L)
        # ||z||^2 is the same for every code, so argmin ||z - e||^2 = argmin (||e||^2 - 2 z.e).
        dist = codes.float().pow(2).sum(-1)[None, :] - 2.0 * flat @ codes.float().t()  # (B*T, K)
        return dist.argmin(dim=-1).view(z_lookup.shape[:-1])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (z_q (B, T, out_dim), vq_loss, ids (B, T), lookup-space vectors (B, T, L) detached)."""
        z_l = self.project(z)  # (B, T, L)
        ids = self.nearest(z_l)  # (B, T)
        e = F.embedding(ids, self._codes())  # (B, T, L), differentiable w.r.t. the codebook
        codebook_loss = F.mse_loss(e, z_l.detach())
        commit_loss = F.mse_loss(z_l, e.detach())
        vq_loss = codebook_loss + self.beta * commit_loss
        z_q = z_l + (e - z_l).detach()  # straight-through: forward = e, backward = identity to z_l
        return self.up(z_q), vq_loss, ids, z_l.detach()

    @torch.no_grad()
    def restart_codes(self, dead: torch.Tensor, samples: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Optional dead-code restart (NOT in the paper; off unless asked for, see train/tokenizer.py).

        Re-initialize the codes where ``dead`` (K,) is True to rows of ``samples`` (N, L), lookup-space encoder
        outputs of the current batch (the codebook-reset trick of Jukebox / Williams et al. 2020), drawn with
        probability proportional to their squared distance from their current code (as k-means++ seeds): on
        images that are mostly flat background, uniform draws would put nearly every restarted code on the one
        background vector, where all but one die again. Returns the number of codes restarted.
        Call between steps, never between forward and backward.
        """
        idx = dead.nonzero().flatten()
        if idx.numel() == 0 or samples.numel() == 0:
            return 0
        err = (
            (samples - F.embedding(self.nearest(samples[None])[0], self._codes())).float().pow(2).sum(-1).cpu()
        )  # (N,)
        if not bool(err.sum() > 0):
            err = torch.ones_like(err)
        pick = torch.multinomial(err, idx.numel(), replacement=idx.numel() > samples.shape[0], generator=generator)
        pick = pick.to(samples.device)
        self.codebook.data[idx.to(self.codebook.device)] = samples[pick].to(self.codebook.dtype)
        return int(idx.numel())

    @torch.no_grad()
    def kmeans_init(self, samples: torch.Tensor, iters: int = 10, generator: torch.Generator | None = None) -> int:
        """Data-dependent codebook init (once, before training; not a restart): k-means++ seeds + Lloyd steps.

        ``samples`` (N, L) are lookup-space encoder outputs (``project``'s output: unit vectors for
        ``factorized``). The codes become k-means centroids of them: spherical k-means (cosine assignment,
        re-normalized means) for ``factorized``, Euclidean for ``plain``, so both quantizers start with every code
        on the data, the same recipe (Jukebox; vector-quantize-pytorch ``kmeans_init``). Why it is needed: a
        random codebook meets encoder outputs that at init fill a small cap of the sphere (measured on the tiny
        tokenizer: mean cosine 0.95 between patches), so only the few codes nearest that cap are ever chosen and
        the rest get no gradient, forever. Duplicate samples (flat backgrounds) never seed two codes while
        distinct ones remain; with fewer distinct samples than codes the rest are seeded on random samples.
        Returns the number of distinct samples. Call before the first forward (no graph may hold the codes).
        """
        x = samples.reshape(-1, samples.shape[-1]).float()  # (N, L)
        if self.l2_normalize:
            x = F.normalize(x, dim=-1)
        n, k = x.shape[0], self.codebook_size
        if n == 0:
            raise ValueError("kmeans_init needs at least one sample")
        dev = x.device
        first = int(torch.randint(n, (1,), generator=generator))
        centers = torch.empty(k, x.shape[1], device=dev)
        centers[0] = x[first]
        d2 = (x - centers[0]).pow(2).sum(-1)  # (N,) squared distance to the nearest seed so far
        for j in range(1, k):
            weights = d2.clamp_min(0).cpu()
            if not bool(weights.sum() > 0):  # every sample already is a seed: repeat random samples
                weights = torch.ones(n)
            pick = int(torch.multinomial(weights, 1, generator=generator))
            centers[j] = x[pick]
            d2 = torch.minimum(d2, (x - centers[j]).pow(2).sum(-1))
        for _ in range(iters):  # Lloyd: assign, then move each code to the mean of its samples
            assign = (centers.pow(2).sum(-1)[None, :] - 2.0 * x @ centers.t()).argmin(-1)  # (N,)
            sums = torch.zeros_like(centers).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=k).to(x.dtype)
            filled = counts > 0  # an empty code keeps its seed
            centers[filled] = sums[filled] / counts[filled, None]
            if self.l2_normalize:
                centers = F.normalize(centers, dim=-1)
        if self.l2_normalize:  # keep the random init's code norms: only directions matter to the lookup, but the
            # norm sets how far one Adam step turns a code (a unit-norm code would turn ~6x faster at lookup dim 32)
            centers = centers * self.codebook.float().norm(dim=-1, keepdim=True)
        self.codebook.data.copy_(centers.to(self.codebook.dtype))
        return int(torch.unique(x, dim=0).shape[0])

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, out_dim) decoder inputs, exactly what ``forward`` gives for those codes."""
        if ids.min() < 0 or ids.max() >= self.codebook_size:
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}); got {int(ids.min())}..{int(ids.max())}")
        return self.up(F.embedding(ids, self._codes()))
