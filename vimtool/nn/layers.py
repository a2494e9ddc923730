"""Transformer parts shared by ViT-VQGAN, VIM and Parti: attention with a KV-cache slot, MLP, norms, positions.

- `Attention(dim, heads, dropout=0.0, noble=None, cross=False, context_dim=None)`: multi-head attention through
  `F.scaled_dot_product_attention` (bidirectional, causal, or cross; a CPU decode step, one query over the
  KV cache, uses two batched GEMVs instead: `_one_query_attention`). Masks are bool with True = a real token
  (the key-padding convention of docs/ARCHITECTURE.md). Projections come from `make_linear` at sites
  "q", "k", "v", "out", so NOBLE lands on them when configured; when NOBLE is off at q/k/v they are fused
  into one `qkv` (self) or `kv` (cross) matmul, which is faster on every backend. With CosNet NOBLE on all three
  (self-attention) the parameters stay in `q`, `k`, `v` and training runs them as one grouped Function
  (`noble_fused.grouped_cosnet_noble`: one GEMM for the three projections and their down-projections).
- `MLP(dim, hidden, act="gelu"|"gelu_tanh", dropout, noble)`: sites "mlp_in", "mlp_out". ViT-VQGAN uses the
  tanh GELU (docs/PAPERS.md section 1); the default is the exact (erf) GELU.
- `make_norm("layernorm"|"rmsnorm", dim)`.
- `ChannelsLastConv2d`: an `nn.Conv2d` that convolves channels-last (faster on CPU, same parameters).
- `LearnedPos1D(max_len, dim)`, `LearnedPos2D(h, w, dim)`: learned tables returning (length, dim) rows for
  positions [offset, offset + length) so cached decoding can ask for just the new positions. The 2D table is
  factorised: a row table (h, dim) plus a column table (w, dim), summed (h + w rows instead of h * w; VIM's
  "learned 2D position embedding", docs/PAPERS.md section 2, with its structure made explicit).
- `sincos_2d(h, w, dim) -> (h * w, dim)`: fixed 2D sin-cos positions (MAE/ViT style), raster order.

Init: linears N(0, 0.02) with zero biases (`make_linear`), position tables N(0, 0.02), norms ones/zeros.
No weight decay on position tables, norms or biases (hints on the parameters; see noble.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.config import ConfigError
from vimtool.errors import VimtoolError
from vimtool.nn.noble import NobleConfig, can_group, make_fused_linear, make_linear, set_optim_hints
from vimtool.nn.noble_fused import grouped_cosnet_noble

MLP_ACTS = ("gelu", "gelu_tanh")
NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, dim: int, eps: float = 1e-6) -> nn.Module:
    """LayerNorm (with bias) or RMSNorm over the last dim; parameters get no weight decay."""
    if kind == "layernorm":
        norm: nn.Module = nn.LayerNorm(dim, eps=eps)
    elif kind == "rmsnorm":
        norm = nn.RMSNorm(dim, eps=eps)
    else:
        raise ConfigError(f"norm {kind!r} is unknown; use one of {', '.join(NORMS)}")
    for p in norm.parameters():
        set_optim_hints(p, no_weight_decay=True)
    return norm


def maybe_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    # Skip the op entirely at p = 0: a no-op dropout still costs a pass over the activations in training.
    return F.dropout(x, p, training) if (p > 0 and training) else x


class LayerKV:
    """One attention layer's cache: self K/V preallocated to (B, H, max_len, Dh), cross K/V computed once.

    Buffers are allocated on first use with the device/dtype of the first keys unless given, so a cache made
    before autocast still matches the bf16 keys produced under it.
    """

    __slots__ = ("batch_size", "max_len", "device", "dtype", "k", "v", "cross_k", "cross_v", "cross_mask")

    def __init__(self, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        self.batch_size, self.max_len, self.device, self.dtype = batch_size, max_len, device, dtype
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.cross_k: torch.Tensor | None = None
        self.cross_v: torch.Tensor | None = None
        self.cross_mask: torch.Tensor | None = None  # (B, 1, 1, S) additive 0/-inf key mask of the context

    def append(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values (B, H, T, Dh) at [start, start + T); return all keys/values up to there."""
        b, h, t, dh = k.shape
        if b != self.batch_size:
            raise VimtoolError(f"KV cache was made for batch {self.batch_size} but got batch {b}; make a new cache")
        if start + t > self.max_len:
            raise VimtoolError(
                f"KV cache holds {self.max_len} positions but {start + t} were asked for; make it with a larger max_len"
            )
        if self.k is None:
            shape = (b, h, self.max_len, dh)
            dtype = self.dtype or k.dtype
            device = self.device or k.device
            self.k = torch.empty(shape, dtype=dtype, device=device)
            self.v = torch.empty(shape, dtype=dtype, device=device)
        assert self.v is not None
        self.k[:, :, start : start + t] = k
        self.v[:, :, start : start + t] = v
        return self.k[:, :, : start + t], self.v[:, :, : start + t]


