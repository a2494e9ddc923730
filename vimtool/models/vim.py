"""VIM: Vector-quantized Image Modeling, stage 2 (Yu et al. 2021, arXiv 2110.04627, section 4; docs/PAPERS.md section 2).

A decoder-only causal transformer over the tokenizer's image tokens in raster order:

    position:   0            1      2            ...  T-1
    input:      [start]      t_0    t_1          ...  t_{T-2}
    predicts:   t_0          t_1    t_2          ...  t_{T-1}

- Token embedding (learned, vocab = the tokenizer's codebook size) + learned 2D position embedding of the input
  token's grid cell (row table + column table, vimtool.nn.LearnedPos2D) -> dropout -> CausalDecoder (pre-norm,
  final LayerNorm: the paper's "extra LayerNorm after the last block") -> linear head to vocab logits.
- The start position: unconditional models use a learned BOS embedding (one row, no position embedding: it is
  the only thing at position 0). Class-conditional models prepend a class token from their own embedding
  table of `num_classes + 1` rows (section 4: "a class-id token with its own embedding table is prepended");
  the extra last row is the "null class" of classifier-free guidance. During training (`model.train()`)
  each label is replaced by the null class with probability `label_dropout` (as DiT's LabelEmbedder), so one
  model learns p(x | c) and p(x); the sampler mixes them (sampling/logits.py).
- The last token t_{T-1} is never an input, so a sequence is exactly T positions long (the KV cache size).

Sizes (Table/section 4): base 24 blocks / 16 heads / width 1536 / MLP 6144 (650M), large 36 / 32 / 2048 / 8192
(1.7B), plus CPU sizes. The vocabulary and grid come from the tokenizer (the shards' identity), not the size.

API: `forward(inputs (B, n), labels (B,) | None) -> logits (B, n + 1, V)` for 0 <= n <= T-1 input tokens;
`new_cache(batch)`, `step(cache, tokens (B, k) | None, labels)` -> logits of the k (+1 at the start) new
positions; `block_outputs(tokens, labels)` -> every block's (B, T, D) output (the linear probe reads these).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.config import ConfigError, require_positive
from vimtool.errors import VimtoolError
from vimtool.models.hub import HubMixin
from vimtool.models.registry import register_model
from vimtool.nn.layers import LearnedPos2D, maybe_dropout
from vimtool.nn.noble import NobleConfig, init_linear, set_optim_hints
from vimtool.nn.transformer import CausalDecoder, KVCache


@dataclass
class VIMConfig:
    """Every hyperparameter of a VIM model; saved as JSON beside the weights."""

    vocab_size: int = 8192  # = the tokenizer's codebook size
    grid: tuple[int, int] = (32, 32)  # = the tokenizer's token grid (h, w); T = h * w
    dim: int = 1536
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 6144
    dropout: float = 0.1  # paper: 0.1 (embeddings, attention, residual branches)
    num_classes: int = 0  # 0 = unconditional (BOS start token); else class ids 0..num_classes-1 (+ null)
    label_dropout: float = 0.1  # P(label -> null class) in training; enables classifier-free guidance
    norm: str = "layernorm"
    mlp_act: str = "gelu"
    noble: NobleConfig = field(default_factory=NobleConfig)

    def __post_init__(self) -> None:
        self.noble = NobleConfig.coerce(self.noble)  # config.json and recipes give a dict
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if not 2 <= self.vocab_size <= 65536:
            raise ConfigError(
                f"vocab_size must be in [2, 65536] (the tokenizer's codebook size), got {self.vocab_size}"
            )
        if min(self.grid) < 1 or self.num_tokens < 2:
            raise ConfigError(f"grid {self.grid} must hold at least 2 tokens")
        require_positive("vim config", dim=self.dim, depth=self.depth, heads=self.heads, mlp_dim=self.mlp_dim)
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0 (0 = unconditional), got {self.num_classes}")
        if not 0.0 <= self.label_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout and label_dropout are probabilities in [0, 1)")

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def null_class(self) -> int:
        """The class id meaning "no class" (unconditional rows of guidance); only for conditional models."""
        return self.num_classes


def _size(dim: int, depth: int, heads: int, mlp_dim: int) -> VIMConfig:
    return VIMConfig(dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)


# Named sizes. base/large: docs/PAPERS.md section 2. small: a GPU size between them and the CPU sizes.
# tiny: the CPU size of recipes/vim_mnist.yaml (trains on MNIST tokens in minutes). micro: unit tests only.
SIZES: dict[str, VIMConfig] = {
    "base": _size(1536, 24, 16, 6144),
    "large": _size(2048, 36, 32, 8192),
    "small": _size(768, 12, 12, 3072),
    "tiny": _size(128, 6, 4, 512),
    "micro": _size(32, 2, 2, 64),
}


def size_config(name: str, **overrides) -> VIMConfig:
    """A named size with fields replaced, e.g. `size_config("tiny", vocab_size=512, grid=(8, 8))`."""
    if name not in SIZES:
        raise ConfigError(f"unknown VIM size {name!r}; use one of {', '.join(SIZES)}")
    return replace(SIZES[name], **overrides)


@register_model
class VIM(HubMixin, nn.Module):  # HubMixin: save_pretrained / from_pretrained / push_to_hub
    """Decoder-only image transformer over raster-order tokens (see the module docstring)."""

    model_type = "vim"
    config_class = VIMConfig

    def __init__(self, config: VIMConfig) -> None:
        super().__init__()
        self.config = c = config
        h, w = c.grid
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos_emb = LearnedPos2D(h, w, c.dim)
        # Start of every sequence: one BOS row (unconditional) or the class table with a last "null" row.
        self.start_emb = nn.Embedding(c.num_classes + 1 if c.conditional else 1, c.dim)
        for emb in (self.tok_emb, self.start_emb):
            nn.init.normal_(emb.weight, std=0.02)
            set_optim_hints(emb.weight, no_weight_decay=True)
        self.decoder = CausalDecoder(
            c.dim, c.depth, c.heads, c.mlp_dim, dropout=c.dropout, noble=c.noble, norm=c.norm, mlp_act=c.mlp_act
        )
        self.head = init_linear(nn.Linear(c.dim, c.vocab_size))

    def attach_optim_hints(self) -> None:  # train/optim.py calls it (hints do not survive deepcopy)
        for emb in (self.tok_emb, self.start_emb):
            set_optim_hints(emb.weight, no_weight_decay=True)

    # --- facts --------------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    # --- pieces -------------------------------------------------------------------------------------------
    def check_labels(self, labels: torch.Tensor | None, batch: int, allow_null: bool = True) -> torch.Tensor:
        """Labels -> (B,) int64 on the model's device; None means "null class" (or BOS when unconditional)."""
        c = self.config
        device = self.tok_emb.weight.device
        if not c.conditional:
            if labels is not None and not torch.compiler.is_compiling() and bool((labels >= 0).any()):
                raise VimtoolError("this VIM checkpoint is unconditional (num_classes=0); sample without --class")
            return torch.zeros(batch, dtype=torch.long, device=device)
        if labels is None:
            return torch.full((batch,), c.null_class, dtype=torch.long, device=device)
        labels = labels.to(device=device, dtype=torch.long)
        top = c.num_classes if allow_null else c.num_classes - 1
        # the value check reads the labels back (a sync, and a graph break under torch.compile, where training
        # labels come from checked shards): eager only
        in_range = torch.compiler.is_compiling() or not (bool((labels < 0).any()) or bool((labels > top).any()))
        if labels.shape != (batch,) or not in_range:
            raise VimtoolError(
                f"class ids must be in [0, {c.num_classes - 1}] for this checkpoint "
                f"({c.num_classes} classes), got {labels.tolist()[:8]}"
            )
        return labels

    def _start(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        c = self.config
        ids = self.check_labels(labels, batch)
        if c.conditional and self.training and c.label_dropout > 0:
            # classifier-free guidance training: some labels become the null class (DiT's token_drop)
            drop = torch.rand(batch, device=ids.device) < c.label_dropout
            ids = torch.where(drop, torch.full_like(ids, c.null_class), ids)
        return self.start_emb(ids)[:, None, :]  # (B, 1, D)

    def _tokens(self, tokens: torch.Tensor, offset: int, check: bool = True) -> torch.Tensor:
        """Image tokens fed at raster cells [offset, offset + n) -> (B, n, D) embeddings + 2D positions."""
        n = tokens.shape[1]
        # the range check syncs with the GPU: done on full sequences, skipped per decode step (sampled ids) and
        # under torch.compile (a graph break; training tokens come from checked shards)
        check = check and n and not torch.compiler.is_compiling()
        if check and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise VimtoolError(f"token ids must be in [0, {self.config.vocab_size}) for this model")
        # 2D positions of just these cells (row table + column table), not the whole grid: a decode step
        # then costs O(D) for positions instead of O(h * w * D)
        cells = torch.arange(offset, offset + n, device=tokens.device)
        w = self.config.grid[1]
        pos = self.pos_emb.rows[cells // w] + self.pos_emb.cols[cells % w]  # (n, D)
        return self.tok_emb(tokens) + pos  # (B, n, D)

    def embed(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Start token + the first n <= T-1 image tokens -> (B, n + 1, D) (before dropout)."""
        b, n = inputs.shape
        if n > self.num_tokens - 1:
            raise VimtoolError(
                f"VIM takes at most {self.num_tokens - 1} input tokens (the last one is only predicted), got {n}"
            )
        return torch.cat([self._start(labels, b), self._tokens(inputs, 0)], dim=1)  # (B, n+1, D)

    # --- full-sequence use (training, uncached sampling, probe) ----------------------------------------------
    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (B, n) with n <= T-1 -> logits (B, n + 1, V): position i predicts token i."""
        x = maybe_dropout(self.embed(inputs, labels), self.config.dropout, self.training)
        return self.head(self.decoder(x))  # (B, n+1, V)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of full sequences (B, T)."""
        logits = self(tokens[:, :-1], labels)  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())

    def block_outputs(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every block's output (B, T, D) for full sequences (B, T) (the last token is not an input: T positions
        = start + t_0..t_{T-2}). labels None = the null class / BOS, which is what the probe feeds."""
        _, layers = self.decoder(self.embed(tokens[:, : self.num_tokens - 1], labels), return_layers=True)
        return layers

    # --- cached decoding (sampling) --------------------------------------------------------------------------
    def new_cache(self, batch_size: int, device=None, dtype=None) -> KVCache:
        """A KV cache for `batch_size` sequences of the full T positions."""
        return self.decoder.new_cache(batch_size, self.num_tokens, device=device, dtype=dtype)

    def step(
        self, cache: KVCache, tokens: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Feed new positions through the cache; -> logits (B, k, V) of those positions.

        On an empty cache the start token (from `labels`) comes first, optionally followed by a prefix of
        image tokens (prefill); afterwards `tokens` (B, k) continue where the cache stopped.
        """
        if cache.length == 0:
            b = cache.batch_size
            x = self._start(labels, b)  # (B, 1, D)
            if tokens is not None and tokens.shape[1]:
                x = torch.cat([x, self._tokens(tokens, 0)], dim=1)  # (B, 1+k, D)
        else:
            if tokens is None:
                raise ValueError("VIM.step needs the new tokens once the cache holds the start token")
            x = self._tokens(tokens, cache.length - 1, check=False)  # token i sits at position i + 1, raster cell i
        return self.head(self.decoder(x, cache=cache))  # (B, k, V)


def sequence_bits(model: VIM, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Summed next-token cross-entropy in bits per sequence (B,): validation loss = sum / (B * T)."""
    logits = model(tokens[:, :-1], labels)  # (B, T, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")  # (B, T) nats
    return nll.sum(dim=1) / torch.log(torch.tensor(2.0))


__all__ = ["SIZES", "VIM", "VIMConfig", "sequence_bits", "size_config"]
