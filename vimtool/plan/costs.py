"""The estimator's arithmetic: a model as shapes (stacks, linears, convolutions), and its parameters, FLOPs and
per-device memory counted from them. vimtool/plan/__init__.py builds the shapes from real configs and sums them up.

- FLOPs as `FlopCounterMode` counts them: linears 2 d_in d_out per token forward, twice that backward (once when
  the input needs no gradient); attention 4 T S d forward (full square) and 2.5x backward (fused kernels recompute
  the scores); convolutions 2 k^2 c_in c_out per output pixel; NOBLE's branches. Checkpointing recomputes each
  block's forward, not its MLP output projection when nothing after it is saved (checkpoint's early stop).
- Memory: bf16 autocast = 2 (bf16 weights) + 4 (fp32 grads) + 12 (fp32 master + AdamW moments) bytes per
  parameter, fp32 = 4 + 4 + 8; FSDP shards them and adds two unsharded units as transient. Activations are what
  autograd saves in a pre-norm block with a fused SDPA kernel (found with saved_tensors_hooks): per token fp32
  (8D + 2M) x 4 B, under autocast 2D x 4 B (the norms' residual inputs) + (6D + 2M) x 2 B, plus norm statistics,
  logsumexp, dropout masks, cross-attention and NOBLE terms; with checkpointing each block's input plus one
  recomputed block. The head keeps its fp32 log-softmax. The peak is the sum (a step with gradient
  accumulation), or AdamW's step temporary if larger; `memory_headroom` is left for what is not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from vimtool.nn.noble import NobleConfig

GB = 1e9


@dataclass
class Memory:
    """Per-device bytes (GB) at one micro-batch, for one parallelism / checkpointing choice."""

    parallel: str
    activation_checkpointing: bool
    micro_batch: int
    params_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    transient_gb: float
    total_gb: float
    fits: bool
    max_micro_batch: int  # largest per-device micro-batch within the device budget (0: not even one)


# ---------------------------------------------------------------------------------------------- the shapes
@dataclass(frozen=True)
class StackShape:
    """One transformer stack (vimtool.nn.transformer) as the estimator sees it."""

    name: str
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    tokens: int  # positions per sample
    context_tokens: int = 0  # cross-attention keys per sample (0: no cross-attention)
    norm: str = "layernorm"
    dropout: float = 0.0
    noble: NobleConfig | None = None


@dataclass(frozen=True)
class Dense:
    """A linear outside the stacks, applied to `tokens` positions per sample."""

    name: str
    d_in: int
    d_out: int
    tokens: int
    input_grad: bool = True  # False: backward computes only the weight gradient


@dataclass(frozen=True)
class Conv:
    """A k x k convolution (stride 1) producing `res` x `res` pixels."""

    c_in: int
    c_out: int
    k: int
    res: int


@dataclass
class ConvNet:
    name: str
    convs: list[Conv]
    dense: list[tuple[int, int]]  # (d_in, d_out) linears per sample
    params: int
    trainable: bool
    # per step and sample: forward passes, backward-to-input passes, backward-to-weights passes, saved graphs
    fwd: float
    bwd_input: float
    bwd_weight: float
    graphs: float


@dataclass
class ModelShape:
    stacks: list[StackShape]
    dense: list[Dense]
    other_params: int  # embeddings, position tables, codebook, null vector, ...
    search_flops: float = 0.0  # forward-only matmuls (the quantizer's nearest-code search)
    vocab: int = 0  # softmax head width (stage 2), 0 = none
    head_tokens: int = 0
    extra_act_elems: float = 0.0  # other saved per-sample activations (elements, at the activation dtype)
    mask_bytes: float = 0.0  # dropout masks outside the stacks (bool) per sample
    convnets: list[ConvNet] = field(default_factory=list)


def _norm_params(kind: str, d: int) -> int:
    return 2 * d if kind == "layernorm" else d


def _linear_params(d_in: int, d_out: int, noble: NobleConfig | None, site: str) -> int:
    n = d_in * d_out + d_out
    if noble is not None and noble.rank > 0 and noble.applies_to(site):
        r = noble.rank
        act = {"cosnet": r * r + 5 * r, "cos": 2 * r}.get(noble.activation, 0)
        n += r * d_in + r + d_out * r + act
    return n


def _noble_flops(d_in: int, d_out: int, noble: NobleConfig | None, site: str) -> int:
    """Forward FLOPs per token of a NOBLE branch at `site` (0 when off there)."""
    if noble is None or noble.rank == 0 or not noble.applies_to(site):
        return 0
    r = noble.rank
    return 2 * r * (d_in + d_out) + (2 * r * r if noble.activation == "cosnet" else 0)


def stack_params(s: StackShape) -> int:
    d, m, nb = s.dim, s.mlp_dim, s.noble
    block = 2 * _norm_params(s.norm, d)
    block += sum(_linear_params(d, d, nb, site) for site in ("q", "k", "v", "out"))
    block += _linear_params(d, m, nb, "mlp_in") + _linear_params(m, d, nb, "mlp_out")
    if s.context_tokens:  # cross-attention: its own norm, q/k/v/out (context width = d in every model here)
        block += _norm_params(s.norm, d) + sum(_linear_params(d, d, nb, site) for site in ("q", "k", "v", "out"))
    return s.depth * block + _norm_params(s.norm, d)


def _stack_forward_flops(s: StackShape) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one forward per sample."""
    d, m, t, nb = s.dim, s.mlp_dim, s.tokens, s.noble
    sites = ("q", "k", "v", "out")
    per_token = 8 * d * d + 4 * d * m + sum(_noble_flops(d, d, nb, x) for x in sites)
    per_token += _noble_flops(d, m, nb, "mlp_in") + _noble_flops(m, d, nb, "mlp_out")
    linear = t * per_token
    attn = 4.0 * t * t * d
    if s.context_tokens:
        c = s.context_tokens
        linear += t * (4 * d * d + _noble_flops(d, d, nb, "q") + _noble_flops(d, d, nb, "out"))
        linear += c * (4 * d * d + _noble_flops(d, d, nb, "k") + _noble_flops(d, d, nb, "v"))
        attn += 4.0 * t * c * d
    return s.depth * linear, s.depth * attn