class Attention(nn.Module):
    """Multi-head attention via scaled_dot_product_attention; self (optionally causal) or cross."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        noble: NobleConfig | None = None,
        cross: bool = False,
        context_dim: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention width {dim} is not divisible by {heads} heads; pick heads dividing the width")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.cross = cross
        self.dropout = dropout
        kv_dim = (context_dim or dim) if cross else dim
        noble_at = {s: bool(noble is not None and noble.applies_to(s)) for s in ("q", "k", "v")}
        # Fuse projections NOBLE does not touch: one (D, 3D) matmul beats three (D, D) ones.
        self.fused = not (noble_at["k"] or noble_at["v"]) and (cross or not noble_at["q"])
        if cross:
            self.q = make_linear(dim, dim, bias, noble, "q")
            if self.fused:
                self.kv = make_fused_linear(kv_dim, dim, ("k", "v"), bias, noble)
            else:
                self.k = make_linear(kv_dim, dim, bias, noble, "k")
                self.v = make_linear(kv_dim, dim, bias, noble, "v")
        elif self.fused:
            self.qkv = make_fused_linear(dim, dim, ("q", "k", "v"), bias, noble)
        else:
            self.q = make_linear(dim, dim, bias, noble, "q")
            self.k = make_linear(dim, dim, bias, noble, "k")
            self.v = make_linear(dim, dim, bias, noble, "v")
        self.out = make_linear(dim, dim, bias, noble, "out")
        # set while sampling (vimtool.sampling.packed_linear.decoding_weights): fn(q, k, v) -> output or None, a
        # faster CPU kernel for a decode step's one query over the cache; None: torch's path below
        self.decode_attention = None
        # NOBLE (CosNet) on all of q, k, v: train them as one grouped Function, which restores the base model's
        # single qkv GEMM with the three down-projections riding in it (noble_fused.py). The parameters stay in
        # q, k, v. Set False to run the three layers one by one (bench/bench_transformer.py --ungrouped).
        self.group_qkv = not cross and not self.fused and can_group((self.q, self.k, self.v))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def _project_kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused:  # cross only
            b, s, _ = src.shape
            kv = self.kv(src).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (2, B, H, S, Dh)
            return kv[0], kv[1]
        return self._heads(self.k(src)), self._heads(self.v(src))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: LayerKV | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D).

        mask: (B, S) bool over the keys (self: x's positions; cross: context's), True = real token.
        cache/start: with a cache, x holds positions [start, start + T); self K/V are appended and attention
        runs over [0, start + T); cross K/V are computed from `context` on the first call and reused after.
        """
        b, t, d = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            if cache is not None and cache.cross_k is not None:
                k, v = cache.cross_k, cache.cross_v
            else:
                if context is None:
                    raise ValueError("cross-attention needs a context on its first call")
                k, v = self._project_kv(context)
                if cache is not None:  # contiguous once per prompt, so no decode step pays a copy
                    k, v = k.contiguous(), v.contiguous()
                    cache.cross_k, cache.cross_v = k, v
        else:
            if self.fused:
                # unbind, not qkv[0..2]: its backward stacks the three gradients straight into the (B, T, 3, H, Dh)
                # layout of qkv's output, where indexing would zero-fill and sum three full-size tensors and the
                # permute would need a copy back (attention fwd + bwd 2.7% faster fp32, 5.9% bf16, width 512)
                qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim)  # (B, T, 3, H, Dh)
                q, k, v = (y.transpose(1, 2) for y in qkv.unbind(2))  # each (B, H, T, Dh)
            elif (
                self.group_qkv
                and torch.is_grad_enabled()
                and not torch.compiler.is_compiling()
                and can_group((self.q, self.k, self.v))
            ):
                q, k, v = (self._heads(y) for y in grouped_cosnet_noble((self.q, self.k, self.v), x))
            else:  # NOBLE on some of q/k/v, or no autograd (a decode step: N = batch rows, per-layer is cheaper)
                q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
            if cache is not None:
                k, v = cache.append(k, v, start)

        attn_mask = None
        is_causal = False
        if causal and not self.cross:
            if cache is None or start == 0:
                is_causal = t > 1  # square: SDPA's own causal mask (fast kernels)
            elif t > 1:  # prefill after a prefix: query i sits at start + i and sees keys [0, start + i]
                attn_mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
        if mask is not None and self.cross and cache is not None:
            # the context mask is the same at every decode step: build SDPA's additive form once per prompt
            # (0 / -inf, exactly what SDPA makes of a bool mask) instead of 4 small ops per layer per step
            if cache.cross_mask is None or cache.cross_mask.dtype != q.dtype:
                keys = _real_keys(mask)[:, None, None, :]  # (B, 1, 1, S)
                cache.cross_mask = torch.zeros(keys.shape, dtype=q.dtype, device=q.device).masked_fill_(
                    ~keys, float("-inf")
                )
            attn_mask = cache.cross_mask
        elif mask is not None:
            key_mask = _real_keys(mask)[:, None, None, :]  # (B, 1, 1, S)
            if is_causal:
                attn_mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
                is_causal = False
            attn_mask = key_mask if attn_mask is None else (attn_mask & key_mask)
        p = self.dropout if self.training else 0.0
        if t == 1 and cache is not None and attn_mask is None and p == 0.0 and q.device.type == "cpu":
            # a decode step over the cache: the sampler's kernel where one is set (and applies), else torch's GEMVs
            y = None if self.decode_attention is None else self.decode_attention(q, k, v)
            if y is None:
                y = _one_query_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out(y)


