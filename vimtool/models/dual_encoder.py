"""A small contrastive image-text dual encoder (CLIP-style): the learned reranker of Parti's samples.

Parti (arXiv 2206.10789, docs/PAPERS.md section 3) draws 16 images per prompt and keeps the ones a contrastive
image-text model (CoCa there) finds closest to the prompt. This is that model at CPU scale, trained on the same
captioned images as Parti (`vimtool train-reranker`, vimtool/train/reranker.py) and used by
`vimtool sample --rerank clip:FOLDER` (vimtool/sampling/parti.py):

    images (B, 3, H, W) in [-1, 1] --conv tower--> (B, D) unit vectors
    text ids (B, L) + mask        --text tower--> (B, D) unit vectors
    score = cosine similarity; training: symmetric InfoNCE over the batch with a learned temperature

Image tower: a 3x3 conv at full resolution, then stride-2 3x3 convs until the map is at most 8x8, then flatten +
linear. No global pooling, on purpose: captions name positions ("in the top left"), and a pooled feature throws
away where things are; the flattened map keeps it (a 32 px image: 3 -> 32 -> 64 (16x16) -> 64 (8x8) -> 4096 -> D).
Text tower, `text_tower`:
- "transformer" (default): token + learned position embeddings, a bidirectional `Encoder` (vimtool/nn), the mean of
  its outputs over the real tokens, linear. Word order reaches the embedding, so "a red circle left of a blue
  square" and "a blue circle left of a red square" differ.
- "bow": the sum of the token embeddings (padding excluded) through a 2-layer MLP. Order-blind, so it cannot tell
  such captions apart; on single-object captions it reranks as well as the transformer with its dropout of 0.1
  (docs/RESULTS.md section 3 has both measured; without dropout the transformer generalised worse).

The temperature is learned as log(scale), initialised at log(logit_scale_init) and clamped at logit_scale_max
(CLIP's choice: 100), so the logits cannot grow without bound on an easy batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.config import require_positive
from vimtool.errors import VimtoolError
from vimtool.models.hub import HubMixin
from vimtool.models.registry import register_model
from vimtool.nn.layers import ChannelsLastConv2d, LearnedPos1D
from vimtool.nn.noble import NobleConfig, init_linear, set_optim_hints
from vimtool.nn.transformer import Encoder

TEXT_TOWERS = ("transformer", "bow")
MAX_MAP = 8  # the image tower halves the resolution until the feature map is at most this many pixels a side


@dataclass
class DualEncoderConfig:
    """Every hyperparameter of a dual encoder; saved as JSON beside the weights."""

    image_size: int = 32
    text_vocab_size: int = 512  # train-reranker sets the trained text tokenizer's size
    max_text_len: int = 32
    embed_dim: int = 128  # the shared space both towers map into
    # image tower: the full-resolution conv's channels, then every stride-2 conv's
    stem_channels: int = 32
    channels: int = 64
    # text tower
    text_tower: Literal["transformer", "bow"] = "transformer"
    text_dim: int = 128
    text_depth: int = 2
    text_heads: int = 4
    text_mlp_dim: int = 256
    # in the text transformer. 0.1, not 0: on the quickstart's shapes the tower without it learned the training
    # captions as wholes and read the held-out colour-shape pairs worse than a bag of words (held-out retrieval
    # 0.23 vs 0.30; picks passing the checker 31% vs 53%); with 0.1 it matches the bag of words (0.34, 53%)
    dropout: float = 0.1
    noble: NobleConfig = field(default_factory=NobleConfig)  # rank 0 = off; the transformer text tower only
    logit_scale_init: float = 10.0
    logit_scale_max: float = 100.0

    def __post_init__(self) -> None:
        self.noble = NobleConfig.coerce(self.noble)  # config.json and recipes give a dict
        if self.text_tower not in TEXT_TOWERS:
            raise VimtoolError(
                f"dual encoder text_tower must be one of {', '.join(TEXT_TOWERS)}, got {self.text_tower!r}"
            )
        if self.text_vocab_size < 5 or self.max_text_len < 2:
            raise VimtoolError("dual encoder config: text_vocab_size >= 5 and max_text_len >= 2 are needed")
        require_positive("dual encoder config", image_size=self.image_size, embed_dim=self.embed_dim,
                         stem_channels=self.stem_channels, channels=self.channels, text_dim=self.text_dim,
                         text_depth=self.text_depth, text_heads=self.text_heads, text_mlp_dim=self.text_mlp_dim)  # fmt: skip
        if not 0 < self.logit_scale_init <= self.logit_scale_max:
            raise VimtoolError("dual encoder config: 0 < logit_scale_init <= logit_scale_max is needed")

    @property
    def map_size(self) -> int:
        """Side of the image tower's last feature map (each stride-2 conv: ceil(s / 2))."""
        s = self.image_size
        while s > MAX_MAP:
            s = (s + 1) // 2
        return s


class ImageTower(nn.Module):
    """(B, 3, H, W) -> (B, D): conv stem, stride-2 convs down to <= 8x8, flatten (keeps where things are), linear."""

    def __init__(self, c: DualEncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [ChannelsLastConv2d(3, c.stem_channels, 3, padding=1), nn.GELU()]
        s, ch = c.image_size, c.stem_channels
        while s > MAX_MAP:
            layers += [ChannelsLastConv2d(ch, c.channels, 3, stride=2, padding=1), nn.GELU()]
            s, ch = (s + 1) // 2, c.channels
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(ch * s * s, c.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x).flatten(1))  # flatten reads the logical (C, H, W) order in any layout


