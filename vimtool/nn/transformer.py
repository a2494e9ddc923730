"""Pre-norm transformer stacks with a KV cache: the encoder, causal decoder and cross-attention decoder.

All stacks map (B, T, D) -> (B, T, D) and end with a final norm (VIM's "extra LayerNorm after the last block",
docs/PAPERS.md section 2). Models add token/position embeddings before and heads after.

    Encoder(dim, depth, heads, mlp_dim, dropout=0.0, noble=None, norm="layernorm", mlp_act="gelu")
        (x, pad_mask=None, return_layers=False)
    CausalDecoder(same args)(x, cache=None, return_layers=False)
    CrossDecoder(same args, context_dim=None)(x, context, context_mask=None, cache=None, return_layers=False)

Masks are bool (B, T) with True = a real token. `return_layers=True` returns `(out, [each block's output])`
(before the final norm; the linear probe of docs/PAPERS.md section 2 reads these).

KV cache: `cache = stack.new_cache(batch_size, max_len, device=None, dtype=None)`. When a cache is passed, `x`
holds only the NEW positions (one or several) and the cache advances by `x.shape[1]`; `cache.length` is the
number of positions already in it (a model uses it to pick position embeddings). So "prefill a prefix, then
one token at a time" is `stack(prefix, cache=c)` followed by `stack(tok, cache=c)` calls. Self K/V live in
preallocated (B, H, max_len, Dh) buffers: a step costs one token's projections plus attention over the prefix,
never a recomputation of it. For `CrossDecoder` the cross K/V are computed from `context` on the first call
and reused (later calls may pass `context=None`); `context_mask` is remembered too. Decoding is batched: every
row of the batch is at the same position (pad prompts on the left of the cross context, not in `x`).

Each block: x = x + drop(attn(norm(x))) [+ drop(cross_attn(norm(x), context))] + drop(mlp(norm(x))), the
pre-norm arrangement of GPT-2/ViT. Init: see layers.py and noble.py (N(0, 0.02) linears, zero biases).
"""

from __future__ import annotations

import torch
from torch import nn

from vimtool.errors import VimtoolError
from vimtool.nn.layers import MLP, Attention, LayerKV, make_norm, maybe_dropout
from vimtool.nn.noble import NobleConfig


class KVCache:
    """Per-layer K/V buffers of one stack plus the number of positions filled (`length`)."""

    def __init__(self, depth: int, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        self.batch_size, self.max_len = batch_size, max_len
        self.layers = [LayerKV(batch_size, max_len, device, dtype) for _ in range(depth)]
        self.length = 0
        self.context_mask: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget everything (buffers are kept and overwritten): reuse the cache for a new batch of prompts."""
        self.length = 0
        self.context_mask = None
        for layer in self.layers:
            layer.cross_k = layer.cross_v = layer.cross_mask = None


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP; each a residual branch.

    `activation_checkpointing = True` (set by vimtool/train/distributed.py, never by models) makes a training
    forward keep only the block's input and recompute its activations in the backward: less memory, one more
    forward of compute; the same gradients. Cached decoding and no-grad forwards never recompute.
    """

    activation_checkpointing = False

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        noble: NobleConfig | None = None,
        norm: str = "layernorm",
        mlp_act: str = "gelu",
        cross: bool = False,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(dim, heads, dropout, noble)
        if cross:
            self.norm_cross = make_norm(norm, dim)
            self.cross_attn = Attention(dim, heads, dropout, noble, cross=True, context_dim=context_dim)
        self.norm2 = make_norm(norm, dim)
        self.mlp = MLP(dim, mlp_dim, mlp_act, dropout, noble)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: LayerKV | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        if self.activation_checkpointing and cache is None and torch.is_grad_enabled():
            # non-reentrant: dropout masks are replayed from the saved RNG state, so the recomputation is exact
            return torch.utils.checkpoint.checkpoint(
                self._forward, x, mask, causal, context, context_mask, None, start, use_reentrant=False
            )
        return self._forward(x, mask, causal, context, context_mask, cache, start)

    def _forward(self, x, mask, causal, context, context_mask, cache, start) -> torch.Tensor:
        p, train = self.dropout, self.training
        x = x + maybe_dropout(self.attn(self.norm1(x), mask=mask, causal=causal, cache=cache, start=start), p, train)
        if hasattr(self, "cross_attn"):
            y = self.cross_attn(self.norm_cross(x), context, mask=context_mask, cache=cache)
            x = x + maybe_dropout(y, p, train)
        return x + maybe_dropout(self.mlp(self.norm2(x)), p, train)


class _Stack(nn.Module):
    cross = False

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        noble: NobleConfig | None = None,
        norm: str = "layernorm",
        mlp_act: str = "gelu",
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.depth, self.heads = dim, depth, heads
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_dim, dropout, noble, norm, mlp_act, cross=self.cross, context_dim=context_dim)
            for _ in range(depth)
        )
        self.norm = make_norm(norm, dim)

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` positions (see module doc)."""
        return KVCache(self.depth, batch_size, max_len, device, dtype)

    def _run(self, x, *, mask=None, causal=False, context=None, context_mask=None, cache=None, return_layers=False):
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise VimtoolError(f"transformer input must be (batch, tokens, {self.dim}), got {tuple(x.shape)}")
        start = cache.length if cache is not None else 0
        layers = []
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x = block(x, mask, causal, context, context_mask, layer_cache, start)
            if return_layers:
                layers.append(x)
        if cache is not None:
            cache.length = start + x.shape[1]
        out = self.norm(x)
        return (out, layers) if return_layers else out


class Encoder(_Stack):
    """Bidirectional stack (ViT-VQGAN encoder/decoder, Parti text encoder). pad_mask (B, T): True = real."""

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, return_layers: bool = False):
        return self._run(x, mask=pad_mask, return_layers=return_layers)


class CausalDecoder(_Stack):
    """Decoder-only causal stack (VIM). With a cache, x holds only the new positions."""

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, return_layers: bool = False):
        return self._run(x, causal=True, cache=cache, return_layers=return_layers)


class CrossDecoder(_Stack):
    """Causal stack with cross-attention to an encoded context (Parti's decoder). context_mask: True = real."""

    cross = True

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_layers: bool = False,
    ):
        if cache is not None:
            if cache.layers and cache.layers[0].cross_k is None:
                if context is None:
                    raise VimtoolError("the first cached call of a cross decoder needs the context to attend to")
                cache.context_mask = context_mask
            else:
                context_mask = cache.context_mask
        elif context is None:
            raise VimtoolError("a cross decoder needs a context (the encoded prompt) when no cache is given")
        return self._run(
            x, causal=True, context=context, context_mask=context_mask, cache=cache, return_layers=return_layers
        )


__all__ = ["Block", "CausalDecoder", "CrossDecoder", "Encoder", "KVCache"]