def _one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v for ONE query per row: q (B, H, 1, Dh), k/v (B, H, S, Dh) -> (B, H, 1, Dh).

    The same function as SDPA (rounding aside). Why: for a single query SDPA's CPU flash kernel works in key
    blocks with an online softmax, and over a cache that the step's weight reads have pushed out of the CPU
    caches it measured 7-22% slower than two batched GEMVs (bench/bench_decode.py). On the GPU SDPA stays.
    """
    bsz, heads, _, dh = q.shape
    s = k.shape[2]
    qf = q.reshape(bsz * heads, 1, dh)  # (BH, 1, Dh)
    scores = torch.bmm(qf, k.reshape(bsz * heads, s, dh).transpose(1, 2)).mul_(dh**-0.5)  # (BH, 1, S)
    return torch.bmm(scores.softmax(dim=-1), v.reshape(bsz * heads, s, dh)).view(bsz, heads, 1, dh)


def _real_keys(mask: torch.Tensor) -> torch.Tensor:
    """A key mask where a row with no real token attends to every position instead of producing NaN."""
    mask = mask.bool()
    return mask | ~mask.any(dim=-1, keepdim=True)


class MLP(nn.Module):
    """Linear -> GELU -> dropout -> Linear (sites "mlp_in", "mlp_out")."""

    def __init__(
        self, dim: int, hidden: int, act: str = "gelu", dropout: float = 0.0, noble: NobleConfig | None = None
    ) -> None:
        super().__init__()
        if act not in MLP_ACTS:
            raise ConfigError(f"mlp activation {act!r} is unknown; use one of {', '.join(MLP_ACTS)}")
        self.approximate = "tanh" if act == "gelu_tanh" else "none"
        self.dropout = dropout
        self.fc_in = make_linear(dim, hidden, True, noble, "mlp_in")
        self.fc_out = make_linear(hidden, dim, True, noble, "mlp_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc_in(x), approximate=self.approximate)
        return self.fc_out(maybe_dropout(h, self.dropout, self.training))


class ChannelsLastConv2d(nn.Conv2d):
    """An `nn.Conv2d` (same parameters, names and checkpoints) that convolves in the channels-last layout: its
    weight is viewed channels-last for each call (a copy of a few thousand numbers; the stored parameter stays
    contiguous, as safetensors needs) and so is its input. oneDNN's CPU convolutions run 1.5x faster so (forward +
    backward of the reranker's image tower, batch 256 of 32 px, one thread of an AMD EPYC: 537 -> 362 ms); the
    result is the same up to summation order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cl = torch.channels_last
        return self._conv_forward(x.contiguous(memory_format=cl), self.weight.contiguous(memory_format=cl), self.bias)