def _block_act_bytes(s: StackShape, act: int, res: int) -> float:
    """Saved bytes per sample of ONE block (see the module docstring for the list of tensors)."""
    d, m, t, h = s.dim, s.mlp_dim, s.tokens, s.heads
    stats = 2 if s.norm == "layernorm" else 1
    per_token = 2 * res * d + act * (6 * d + 2 * m) + 4 * (2 * stats + h)
    if s.dropout > 0:
        per_token += 2 * d + m  # bool masks of the two residual branches and the MLP hidden
    total = t * per_token
    if s.context_tokens:
        c = s.context_tokens
        cross = res * d + act * 3 * d + 4 * (stats + h) + (d if s.dropout > 0 else 0)
        total += t * cross + c * act * (2 * d + (d if act != res else 0))  # kv (+ the context's bf16 cast)
    return total


def _noble_sites(s: StackShape) -> list[tuple[int, int, bool]]:
    """(d_in, d_out, on context tokens) of every NOBLE layer of one block."""
    nb = s.noble
    if nb is None or nb.rank == 0:
        return []
    d, m = s.dim, s.mlp_dim
    sites = [(d, d, False, x) for x in ("q", "k", "v", "out")] + [(d, m, False, "mlp_in"), (m, d, False, "mlp_out")]
    if s.context_tokens:
        sites += [(d, d, x in ("k", "v"), x) for x in ("q", "k", "v", "out")]
    return [(i, o, ctx) for i, o, ctx, site in sites if nb.applies_to(site)]


def _noble_act_bytes(s: StackShape, act: int) -> tuple[float, float]:
    """NOBLE's extra saved bytes of one block: (per sample, per micro-batch).

    Per token and layer the fused CosNet Function keeps ~6 fp32 rank-r tensors (the branch's pre-activations,
    cosines and output: it runs in fp32 under autocast too); per forward it keeps its stacked weights
    ([W; W_down] or [W | W_up], at the activation dtype), about one copy of the layer's parameters."""
    r = s.noble.rank if s.noble is not None else 0
    per_sample = sum((s.context_tokens if ctx else s.tokens) * 6 * r * 4 for _, _, ctx in _noble_sites(s))
    per_batch = sum(act * (i + r) * (o + r) for i, o, _ in _noble_sites(s))
    return per_sample, per_batch


