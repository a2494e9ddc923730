"""Parti: an encoder-decoder transformer from text tokens to image tokens (Yu et al. 2022, arXiv 2206.10789;
docs/PAPERS.md section 3).

    prompt --text tokenizer (vimtool/data/text.py)--> ids (B, L) --embed + learned 1D positions--> Encoder
      --> context (B, L, D)
    [BOS, t_1 .. t_{T-1}] --embed + learned 2D positions--> CrossDecoder (causal self-attn + cross-attn to the
      context) --> linear head --> logits over the image tokenizer's codebook (B, T, V)

Image tokens come from a ViT-VQGAN (stage 1) in raster order; the model predicts token t from the prompt and
tokens < t. Classifier-free guidance (section 3 "Classifier-free guidance"): during training the prompt of a
random fraction of rows is replaced by the learned NULL condition (`null_rows` in `forward`); at sampling time
the unconditional rows use it and logits = u + lambda (c - u). The null condition is a learned context vector
standing in for the whole encoder output (one position, the rest masked), so unconditional rows cost no
encoder pass and cannot be confused with any real prompt, the empty one included.

Sampling interface (used by vimtool/sampling/parti.py; the decoder keeps self and cross K/V in a KV cache, the
cross K/V computed once per prompt):

    ctx, ctx_mask = model.encode_text(ids, mask)            # (B, L, D), (B, L)
    ctx, ctx_mask = model.null_context(B, L)                  # the learned null, padded to L positions
    cache = model.new_cache(B)                                # decoder KV cache for the image sequence
    logits = model.next_logits(None, ctx, ctx_mask, cache)    # (B, V) for token 0 (input: BOS)
    logits = model.next_logits(ids (B, 1), None, None, cache) # (B, V) for the next token
    logits = model.image_logits(ctx, ctx_mask, tokens)        # (B, T, V) teacher-forced, no cache

Sizes are the paper's table (encoder layers / decoder layers / width / MLP / heads): 350M 12/12/1024/4096/16,
750M 12/36/1024/4096/16, 3B 12/36/2048/8192/32, 20B 16/64/4096/16384/64; plus CPU sizes `tiny`/`micro`.
The paper's 16k text vocabulary, 128 text positions, 8192 codes and 32x32 grid are the config defaults; the
training command sets vocabulary, codebook and grid from the data. Dropout 0.1 as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.config import require_positive
from vimtool.errors import VimtoolError
from vimtool.models.hub import HubMixin
from vimtool.models.registry import register_model
from vimtool.nn.layers import LearnedPos1D, LearnedPos2D
from vimtool.nn.noble import NobleConfig, init_linear, set_optim_hints
from vimtool.nn.transformer import CrossDecoder, Encoder, KVCache


@dataclass
class PartiConfig:
    """Every hyperparameter of a Parti model; saved as JSON beside the weights."""

    text_vocab_size: int = 16_000  # Parti's SentencePiece vocabulary; train-t2i sets the trained tokenizer's size
    max_text_len: int = 128  # Parti's maximum text length
    codebook_size: int = 8192  # the image tokenizer's codebook (ViT-VQGAN SS)
    grid: tuple[int, int] = (32, 32)  # image token grid (256 px / 8 px patches)
    dim: int = 1024
    enc_depth: int = 12
    dec_depth: int = 12
    heads: int = 16
    mlp_dim: int = 4096
    dropout: float = 0.1  # docs/PAPERS.md section 3
    norm: str = "layernorm"
    mlp_act: str = "gelu"
    noble: NobleConfig = field(default_factory=NobleConfig)  # rank 0 = off

    def __post_init__(self) -> None:
        self.noble = NobleConfig.coerce(self.noble)  # config.json and recipes give a dict
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.codebook_size < 2 or self.text_vocab_size < 5 or self.max_text_len < 2:
            raise VimtoolError(
                "parti config: codebook_size >= 2, text_vocab_size >= 5 and max_text_len >= 2 are needed"
            )
        require_positive("parti config", grid_h=self.grid[0], grid_w=self.grid[1], dim=self.dim,
                         enc_depth=self.enc_depth, dec_depth=self.dec_depth, heads=self.heads, mlp_dim=self.mlp_dim)  # fmt: skip

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def _size(enc: int, dec: int, dim: int, mlp: int, heads: int, **kw) -> PartiConfig:
    return PartiConfig(enc_depth=enc, dec_depth=dec, dim=dim, mlp_dim=mlp, heads=heads, **kw)


# Paper's table (docs/PAPERS.md section 3) plus CPU sizes. tiny: the quickstart's model (shapes, 8x8 tokens).
SIZES: dict[str, PartiConfig] = {
    "350M": _size(12, 12, 1024, 4096, 16),
    "750M": _size(12, 36, 1024, 4096, 16),
    "3B": _size(12, 36, 2048, 8192, 32),
    "20B": _size(16, 64, 4096, 16384, 64),
    "tiny": _size(2, 4, 128, 512, 4, max_text_len=32, dropout=0.0),
    "micro": _size(1, 2, 32, 64, 2, max_text_len=16, dropout=0.0),  # unit tests
}


def size_config(name: str, **overrides) -> PartiConfig:
    if name not in SIZES:
        raise VimtoolError(f"unknown Parti size {name!r}; use one of {', '.join(SIZES)}")
    return replace(SIZES[name], **overrides)


@register_model
class Parti(HubMixin, nn.Module):  # HubMixin: save_pretrained / from_pretrained / push_to_hub
    model_type = "parti"

    def __init__(self, config: PartiConfig) -> None:
        super().__init__()
        self.config = c = config
        h, w = c.grid
        stack = dict(dropout=c.dropout, noble=c.noble, norm=c.norm, mlp_act=c.mlp_act)
        self.text_embed = nn.Embedding(c.text_vocab_size, c.dim)
        self.text_pos = LearnedPos1D(c.max_text_len, c.dim)
        self.encoder = Encoder(c.dim, c.enc_depth, c.heads, c.mlp_dim, **stack)
        # The learned null condition for classifier-free guidance: stands in for the encoder output.
        self.null = nn.Parameter(torch.randn(1, c.dim) * 0.02)
        # Image tokens: the codebook's ids plus one BOS id (= codebook_size) that starts every sequence.
        self.image_embed = nn.Embedding(c.codebook_size + 1, c.dim)
        self.image_pos = LearnedPos2D(h, w, c.dim)
        self.decoder = CrossDecoder(c.dim, c.dec_depth, c.heads, c.mlp_dim, context_dim=c.dim, **stack)
        self.head = init_linear(nn.Linear(c.dim, c.codebook_size))
        for emb in (self.text_embed, self.image_embed):
            nn.init.normal_(emb.weight, std=0.02)
            set_optim_hints(emb.weight, no_weight_decay=True)
        set_optim_hints(self.null, no_weight_decay=True)

    @property
    def bos_id(self) -> int:
        return self.config.codebook_size

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_image_tokens

    # --- text side ----------------------------------------------------------------------------------------------
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) text ids + (B, L) bool mask (True = real) -> context (B, L, D) and its mask."""
        if ids.dim() != 2 or ids.shape != mask.shape:
            raise VimtoolError(
                f"text ids and mask must both be (batch, length), got {tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        if ids.shape[1] > self.config.max_text_len:
            raise VimtoolError(
                f"text of {ids.shape[1]} tokens exceeds the model's {self.config.max_text_len}; encode it with the checkpoint's text tokenizer"
            )
        x = self.text_embed(ids) + self.text_pos(ids.shape[1]).to(self.text_embed.weight.dtype)  # (B, L, D)
        return self.encoder(x, pad_mask=mask), mask.bool()

    def null_context(self, batch: int, length: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned null condition as a context of `length` positions: position 0 real, the rest masked."""
        length = max(1, length)
        ctx = torch.zeros(batch, length, self.config.dim, device=device or self.null.device, dtype=self.null.dtype)
        ctx[:, 0] = self.null[0]
        mask = torch.zeros(batch, length, dtype=torch.bool, device=ctx.device)
        mask[:, 0] = True
        return ctx, mask

    def condition(
        self, ids: torch.Tensor, mask: torch.Tensor, null_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded prompts, with the rows where `null_rows` (B,) is True replaced by the null condition."""
        ctx, ctx_mask = self.encode_text(ids, mask)
        # the shortcut reads the rows back: eager only (under torch.compile it would break the graph)
        if null_rows is None or (not torch.compiler.is_compiling() and not bool(null_rows.any())):
            return ctx, ctx_mask
        n_ctx, n_mask = self.null_context(ids.shape[0], ids.shape[1], ctx.device)
        rows = null_rows.to(ctx.device).bool()
        ctx = torch.where(rows[:, None, None], n_ctx.to(ctx.dtype), ctx)  # (B, L, D)
        return ctx, torch.where(rows[:, None], n_mask, ctx_mask)

    # --- image side ---------------------------------------------------------------------------------------------
    def _embed_image(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        x = self.image_embed(ids)  # (B, t, D)
        return x + self.image_pos(ids.shape[1], offset).to(x.dtype)

    def image_logits(self, ctx: torch.Tensor, ctx_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T', V) predicting tokens[:, :T'] from [BOS, tokens[:, :T'-1]]."""
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        inp = torch.cat([bos, tokens[:, :-1]], dim=1)  # (B, T')
        return self.head(self.decoder(self._embed_image(inp, 0), ctx, ctx_mask))

    def new_cache(self, batch: int, device=None, dtype=None) -> KVCache:
        """A decoder KV cache for `batch` image sequences (all positions of the grid)."""
        return self.decoder.new_cache(batch, self.num_image_tokens, device=device, dtype=dtype)

    def next_logits(
        self, new: torch.Tensor | None, ctx: torch.Tensor | None, ctx_mask: torch.Tensor | None, cache: KVCache
    ) -> torch.Tensor:
        """One cached decoding step: `new` (B, 1) holds the ids just sampled (None on the first call, which
        feeds BOS and stores the cross K/V of `ctx`); returns (B, V) logits of the next image token."""
        if new is None:
            if cache.length != 0:
                raise VimtoolError("next_logits(None, ...) starts a sequence; reset the cache first")
            batch = cache.batch_size
            device = ctx.device if ctx is not None else self.null.device
            new = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=device)
            x = self._embed_image(new, 0)
        else:
            x = self._embed_image(new, cache.length)  # BOS sits at position 0, token t at t + 1 -> pos t + 1
        return self.head(self.decoder(x, ctx, ctx_mask, cache=cache))[:, -1]  # (B, V)

    def forward(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        tokens: torch.Tensor,
        null_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training forward: (B, L) prompt ids + mask, (B, T) image tokens -> (B, T, V) next-token logits.

        `null_rows` (B,) bool: rows whose prompt is dropped to the learned null (classifier-free guidance).
        """
        if tokens.dim() != 2 or tokens.shape[1] != self.num_image_tokens:
            raise VimtoolError(
                f"image tokens must be (batch, {self.num_image_tokens}) for grid {self.config.grid}, got {tuple(tokens.shape)}"
            )
        ctx, ctx_mask = self.condition(text_ids, text_mask, null_rows)
        return self.image_logits(ctx, ctx_mask, tokens)

    @torch.no_grad()
    def sequence_logprob(self, ctx: torch.Tensor, ctx_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log p(tokens | context) summed over the sequence: (B,) float32 (one teacher-forced pass)."""
        logits = self.image_logits(ctx, ctx_mask, tokens).float()  # (B, T, V)
        logp = -F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (B, T)
        return logp.sum(dim=1)


__all__ = ["SIZES", "Parti", "PartiConfig", "size_config"]