class LearnedPos1D(nn.Module):
    """Learned positions 0..max_len-1; `forward(length, offset=0)` -> (length, dim)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.attach_optim_hints()

    def attach_optim_hints(self) -> None:
        set_optim_hints(self.table, no_weight_decay=True)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        if offset + length > self.max_len:
            raise VimtoolError(f"sequence needs {offset + length} positions but the model has {self.max_len}")
        return self.table[offset : offset + length]


class LearnedPos2D(nn.Module):
    """Learned 2D positions for an h x w grid in raster order: row table + column table, summed.

    `forward(length=None, offset=0)` -> (length, dim) for raster positions [offset, offset + length)
    (all h * w by default).
    """

    def __init__(self, h: int, w: int, dim: int) -> None:
        super().__init__()
        self.h, self.w = h, w
        self.rows = nn.Parameter(torch.randn(h, dim) * 0.02)
        self.cols = nn.Parameter(torch.randn(w, dim) * 0.02)
        self.attach_optim_hints()

    def attach_optim_hints(self) -> None:
        set_optim_hints(self.rows, no_weight_decay=True)
        set_optim_hints(self.cols, no_weight_decay=True)

    def forward(self, length: int | None = None, offset: int = 0) -> torch.Tensor:
        n = self.h * self.w
        length = n - offset if length is None else length
        if offset + length > n:
            raise VimtoolError(f"sequence needs {offset + length} positions but the grid has {self.h}x{self.w}={n}")
        grid = (self.rows[:, None, :] + self.cols[None, :, :]).flatten(0, 1)  # (h*w, D)
        return grid[offset : offset + length]


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) [sin | cos] features with geometric frequencies 1/10000^(2i/dim)."""
    if dim % 2:
        raise ConfigError(f"sin-cos positions need an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2)
    omega = 1.0 / (10000.0**omega)  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos positions (h * w, dim) in raster order: half the width encodes the row, half the column."""
    if dim % 4:
        raise ConfigError(f"2D sin-cos positions need a width divisible by 4, got {dim}")
    rows = torch.arange(h).repeat_interleave(w)  # (h*w,) row index of each raster position
    cols = torch.arange(w).repeat(h)  # (h*w,) column index
    return torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=1)


__all__ = [
    "Attention",
    "LayerKV",
    "LearnedPos1D",
    "LearnedPos2D",
    "MLP",
    "MLP_ACTS",
    "NORMS",
    "make_norm",
    "maybe_dropout",
    "sincos_1d",
    "sincos_2d",
]
