"""NOBLE's CosNet branch fused with its linear layer: forward and backward written by hand.

NOBLE (noble.py) is y = x W^T + b + sigma(x W_down^T + b_down) W_up^T with sigma = CosNet. Run op by op through
autograd, each layer adds a dozen-plus small kernels and rank-r GEMMs that reach only 60-85% of the big GEMMs'
speed on a CPU. This module computes exactly the same function with fewer, larger GEMMs:

- `cosnet_noble(layer, x)`: one `NobleLinear` (what `NobleLinear.forward` runs for CosNet), through
  `_CosNetNobleFn` when gradients are recorded and a plain no-grad path otherwise (sampling, eval).
- `grouped_cosnet_noble(layers, x)`: several CosNet `NobleLinear`s that read the same input (self-attention's
  q, k, v) as ONE autograd Function, `_CosNetNobleGroupFn`: one GEMM x [W_1; ..; W_G; W_down_1; ..; W_down_G]^T
  for every main and down projection, the G CosNets batched as one (N, G r) pass (the r x r mixings block by
  block), and in the backward one GEMM for all G down-projection gradients and grad-input accumulated into one
  buffer. The parameters stay in their own modules (state dicts and optimizer groups do not change).

This is a kernel module BELOW noble.py: it reads a layer's tensors by attribute (`weight`, `down_weight`, `act.freq1`,
...) and imports nothing of vimtool; noble.py (`NobleLinear.forward`, `can_group`) decides when it applies.
Both are once-differentiable (no double backward). tests/test_noble.py checks values and every gradient against
the paper's formula through plain autograd (fp32 to 1e-5 for every layout, gradcheck in fp64, bf16 autocast).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

# How `_CosNetNobleFn` lays out its GEMMs. "auto": by shape and dtype (see the class doc); tests force the others
# ("up": [x | sigma] [W | W_up]^T, "down": x [W ; W_down]^T, "none": separate GEMMs) to check every path in fp32.
_LAYOUT = "auto"


def _mix(a, mix_w, bias=None, transpose=True):
    """a M^T (+ bias), or a M with transpose=False, on (N, r) with `mix_w` one (r, r) matrix or a tuple of blocks.

    A tuple is the block-diagonal matrix of several CosNets side by side in (N, sum r_i) (the grouped q/k/v): one
    small GEMM per block on strided column views, not one GEMM with the zero blocks (G times the FLOPs: CosNet's
    forward + backward took 2.3 ms instead of 1.6 ms at N = 2048 and 3 x rank 32, 6.4 instead of 4.5 at rank 64).
    """
    if isinstance(mix_w, torch.Tensor):
        w = mix_w.t() if transpose else mix_w
        return a.mm(w) if bias is None else torch.addmm(bias, a, w)
    out = torch.empty_like(a)
    k = 0
    for block in mix_w:
        r = block.shape[0]
        w = block.t() if transpose else block
        if bias is None:
            torch.mm(a[:, k : k + r], w, out=out[:, k : k + r])
        else:
            torch.addmm(bias[k : k + r], a[:, k : k + r], w, out=out[:, k : k + r])
        k += r
    return out


def _cosnet_forward(h, freq1, phase1, mix_w, mix_b, freq2, phase2):
    """CosNet on h (N, r): returns (u, a, m, v, sigma) with u = w1 h + p1, a = cos u, m = M a + b_M, v = w2 m + p2."""
    u = torch.addcmul(phase1, h, freq1)
    a = torch.cos(u)
    m = _mix(a, mix_w, mix_b)  # (N, r)
    v = torch.addcmul(phase2, m, freq2)
    return u, a, m, v, torch.cos(v)


def _cosnet_backward(g_sigma, h, u, a, m, v, freq1, mix_w, freq2):
    """dL/dh and the six CosNet parameter gradients from dL/dsigma (N, r), by hand.

    q = -dL/dv = sin(v) dL/dsigma: the minus signs of d cos = -sin are applied to r-vectors, never to (N, r)
    tensors, and each (N, r) temporary is reused in place: 2 sines, 2 small GEMMs, ~12 passes over (N, r).
    With `mix_w` a tuple of diagonal blocks (see `_mix`) the mixing gradient is a tuple of blocks too.
    """
    q2 = torch.sin(v).mul_(g_sigma)  # (N, r)
    g_phase2 = q2.sum(0).neg_()
    g_freq2 = (q2 * m).sum(0).neg_()
    gm = q2.mul_(freq2.neg())  # dL/dm
    g_mix_b = gm.sum(0)
    if isinstance(mix_w, torch.Tensor):
        g_mix_w = gm.t().mm(a)  # (r, r)
    else:
        ks = [0]
        for block in mix_w:
            ks.append(ks[-1] + block.shape[0])
        g_mix_w = tuple(gm[:, k0:k1].t().mm(a[:, k0:k1]) for k0, k1 in zip(ks, ks[1:]))
    q1 = torch.sin(u).mul_(_mix(gm, mix_w, transpose=False))  # -dL/du
    g_phase1 = q1.sum(0).neg_()
    g_freq1 = (q1 * h).sum(0).neg_()
    gh = q1.mul_(freq1.neg())  # dL/dh, (N, r)
    return gh, (g_freq1, g_phase1, g_mix_w, g_mix_b, g_freq2, g_phase2)


class _CosNetNobleFn(torch.autograd.Function):
    """y = x W^T + b + sigma W_up^T, sigma = CosNet(x W_down^T + b_down): NOBLE with a hand-written backward.

    Why (profiled at width 512, rank 32 with bench/bench_transformer.py and per-layer timings): the rank-r
    GEMMs reach only 60-85% of the big GEMM's speed here, and op by op autograd adds a dozen-plus nodes of small
    kernels and temporaries per layer. So the rank-r products ride inside the big GEMMs where that is cheap:
    - "up" ([x | sigma] [W | W_up]^T, K grown by r): forward, grad-input (g [W | W_up] also yields dL/dsigma) and
      grad-weight ([g^T x | g^T sigma]) each run as ONE GEMM. Used under autocast, where stacking x is the cast
      anyway, when d_in <= d_out (the up-projection's N x d_out products are the costly rank-r GEMMs there).
    - "down" (x [W ; W_down]^T, N grown by r; backward [g | dL/dh] as one operand): the down-projection's
      products join the forward, grad-input and grad-weight GEMMs; used when d_in > d_out (e.g. MLP-out, where the
      K = d_in rank-r GEMMs are the costly ones). Costs one copy of g in the backward.
    - "none" (fp32, d_in <= d_out): separate GEMMs, except g [W | W_up] in the backward (weights stacked, no
      activation copy: stacking x in fp32 would be a fresh allocation per layer and 3 copies of the q/k/v input).
    The CosNet backward is written out (`_cosnet_backward`). The math is the paper's formula exactly in every
    layout; tests/test_noble.py checks values and every gradient against a plain autograd reference (fp32 to 1e-5
    for each layout, gradcheck in fp64, and under bf16 autocast).

    Dtypes: GEMMs run in `dtype` (autocast's bf16 when enabled, else x's dtype) with x, W, b, W_down, b_down, W_up
    cast where autocast would cast them; CosNet runs in fp32 on the fp32 parameters (bf16 keeps ~3 digits of the
    phase w * h + p). Gradients come back in each input's dtype. Once-differentiable (no double backward).
    """

    @staticmethod
    def forward(
        ctx, x, weight, bias, down_weight, down_bias, up_weight, freq1, phase1, mix_w, mix_b, freq2, phase2, dtype
    ):
        n, d_in = x.shape  # x: (N, d_in)
        d_out, r = up_weight.shape
        layout = _LAYOUT
        if layout == "auto":
            layout = "down" if d_in > d_out else ("up" if dtype != x.dtype else "none")
        cosnet = (freq1, phase1, mix_w, mix_b, freq2, phase2)
        b = None if bias is None else bias.to(dtype)
        if layout == "down":
            wd_stack = torch.empty((d_out + r, d_in), dtype=dtype, device=x.device)  # [W ; W_down]
            wd_stack[:d_out].copy_(weight)
            wd_stack[d_out:].copy_(down_weight)
            b_stack = torch.zeros(d_out + r, dtype=dtype, device=x.device)
            if b is not None:
                b_stack[:d_out].copy_(b)
            b_stack[d_out:].copy_(down_bias)
            x_c = x.to(dtype)
            both = torch.addmm(b_stack, x_c, wd_stack.t())  # (N, d_out + r) = [x W^T + b | h]
            h = both[:, d_out:].to(torch.promote_types(dtype, freq1.dtype))  # fp32 (fp64 in gradcheck), (N, r)
            u, a, m, v, sigma = _cosnet_forward(h, *cosnet)
            sigma = sigma.to(dtype)
            wu = up_weight.to(dtype)
            out = torch.addmm(both[:, :d_out], sigma, wu.t())  # (N, d_out)
            ctx.save_for_backward(x_c, sigma, wd_stack, wu, freq1, mix_w, freq2, h, u, a, m, v)
        else:
            if layout == "up":
                xs = torch.empty((n, d_in + r), dtype=dtype, device=x.device)  # [x | sigma]
                x_c = xs[:, :d_in]
                x_c.copy_(x)  # the autocast cast, fused with the stacking copy
            else:
                x_c = x.to(dtype)
            wd = down_weight.to(dtype)
            h = torch.addmm(down_bias.to(dtype), x_c, wd.t())  # (N, r)
            h = h.to(torch.promote_types(h.dtype, freq1.dtype))
            u, a, m, v, sigma = _cosnet_forward(h, *cosnet)
            wc = torch.empty((d_out, d_in + r), dtype=dtype, device=x.device)  # [W | W_up]
            wc[:, :d_in].copy_(weight)
            wc[:, d_in:].copy_(up_weight)
            if layout == "up":
                xs[:, d_in:].copy_(sigma)
                out = xs.mm(wc.t()) if b is None else torch.addmm(b, xs, wc.t())  # (N, d_out)
                ctx.save_for_backward(xs, wc, wd, freq1, mix_w, freq2, h, u, a, m, v)
            else:
                sigma = sigma.to(dtype)
                out = x_c.mm(wc[:, :d_in].t()) if b is None else torch.addmm(b, x_c, wc[:, :d_in].t())
                out.addmm_(sigma, wc[:, d_in:].t())  # + sigma W_up^T, accumulated in place
                ctx.save_for_backward(x_c, sigma, wc, wd, freq1, mix_w, freq2, h, u, a, m, v)
        ctx.layout = layout
        ctx.has_bias = bias is not None
        ctx.dtypes = (x.dtype, weight.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x_dtype, p_dtype = ctx.dtypes
        g = g.contiguous()  # (N, d_out)
        n, d_out = g.shape
        if ctx.layout == "down":
            x_c, sigma, wd_stack, wu, freq1, mix_w, freq2, h, u, a, m, v = ctx.saved_tensors
            gh, g_cosnet = _cosnet_backward(g.mm(wu).to(h.dtype), h, u, a, m, v, freq1, mix_w, freq2)
            gg = torch.empty((n, d_out + gh.shape[1]), dtype=g.dtype, device=g.device)  # [g | dL/dh]
            gg[:, :d_out].copy_(g)
            gg[:, d_out:].copy_(gh)
            gx = gg.mm(wd_stack)  # (N, d_in) = g W + dL/dh W_down
            g_stack = gg.t().mm(x_c)  # (d_out + r, d_in) = [g^T x ; dL/dh^T x]
            g_bias_stack = gg.sum(0)
            g_weight, g_down_weight = g_stack[:d_out].to(p_dtype), g_stack[d_out:].to(p_dtype)
            g_bias = g_bias_stack[:d_out].to(p_dtype) if ctx.has_bias else None
            g_down_bias = g_bias_stack[d_out:].to(p_dtype)
            g_up_weight = sigma.t().mm(g).t().to(p_dtype)  # (r, N)(N, d_out): faster than g^T sigma here
            return (gx.to(x_dtype), g_weight, g_bias, g_down_weight, g_down_bias, g_up_weight, *g_cosnet, None)
        if ctx.layout == "up":
            xs, wc, wd, freq1, mix_w, freq2, h, u, a, m, v = ctx.saved_tensors
        else:
            x_c, sigma, wc, wd, freq1, mix_w, freq2, h, u, a, m, v = ctx.saved_tensors
        d_in = wd.shape[1]
        gxs = g.mm(wc)  # (N, d_in + r) = [g W | g W_up]: grad-input and dL/dsigma in one GEMM
        gh, g_cosnet = _cosnet_backward(gxs[:, d_in:].to(h.dtype), h, u, a, m, v, freq1, mix_w, freq2)
        gh = gh.to(wc.dtype)
        gx = gxs[:, :d_in]  # (N, d_in), row stride d_in + r: a view, no copy
        gx.addmm_(gh, wd)
        if ctx.layout == "up":
            x_c = xs[:, :d_in]
            gwc = g.t().mm(xs)  # (d_out, d_in + r) = [g^T x | g^T sigma]
            g_weight, g_up_weight = gwc[:, :d_in].to(p_dtype), gwc[:, d_in:].to(p_dtype)
        else:
            g_weight = g.t().mm(x_c).to(p_dtype)
            g_up_weight = sigma.t().mm(g).t().to(p_dtype)
        g_bias = g.sum(0).to(p_dtype) if ctx.has_bias else None
        g_down_weight = gh.t().mm(x_c).to(p_dtype)
        g_down_bias = gh.sum(0).to(p_dtype)
        return (gx.to(x_dtype), g_weight, g_bias, g_down_weight, g_down_bias, g_up_weight, *g_cosnet, None)


def _cosnet_noble_no_grad(layer: nn.Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The same function without autograd (sampling, eval): no stacking copies, sigma W_up^T added in place."""
    act = layer.act
    x = x.to(dtype)  # (N, d_in)
    bias = None if layer.bias is None else layer.bias.to(dtype)
    out = x.mm(layer.weight.to(dtype).t()) if bias is None else torch.addmm(bias, x, layer.weight.to(dtype).t())
    h = torch.addmm(layer.down_bias.to(dtype), x, layer.down_weight.to(dtype).t())  # (N, r)
    h = h.to(torch.promote_types(h.dtype, act.freq1.dtype))
    a = torch.cos(torch.addcmul(act.phase1, h, act.freq1))
    sigma = torch.cos(torch.addcmul(act.phase2, torch.addmm(act.mix_bias, a, act.mix_weight.t()), act.freq2))
    return out.addmm_(sigma.to(dtype), layer.up_weight.to(dtype).t())  # (N, d_out)


def cosnet_noble(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """NobleLinear.forward for CosNet on (..., d_in): the fused autograd Function when gradients are recorded."""
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    x2 = x.reshape(-1, layer.in_features)  # (N, d_in)
    act = layer.act
    with torch.autocast(dev, enabled=False):  # we cast exactly as autocast would; no second cast inside
        if torch.is_grad_enabled():
            out = _CosNetNobleFn.apply(
                x2,
                layer.weight,
                layer.bias,
                layer.down_weight,
                layer.down_bias,
                layer.up_weight,
                act.freq1,
                act.phase1,
                act.mix_weight,
                act.mix_bias,
                act.freq2,
                act.phase2,
                dtype,
            )
        else:
            out = _cosnet_noble_no_grad(layer, x2, dtype)
    return out.view(*x.shape[:-1], layer.out_features)  # (..., d_out)


# ---------------------------------------------------------------------------------------------------------------
# Several NobleLinears on one input (self-attention's q, k, v) as one Function
# ---------------------------------------------------------------------------------------------------------------

_PER_LAYER = 11  # weight, bias, down_weight, down_bias, up_weight, freq1, phase1, mix_w, mix_b, freq2, phase2


def _layer_tensors(layer: nn.Linear) -> tuple:
    act = layer.act
    return (
        layer.weight,
        layer.bias,
        layer.down_weight,
        layer.down_bias,
        layer.up_weight,
        act.freq1,
        act.phase1,
        act.mix_weight,
        act.mix_bias,
        act.freq2,
        act.phase2,
    )


class _CosNetNobleGroupFn(torch.autograd.Function):
    """(y_1, .., y_G) for G CosNet NOBLE layers on the same x: y_i = x W_i^T + b_i + sigma_i W_up_i^T.

    Why: with NOBLE on q, k and v the base model's single qkv GEMM became three layers, each with its own
    narrow down-projection GEMM (N = r = 32), CosNet kernels and, under autocast, its own cast of x. Here:
    - forward: ONE GEMM x [W_1; ..; W_G; W_down_1; ..; W_down_G]^T + [b ; b_down] (N grown by G r: the q/k/v GEMM
      of the base model plus the G down-projections); the G CosNets run as one pass over (N, G r) with the
      per-branch vectors concatenated and the r x r mixing matrices applied block by block (`_mix`); then
      sigma_i W_up_i^T is added in place into each output slice (G GEMMs with K = r, into strided views: no copy).
    - backward: dL/dsigma_i = g_i W_up_i (G GEMMs, written into one (N, G r) buffer), the CosNet backward over
      (N, G r) (`_cosnet_backward`), all G down-projection gradients (weights and biases) in ONE GEMM and one
      column sum, and grad-input accumulated GEMM by GEMM into one buffer: dL/dh W_down (K = G r), then + g_i W_i.
      The g_i arrive as G separate tensors (separate outputs spare attention's backward the zero-fills and the
      permute copy of one (N, G d_out) output split by indexing); stacking them into one [g_1 | .. | dL/dh]
      operand for single GEMMs would cost one more copy of all of them. W_i's and W_up_i's gradients are g_i^T x
      and sigma_i^T g_i per layer.
    The outputs are strided views (row stride G d_out + G r) of the forward GEMM's result, so q, k, v reach
    attention without a copy. Dtypes as `_CosNetNobleFn`: GEMMs in `dtype` (autocast's bf16, else x's), CosNet
    in fp32.
    """

    @staticmethod
    def forward(ctx, x, dtype, *tensors):
        n_layers = len(tensors) // _PER_LAYER
        n, d_in = x.shape  # x: (N, d_in)
        layers = [tensors[i * _PER_LAYER : (i + 1) * _PER_LAYER] for i in range(n_layers)]
        d_outs = [t[0].shape[0] for t in layers]
        ranks = [t[2].shape[0] for t in layers]
        d_sum, r_sum = sum(d_outs), sum(ranks)
        w_all = torch.empty((d_sum + r_sum, d_in), dtype=dtype, device=x.device)  # [W_1; ..; W_down_1; ..]
        b_all = torch.empty(d_sum + r_sum, dtype=dtype, device=x.device)
        row = 0
        for t, d in zip(layers, d_outs):
            w_all[row : row + d].copy_(t[0])  # the cast autocast would make, fused with the stacking copy
            b_all[row : row + d].copy_(t[1]) if t[1] is not None else b_all[row : row + d].zero_()
            row += d
        for t, r in zip(layers, ranks):
            w_all[row : row + r].copy_(t[2])
            b_all[row : row + r].copy_(t[3])
            row += r
        x_c = x.to(dtype)
        both = torch.addmm(b_all, x_c, w_all.t())  # (N, d_sum + r_sum) = [y_1 | .. | y_G | h_1 | .. | h_G]
        # CosNet in fp32 (fp64 in gradcheck); in fp32 h is a view of `both`, which nothing below writes to
        h = both[:, d_sum:].to(torch.promote_types(dtype, layers[0][5].dtype))  # (N, r_sum)
        freq1, phase1, mix_b, freq2, phase2 = (torch.cat([t[j] for t in layers]) for j in (5, 6, 8, 9, 10))
        mix_w = tuple(t[7] for t in layers)  # the M_i: a block-diagonal (r_sum, r_sum) mixing, block by block
        u, a, m, v, sigma = _cosnet_forward(h, freq1, phase1, mix_w, mix_b, freq2, phase2)
        sigma = sigma.to(dtype)
        wus = [t[4].to(dtype) for t in layers]
        outs, col, k = [], 0, 0
        for wu, d, r in zip(wus, d_outs, ranks):
            y = both[:, col : col + d]  # (N, d), row stride d_sum + r_sum: a view, no copy
            y.addmm_(sigma[:, k : k + r], wu.t())  # + sigma_i W_up_i^T, in place
            outs.append(y)
            col, k = col + d, k + r
        ctx.save_for_backward(x_c, sigma, w_all, freq1, freq2, h, u, a, m, v, *wus, *mix_w)
        ctx.meta = (d_outs, ranks, [t[1] is not None for t in layers], x.dtype, layers[0][0].dtype)
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *gs):
        d_outs, ranks, has_bias, x_dtype, p_dtype = ctx.meta
        x_c, sigma, w_all, freq1, freq2, h, u, a, m, v, *rest = ctx.saved_tensors
        wus, mix_w = rest[: len(d_outs)], tuple(rest[len(d_outs) :])
        n, d_sum, r_sum = x_c.shape[0], sum(d_outs), sum(ranks)
        g_sigma = torch.empty((n, r_sum), dtype=gs[0].dtype, device=x_c.device)  # (N, r_sum)
        k = 0
        for g, wu, r in zip(gs, wus, ranks):
            torch.mm(g, wu, out=g_sigma[:, k : k + r])  # dL/dsigma_i = g_i W_up_i
            k += r
        gh, (g_freq1, g_phase1, g_mix_w, g_mix_b, g_freq2, g_phase2) = _cosnet_backward(
            g_sigma.to(h.dtype), h, u, a, m, v, freq1, mix_w, freq2
        )
        gh = gh.to(x_c.dtype)  # dL/dh, (N, r_sum)
        # grad-input: sum_i g_i W_i + dL/dh W_down, accumulated GEMM by GEMM into one (N, d_in) buffer. The grads
        # arrive as G separate tensors; stacking them into one operand would cost a copy of all of them.
        gx = gh.mm(w_all[d_sum:])  # (N, d_in)
        col = 0
        for g, d in zip(gs, d_outs):
            gx.addmm_(g, w_all[col : col + d])
            col += d
        g_down_all = gh.t().mm(x_c)  # (r_sum, d_in): every W_down_i's gradient in one GEMM
        g_down_b = gh.sum(0)
        grads: list = []
        k = 0
        for i, (g, r) in enumerate(zip(gs, ranks)):
            blk = slice(k, k + r)  # this layer's slice of the concatenated CosNet vectors
            grads += [
                g.t().mm(x_c).to(p_dtype),
                g.sum(0).to(p_dtype) if has_bias[i] else None,
                g_down_all[blk].to(p_dtype),
                g_down_b[blk].to(p_dtype),
                sigma[:, blk].t().mm(g).t().to(p_dtype),  # (d, r) = g_i^T sigma_i
                g_freq1[blk],
                g_phase1[blk],
                g_mix_w[i],
                g_mix_b[blk],
                g_freq2[blk],
                g_phase2[blk],
            ]
            k += r
        return (gx.to(x_dtype), None, *grads)


def grouped_cosnet_noble(layers: Sequence[nn.Linear], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(layer_1(x), .., layer_G(x)) on x (..., d_in), for layers where `noble.can_group` holds; each (..., d_out_i).

    With gradients recorded: one `_CosNetNobleGroupFn`; the outputs are strided views of one GEMM's result (view
    or read them, do not write to them). Without (sampling, eval): each layer's own no-grad path (a KV-cache
    decode step has N = batch rows, where stacking the weights would cost more than the GEMMs it merges).
    """
    if not torch.is_grad_enabled():
        return tuple(m(x) for m in layers)
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    x2 = x.reshape(-1, x.shape[-1])  # (N, d_in)
    tensors = [t for m in layers for t in _layer_tensors(m)]
    with torch.autocast(dev, enabled=False):  # we cast exactly as autocast would; no second cast inside
        outs = _CosNetNobleGroupFn.apply(x2, dtype, *tensors)
    return tuple(y.view(*x.shape[:-1], y.shape[-1]) for y in outs)  # each (..., d_out_i)