def _stack_act_bytes(s: StackShape, act: int, res: int, checkpointing: bool) -> tuple[float, float, float]:
    """(saved bytes per sample, transient bytes per sample: one block recomputed in backward, bytes per
    micro-batch: NOBLE's stacked weights)."""
    context = s.context_tokens * res * s.dim  # the encoded context, shared by every cross-attention layer
    final_norm = s.tokens * (res * s.dim + act * s.dim)  # last block's output + its normed, cast copy
    noble_sample, noble_batch = _noble_act_bytes(s, act)
    block = _block_act_bytes(s, act, res) + noble_sample
    if checkpointing:
        return s.depth * s.tokens * res * s.dim + context + final_norm, block, noble_batch
    return s.depth * block + context + final_norm, 0.0, s.depth * noble_batch


# ---------------------------------------------------------------------------------------------- shapes per family
def _conv_params(convs: list[Conv], biases: list[bool]) -> int:
    return sum(c.c_in * c.c_out * c.k * c.k + (c.c_out if b else 0) for c, b in zip(convs, biases))


def _discriminator(dcfg: Any, r1_every: int) -> ConvNet:
    """StyleGAN2 residual discriminator (vimtool/models/discriminator.py), layer by layer."""
    s = dcfg.image_size

    def ch(res: int) -> int:
        return min(dcfg.max_channels, dcfg.channels * (s // res))

    convs, biases = [Conv(3, ch(s), 1, s)], [True]
    res = s
    while res > 4:
        convs += [
            Conv(ch(res), ch(res), 3, res),
            Conv(ch(res), ch(res // 2), 3, res),
            Conv(ch(res), ch(res // 2), 1, res // 2),
        ]
        biases += [True, True, False]
        res //= 2
    c4 = ch(4)
    convs.append(Conv(c4 + 1, c4, 3, 4))
    biases.append(True)
    dense = [(c4 * 16, c4), (c4, 1)]
    params = _conv_params(convs, biases) + sum(i * o + o for i, o in dense)
    # generator's adversarial pass: forward + input-gradient backward; discriminator step: real and fake passes,
    # forward + full backward; lazy R1: ~3 forward-equivalents (double backward) every r1_every steps
    return ConvNet(
        "discriminator", convs, dense, params, True, fwd=3 + 3 / r1_every, bwd_input=3, bwd_weight=2, graphs=3
    )


def _lpips(image_size: int) -> ConvNet:
    """VGG16 up to relu5_3 (vimtool/models/perceptual.py), frozen: forward on both images, backward on one."""
    from vimtool.models.perceptual import _VGG16_CFG

    convs, c_in, res = [], 3, image_size
    for v in _VGG16_CFG[:-1]:  # the last max-pool is after the last tap
        if v == "M":
            res //= 2
        else:
            convs.append(Conv(c_in, int(v), 3, res))
            c_in = int(v)
    params = _conv_params(convs, [True] * len(convs))
    return ConvNet("lpips (frozen)", convs, [], params, False, fwd=2, bwd_input=1, bwd_weight=0, graphs=1)


def model_shape(family: str, models: dict[str, Any], run: Any) -> ModelShape:
    """The shapes of the modules the run trains (`models`: {"model": config} (+ "disc", "lpips"))."""
    c = models["model"]
    if family == "vim":
        t, d = c.num_tokens, c.dim
        dec = StackShape("decoder", d, c.depth, c.heads, c.mlp_dim, t, 0, c.norm, c.dropout, c.noble)
        other = c.vocab_size * d + sum(c.grid) * d + (c.num_classes + 1 if c.conditional else 1) * d
        masks = t * d if c.dropout > 0 else 0.0  # the embedding dropout's bool mask
        return ModelShape([dec], [Dense("head", d, c.vocab_size, t)], other, vocab=c.vocab_size, head_tokens=t,
                          mask_bytes=masks)  # fmt: skip
    if family == "parti":
        t, d, txt = c.num_image_tokens, c.dim, c.max_text_len
        noble = c.noble if c.noble.rank > 0 else None
        enc = StackShape("text encoder", d, c.enc_depth, c.heads, c.mlp_dim, txt, 0, c.norm, c.dropout, noble)
        dec = StackShape("image decoder", d, c.dec_depth, c.heads, c.mlp_dim, t, txt, c.norm, c.dropout, noble)
        other = c.text_vocab_size * d + txt * d + d + (c.codebook_size + 1) * d + sum(c.grid) * d
        return ModelShape([enc, dec], [Dense("head", d, c.codebook_size, t)], other, vocab=c.codebook_size,
                          head_tokens=t)  # fmt: skip
    t = c.grid[0] * c.grid[1]
    pp, oc = c.patch_size**2, (2 if c.logit_laplace else 1) * c.channels
    enc = StackShape(
        "vit encoder", c.enc_dim, c.enc_depth, c.enc_heads, c.enc_mlp_dim, t, 0, c.norm, c.dropout, c.noble
    )
    dec = StackShape(
        "vit decoder", c.dec_dim, c.dec_depth, c.dec_heads, c.dec_mlp_dim, t, 0, c.norm, c.dropout, c.noble
    )
    dense = [
        Dense("patch embedding", pp * c.channels, c.enc_dim, t, input_grad=False),
        Dense("encoder head", c.enc_dim, c.enc_mlp_dim, t),
        Dense("encoder head", c.enc_mlp_dim, c.enc_dim, t),
        Dense("decoder head", c.dec_dim, c.dec_mlp_dim, t),
        Dense("decoder head", c.dec_mlp_dim, pp * oc, t),
    ]
    lookup = c.lookup_dim if c.quantizer == "factorized" else c.enc_dim
    if c.out_conv:  # the pixel refiner's two 3x3 convs: a linear of 9 x channels inputs at every pixel
        hw = c.image_size**2
        dense += [Dense("pixel refiner", 9 * oc, c.out_conv, hw), Dense("pixel refiner", 9 * c.out_conv, oc, hw)]
    if c.quantizer == "factorized":
        dense += [Dense("quantizer", c.enc_dim, lookup, t), Dense("quantizer", lookup, c.dec_dim, t)]
    elif c.enc_dim != c.dec_dim:
        dense.append(Dense("quantizer", c.enc_dim, c.dec_dim, t))
    # heads and quantizer keep their inputs and the tanh outputs; ~8 image-sized tensors for the losses
    extra = t * (pp * c.channels + 2 * c.enc_dim + c.enc_mlp_dim + lookup + c.dec_dim + c.dec_mlp_dim + pp * oc)
    extra += 8 * c.channels * c.image_size**2
    shape = ModelShape([enc, dec], dense, c.codebook_size * lookup, search_flops=2.0 * t * c.codebook_size * lookup,
                       extra_act_elems=extra)  # fmt: skip
    if "disc" in models:
        shape.convnets.append(_discriminator(models["disc"], run.loss.r1_every))
    if "lpips" in models:
        shape.convnets.append(_lpips(c.image_size))
    return shape


def analytic_params(shape: ModelShape) -> dict[str, int]:
    """Parameter counts from the shapes alone, per module (model, disc, lpips)."""
    model = shape.other_params + sum(stack_params(s) for s in shape.stacks)
    model += sum(d.d_in * d.d_out + d.d_out for d in shape.dense)
    out = {"model": model}
    for net in shape.convnets:
        out["disc" if net.trainable else "lpips"] = net.params
    return out


# ---------------------------------------------------------------------------------------------- FLOPs
def _conv_forward_flops(net: ConvNet) -> float:
    return sum(2.0 * c.k * c.k * c.c_in * c.c_out * c.res * c.res for c in net.convs) + sum(
        2.0 * i * o for i, o in net.dense
    )


def flops(shape: ModelShape) -> tuple[float, float, float, dict[str, float]]:
    """Per sample: (model forward, whole step forward + backward, recompute with checkpointing, by part)."""
    parts: dict[str, float] = {}
    forward = recompute = 0.0
    for s in shape.stacks:
        lin, attn = _stack_forward_flops(s)
        parts[f"{s.name} linears"] = 3 * lin
        parts[f"{s.name} attention"] = 3.5 * attn  # backward 2.5x: fused kernels recompute the scores
        forward += lin + attn
        # torch.utils.checkpoint stops recomputing once the last saved tensor is back (early stop, its default):
        # a pre-norm block's last one is the MLP hidden, so the output projection is not recomputed, unless dropout
        # saves a mask after it (measured on an H200, bench/bench_plan.py --device cuda) or NOBLE there saves its
        # branch, which comes out of the same GEMM
        noble_out = s.noble is not None and s.noble.rank > 0 and s.noble.applies_to("mlp_out")
        skipped = 2.0 * s.tokens * s.mlp_dim * s.dim if s.dropout == 0 and not noble_out else 0.0
        recompute += lin + attn - s.depth * skipped
    for d in shape.dense:
        f = 2.0 * d.d_in * d.d_out * d.tokens
        parts[d.name] = parts.get(d.name, 0.0) + f * (3 if d.input_grad else 2)
        forward += f
    if shape.search_flops:
        parts["code search (forward only)"] = shape.search_flops
        forward += shape.search_flops
    for net in shape.convnets:
        parts[net.name] = _conv_forward_flops(net) * (net.fwd + net.bwd_input + net.bwd_weight)
    return forward, sum(parts.values()), recompute, parts


# ---------------------------------------------------------------------------------------------- memory
def _bytes_per_param(precision: str, optimizer: str) -> tuple[int, int, float]:
    """(params, grads, optimizer) bytes per trainable parameter."""
    if precision == "bf16":  # bf16 working copy; fp32 grads; fp32 master + moments in the optimizer
        return 2, 4, (12.0 if optimizer == "adamw" else 4.4)
    return 4, 4, (8.0 if optimizer == "adamw" else 0.4)


def activation_bytes(shape: ModelShape, precision: str, checkpointing: bool) -> tuple[float, float, float]:
    """(saved activation bytes per sample, transient bytes per sample, saved bytes per micro-batch)."""
    act, res = (2, 4) if precision == "bf16" else (4, 4)
    saved = shape.extra_act_elems * act + shape.mask_bytes
    transient = per_batch = 0.0
    for s in shape.stacks:
        kept, recomputed, batch = _stack_act_bytes(s, act, res, checkpointing)
        saved += kept
        transient = max(transient, recomputed)
        per_batch = per_batch + batch if not checkpointing else max(per_batch, batch)
    if shape.vocab:
        saved += 4.0 * shape.head_tokens * shape.vocab  # the fp32 log-softmax
        transient = max(transient, 8.0 * shape.head_tokens * shape.vocab)  # its gradient in and out
    for net in shape.convnets:
        # each conv's input and output (the pre- and post-activation tensors), per saved graph
        saved += net.graphs * sum((c.c_in + c.c_out) * c.res**2 for c in net.convs) * act
    return saved, transient, per_batch


def _units(shape: ModelShape, counts: dict[str, int]) -> list[int]:
    """Parameter counts of the FSDP units: each block, and the rest of the model as one."""
    blocks = [(stack_params(s) - _norm_params(s.norm, s.dim)) // s.depth for s in shape.stacks for _ in range(s.depth)]
    rest = counts["model"] + counts.get("disc", 0) - sum(blocks)
    return sorted(blocks + [rest], reverse=True)


def memory(
    shape: ModelShape,
    counts: dict[str, int],
    precision: str,
    optimizer: str,
    parallel: str,
    checkpointing: bool,
    micro_batch: int,
    devices: int,
    budget_gb: float,
) -> Memory:
    trainable = counts["model"] + counts.get("disc", 0)
    p_b, g_b, o_b = _bytes_per_param(precision, optimizer)
    params, grads, opt = trainable * p_b, trainable * g_b, trainable * o_b
    # AdamW's multi-tensor step (torch's default on GPUs) holds one fp32 temporary of the parameters' size
    # (the square root of the second moments); Adafactor's factored state needs none of that size
    step_temp = trainable * 4.0 if optimizer == "adamw" else 0.0
    units = 0.0
    if parallel == "fsdp":
        params, grads, opt, step_temp = params / devices, grads / devices, opt / devices, step_temp / devices
        units = sum(_units(shape, counts)[:2]) * (p_b + g_b)  # unsharded params + grads of two units at a time
    params += counts.get("lpips", 0) * 4  # frozen, replicated, fp32
    saved, transient, per_batch = activation_bytes(shape, precision, checkpointing)
    states = params + grads + opt
    budget = budget_gb * GB

    def peak(micro: int) -> float:  # the backward's peak, or the optimizer step's once activations are freed
        return states + max(units + per_batch + micro * (saved + transient), step_temp)

    per_sample = saved + transient
    max_micro = max(0, math.floor((budget - states - units - per_batch) / per_sample)) if peak(1) <= budget else 0
    total = peak(micro_batch)
    activations = per_batch + micro_batch * saved
    return Memory(
        parallel, checkpointing, micro_batch, params / GB, grads / GB, opt / GB, activations / GB,
        (total - states - activations) / GB, total / GB, total <= budget, max_micro,
    )  # fmt: skip


def cpu_sdpa_flop_formulas() -> dict[Any, Any]:
    """`FlopCounterMode(custom_mapping=...)` entries for the CPU flash-attention kernels, which torch's counter
    has no formula for (it counts 0 FLOPs for attention on a CPU): the same formulas it uses for the GPU kernels."""
    from torch.utils import flop_counter as fc

    def forward(q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