class TransformerTextTower(nn.Module):
    """(B, L) ids + mask -> (B, D): embeddings + positions, bidirectional encoder, masked mean, linear."""

    def __init__(self, c: DualEncoderConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.text_vocab_size, c.text_dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        set_optim_hints(self.embed.weight, no_weight_decay=True)
        self.pos = LearnedPos1D(c.max_text_len, c.text_dim)
        self.encoder = Encoder(c.text_dim, c.text_depth, c.text_heads, c.text_mlp_dim, c.dropout, c.noble)
        self.proj = init_linear(nn.Linear(c.text_dim, c.embed_dim))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos(ids.shape[1]).to(self.embed.weight.dtype)
        h = self.encoder(x, pad_mask=mask)  # (B, L, text_dim)
        m = mask.to(h.dtype).unsqueeze(-1)
        return self.proj((h * m).sum(1) / m.sum(1).clamp_min(1.0))


class BagOfWordsTextTower(nn.Module):
    """(B, L) ids + mask -> (B, D): sum of the real tokens' embeddings through a 2-layer MLP (order-blind)."""

    def __init__(self, c: DualEncoderConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.text_vocab_size, c.text_dim)
        self.mlp = nn.Sequential(nn.Linear(c.text_dim, c.text_dim), nn.GELU(), nn.Linear(c.text_dim, c.embed_dim))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp((self.embed(ids) * mask.unsqueeze(-1).to(self.embed.weight.dtype)).sum(1))


@register_model
class DualEncoder(HubMixin, nn.Module):  # HubMixin: save_pretrained / from_pretrained / push_to_hub
    model_type = "dual_encoder"

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.image_tower = ImageTower(c)
        self.text_tower = TransformerTextTower(c) if c.text_tower == "transformer" else BagOfWordsTextTower(c)
        self.log_scale = nn.Parameter(torch.tensor(math.log(c.logit_scale_init)))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.config.logit_scale_max)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1], H = W = config.image_size -> (B, D) unit vectors."""
        s = self.config.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise VimtoolError(f"images must be (batch, 3, {s}, {s}) for this dual encoder, got {tuple(pixels.shape)}")
        return F.normalize(self.image_tower(pixels).float(), dim=-1)

    def encode_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) text ids + (B, L) bool mask (True = real token) -> (B, D) unit vectors."""
        if ids.dim() != 2 or ids.shape != mask.shape:
            raise VimtoolError(
                f"text ids and mask must both be (batch, length), got {tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        if ids.shape[1] > self.config.max_text_len:
            raise VimtoolError(
                f"text of {ids.shape[1]} tokens exceeds the model's {self.config.max_text_len}; encode it with the checkpoint's text tokenizer"
            )
        return F.normalize(self.text_tower(ids, mask.bool()).float(), dim=-1)

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Training forward: (B, B) logits, image i against text j, times the learned scale."""
        return self.logit_scale * self.encode_images(pixels) @ self.encode_texts(ids, mask).T

    def similarity(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of image i with text i: (B,) in [-1, 1] (the reranking score)."""
        return (self.encode_images(pixels) * self.encode_texts(ids, mask)).sum(-1)


def contrastive_loss(
    logits: torch.Tensor, same_text: torch.Tensor | None = None, extra_images: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE over (B, B + E) image-text logits: the first B columns are the batch's own texts
    (diagonal = the true pairs), any E further columns extra texts (hard negatives) that only the image -> text
    direction ranks; the text -> image direction reads the (B, B) block.

    `same_text` (B, B + E) bool, True where image i's caption and text j are identical: such pairs are true pairs
    too (with a few hundred distinct captions a batch of 128 holds repeats, and a hard negative of one image can be
    another's caption). Each row's loss is then -log of the probability of ALL its true pairs together, which is 0
    when they share the mass in any way; plain InfoNCE would ask an image to beat its own caption's twin, which it
    cannot (identical texts embed identically) and should not.

    `extra_images` (N, B): logits of N further images (e.g. damaged copies of the batch's, `image_negatives` of
    train-reranker) against the batch's own B texts. They are negatives of every text, so only the text -> image
    direction ranks them."""
    logits = logits.float()
    b = logits.shape[0]
    pos = torch.zeros_like(logits, dtype=torch.bool)
    pos[:, :b] = torch.eye(b, dtype=torch.bool, device=logits.device)
    if same_text is not None:
        pos = pos | same_text

    def one_way(lg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (lg.logsumexp(1) - lg.masked_fill(~p, float("-inf")).logsumexp(1)).mean()

    t2i, t2i_pos = logits[:, :b].T, pos[:, :b].T
    if extra_images is not None and len(extra_images):
        t2i = torch.cat([t2i, extra_images.float().T], 1)  # (B texts, B + N images)
        t2i_pos = torch.cat([t2i_pos, t2i_pos.new_zeros(b, len(extra_images))], 1)
    return 0.5 * (one_way(logits, pos) + one_way(t2i, t2i_pos))


__all__ = ["TEXT_TOWERS", "DualEncoder", "DualEncoderConfig", "contrastive_loss"]
