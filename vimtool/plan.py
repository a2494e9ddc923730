"""Training plan before any training: parameters, FLOPs, per-device memory, micro-batch, time (`vimtool plan`).

`plan(PlanConfig) -> PlanResult`. The model comes from a recipe (the `train-lm` / `train-t2i` / `train-tokenizer`
run config, `--set` overrides applied as those commands apply them) or a named size (`vim-base`, `parti-3b`,
`tokenizer-ss`, ...). It is built on the meta device (no memory, instant even at 20B) for the real parameter
counts; everything else is counted analytically from the shapes (`_shape`), and the meta count must equal the
analytic one (tests/test_plan.py), which keeps the shapes honest. docs/PLAN.md lists what is counted and how
bench/check_plan.py measured it (CPU and H200: FLOPs equal to FlopCounterMode, peak memory within 12%). In short:

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

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from vimtool.config import ConfigError, build, deep_merge, read_recipe, to_dict
from vimtool.nn.noble import NobleConfig

Family = Literal["vim", "parti", "tokenizer"]
GB = 1e9


@dataclass(frozen=True)
class GPU:
    """Peak dense tensor-core throughput (TFLOP/s; vendor datasheets) and memory (GB)."""

    bf16_tflops: float
    tf32_tflops: float
    memory_gb: float


GPUS: dict[str, GPU] = {
    "a100": GPU(312, 156, 80),
    "a100-40gb": GPU(312, 156, 40),
    "h100": GPU(989, 495, 80),  # SXM
    "h100-pcie": GPU(756, 378, 80),
    "h200": GPU(989, 495, 141),
    "b200": GPU(2250, 1100, 180),
    "l40s": GPU(362, 183, 48),
    "l4": GPU(121, 60, 24),
    "a10": GPU(125, 62.5, 24),
    "mi300x": GPU(1307, 654, 192),
}


@dataclass(frozen=True)
class PaperFacts:
    family: Family
    size: str
    params: float | None  # the paper's reported parameter count
    global_batch: int
    steps: int


# Named models -> (family, size in that family's SIZES, the paper's figures). PAPERS.md: VIM sec. 2 (batch 1024,
# 450k steps), Parti sec. 3 (batch 8192; steps unstated: the 350M recipe's 450k), ViT-VQGAN sec. 1 (batch 256,
# 500k steps; params = its encoder + decoder ViTs: S 32M, B 91M, L 599M).
PAPER: dict[str, PaperFacts] = {
    "vim-base": PaperFacts("vim", "base", 650e6, 1024, 450_000),
    "vim-large": PaperFacts("vim", "large", 1.7e9, 1024, 450_000),
    "parti-350m": PaperFacts("parti", "350M", 350e6, 8192, 450_000),
    "parti-750m": PaperFacts("parti", "750M", 750e6, 8192, 450_000),
    "parti-3b": PaperFacts("parti", "3B", 3e9, 8192, 450_000),
    "parti-20b": PaperFacts("parti", "20B", 20e9, 8192, 450_000),
    "tokenizer-ss": PaperFacts("tokenizer", "SS", 64e6, 256, 500_000),
    "tokenizer-bb": PaperFacts("tokenizer", "BB", 182e6, 256, 500_000),
    "tokenizer-sl": PaperFacts("tokenizer", "SL", 631e6, 256, 500_000),
    "tokenizer-ll": PaperFacts("tokenizer", "LL", 1198e6, 256, 500_000),
}
_PAPER_RUN = {f.family: f for f in PAPER.values()}  # the family's paper batch/steps for any of its sizes


@dataclass
class PlanConfig:
    """What to plan: a model (recipe or named size) and the hardware to train it on."""

    model: str | None = None  # named size: vim-base, parti-3b, tokenizer-ss, ... or <family>-<any SIZES key>
    recipe: str | None = None  # a train-lm / train-t2i / train-tokenizer recipe file
    family: Literal["auto", "vim", "parti", "tokenizer"] = "auto"  # which command the recipe is for
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, applied to the run config
    devices: int = 1
    device_memory_gb: float | None = None  # default: the GPU's
    parallel: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False
    micro_batch: int | None = None  # per device; default: the largest that fits
    global_batch: int | None = None  # default: the recipe's train.batch_size (the paper's for named sizes)
    gpu: str = "h100"
    mfu: float = 0.4
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: the recipe's train.precision (auto -> bf16)
    memory_headroom: float = 0.1  # fraction of device memory left free (CUDA context, fragmentation, buffers)
    # Data facts the shards would give (stage 2): codebook size, token grid side, classes (None: 1000 when
    # the VIM run is class-conditional, as ImageNet).
    codebook_size: int = 8192
    token_grid: int = 32
    num_classes: int | None = None


@dataclass
class ParamCount:
    total: int
    trainable: int
    analytic: int  # from the shapes; equals `total` (tests/test_plan.py)


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


@dataclass
class PlanResult:
    name: str
    family: str
    size: str
    paper_params: float | None
    params: dict[str, ParamCount]  # per module: model (+ disc, lpips for tokenizers)
    total_params: int
    trainable_params: int
    flops_forward_per_sample: float
    flops_per_sample: float  # forward + backward
    flops_recompute_per_sample: float  # extra forward of the blocks with activation checkpointing
    flops_per_step: float  # per global batch
    flops_parts: dict[str, float]  # forward + backward per sample, by part
    precision: str
    gpu: str
    peak_tflops: float
    device_memory_gb: float
    devices: int
    mfu: float
    global_batch: int
    steps: int
    micro_batch: int
    grad_accum: int
    memory: list[Memory]  # ddp / fsdp x checkpointing off / on, at `micro_batch`
    chosen: Memory
    step_seconds: float
    total_days: float
    assumptions: list[str]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


# ---------------------------------------------------------------------------------------------- resolving the model
def _family_modules(family: str):
    """(run config class, model module) of a family; imported here so that importing vimtool.plan stays light."""
    if family == "vim":
        from vimtool.models import vim as mod
        from vimtool.train.lm import LMRunConfig as run
    elif family == "parti":
        from vimtool.models import parti as mod
        from vimtool.train.t2i import T2IRunConfig as run
    else:
        from vimtool.models import vitvqgan as mod
        from vimtool.train.tokenizer import TokenizerRunConfig as run
    return run, mod


_SHAPE_KEYS = ("dim", "depth", "heads", "mlp_dim", "noble", "enc_dim", "enc_depth", "enc_mlp_dim", "dec_dim",
               "dec_depth", "dec_mlp_dim", "codebook_size", "lookup_dim", "patch_size", "image_size")  # fmt: skip
_COMMANDS = {"vim": "train-lm", "parti": "train-t2i", "tokenizer": "train-tokenizer"}


def _named(name: str) -> tuple[Family, str]:
    key = name.lower()
    if key in PAPER:
        return PAPER[key].family, PAPER[key].size
    family, _, size = key.partition("-")
    if family in _COMMANDS and size:
        sizes = _family_modules(family)[1].SIZES
        match = next((s for s in sizes if s.lower() == size), None)
        if match is not None:
            return family, match  # type: ignore[return-value]
    raise ConfigError(f"unknown model {name!r}; use one of {', '.join(PAPER)} or <vim|parti|tokenizer>-<size>")


def _recipe_family(path: str, data: dict[str, Any], overrides: dict[str, Any]) -> Family:
    """The family whose run config accepts the recipe; ties are broken by the command in the recipe's header."""
    fits = []
    for fam in _COMMANDS:
        try:
            build(_family_modules(fam)[0], deep_merge(data, overrides))
            fits.append(fam)
        except ConfigError:
            continue
    if len(fits) > 1:
        with open(path, encoding="utf-8") as f:
            header = "".join(line for line in f if line.startswith("#"))
        fits = [fam for fam in fits if f" {_COMMANDS[fam]} " in header] or fits
    if len(fits) != 1:
        raise ConfigError(f"cannot tell which training command recipe {path} is for; pass --family vim|parti|tokenizer")
    return fits[0]  # type: ignore[return-value]


def _resolve(cfg: PlanConfig):
    """-> (name, family, size, run config, {module name: its config}, the paper's facts of the size)."""
    if (cfg.model is None) == (cfg.recipe is None):
        raise ConfigError("give exactly one of --model NAME (e.g. vim-base) or --config RECIPE")
    if cfg.model is not None:
        family, size = _named(cfg.model)
        run_facts = _PAPER_RUN[family]
        data: dict[str, Any] = {"size": size, "train": {"batch_size": run_facts.global_batch, "steps": run_facts.steps}}
        name = cfg.model.lower()
    else:
        data = read_recipe(cfg.recipe)
        family = cfg.family if cfg.family != "auto" else _recipe_family(cfg.recipe, data, cfg.overrides)
        name = str(cfg.recipe)
    if cfg.family not in ("auto", family):
        raise ConfigError(f"--family {cfg.family} does not match model {cfg.model} ({family})")
    run_cls, mod = _family_modules(family)
    run = build(run_cls, deep_merge(data, cfg.overrides))
    # an alias (the tokenizer's small/base/large) is the same config object as the paper's name (SS/BB/LL)
    size = next((k for k, v in mod.SIZES.items() if v is mod.SIZES.get(run.size)), run.size)
    paper = next((f for f in PAPER.values() if (f.family, f.size) == (family, size)), None)
    if paper is not None and any(k in run.model for k in _SHAPE_KEYS):
        paper = None  # a paper size reshaped by model overrides is no longer the paper's model
    grid = (cfg.token_grid, cfg.token_grid)
    models: dict[str, Any] = {}
    if family == "vim":
        classes = cfg.num_classes if cfg.num_classes is not None else (run.num_classes or 1000)
        models["model"] = run.model_config(cfg.codebook_size, grid, 0 if run.conditional == "no" else classes)
    elif family == "parti":
        if run.size not in mod.SIZES:
            raise ConfigError(f"unknown Parti size {run.size!r}; use one of {', '.join(mod.SIZES)}")
        sized = deep_merge(to_dict(mod.SIZES[run.size]), run.model)
        sized.update(text_vocab_size=run.text_vocab_size, codebook_size=cfg.codebook_size, grid=list(grid))
        if run.text_max_len is not None:
            sized["max_text_len"] = run.text_max_len
        models["model"] = build(mod.PartiConfig, sized, prefix="model.")
    else:
        from vimtool.models.discriminator import DiscriminatorConfig

        mcfg = run.model_config()
        models["model"] = mcfg
        if run.loss.adversarial > 0:
            models["disc"] = DiscriminatorConfig(mcfg.image_size, run.disc_channels, run.disc_max_channels)
        if run.loss.perceptual > 0:
            models["lpips"] = None  # frozen VGG16: no config
    return name, family, size, run, models, paper


def model_configs(cfg: PlanConfig) -> dict[str, Any]:
    """The configs of the modules the planned run trains: {"model": config} (+ "disc", and "lpips": None)."""
    return _resolve(cfg)[4]


def _build_meta(family: str, name: str, config: Any) -> torch.nn.Module:
    """The real module on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        if name == "disc":
            from vimtool.models.discriminator import StyleGANDiscriminator

            return StyleGANDiscriminator(config)
        if name == "lpips":
            from vimtool.models.perceptual import VGG16Features

            return VGG16Features().requires_grad_(False)
        if family == "vim":
            from vimtool.models.vim import VIM

            return VIM(config)
        if family == "parti":
            from vimtool.models.parti import Parti

            return Parti(config)
        from vimtool.models.vitvqgan import ViTVQGAN

        return ViTVQGAN(config)


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


def _shape(family: str, models: dict[str, Any], run: Any) -> ModelShape:
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
        # saves a mask after it (measured on an H200, bench/check_plan.py --device cuda) or NOBLE there saves its
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


# ---------------------------------------------------------------------------------------------- the plan
def _batching(global_batch: int, devices: int, max_micro: int, micro: int | None) -> tuple[int, int, list[str]]:
    """(micro-batch per device, accumulation steps, notes): the fewest accumulation steps that fit."""
    notes = []
    if global_batch % devices:
        notes.append(f"global batch {global_batch} is not divisible by {devices} devices; the engine refuses it")
    per_device = max(1, global_batch // devices)
    if micro is not None:
        if per_device % micro:
            notes.append(
                f"micro-batch {micro} does not divide the {per_device} samples per device; the engine refuses it"
            )
        return micro, max(1, math.ceil(per_device / micro)), notes
    for accum in range(1, per_device + 1):
        if per_device % accum == 0 and per_device // accum <= max(1, max_micro):
            return per_device // accum, accum, notes
    return 1, per_device, notes


def plan(cfg: PlanConfig) -> PlanResult:
    """Estimate parameters, FLOPs, per-device memory, batching and time of a training run (module docstring)."""
    if cfg.gpu.lower() not in GPUS:
        raise ConfigError(f"unknown gpu {cfg.gpu!r}; use one of {', '.join(GPUS)}")
    if cfg.devices < 1 or not 0 < cfg.mfu <= 1 or not 0 <= cfg.memory_headroom < 1:
        raise ConfigError("devices must be >= 1, mfu in (0, 1] and memory_headroom in [0, 1)")
    if (cfg.micro_batch is not None and cfg.micro_batch < 1) or (cfg.global_batch is not None and cfg.global_batch < 1):
        raise ConfigError("micro_batch and global_batch must be >= 1")
    gpu = GPUS[cfg.gpu.lower()]
    name, family, size, run, models, paper = _resolve(cfg)
    shape = _shape(family, models, run)
    analytic = analytic_params(shape)
    params: dict[str, ParamCount] = {}
    for key, config in models.items():
        module = _build_meta(family, key, config)
        total = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        params[key] = ParamCount(total, trainable, analytic[key])
    counts = {k: v.total for k, v in params.items()}

    precision = cfg.precision if cfg.precision != "auto" else ("fp32" if run.train.precision == "fp32" else "bf16")
    optimizer = run.train.optimizer
    global_batch = cfg.global_batch or run.train.batch_size
    memory_gb = cfg.device_memory_gb or gpu.memory_gb
    budget = memory_gb * (1 - cfg.memory_headroom)

    def estimate(parallel: str, ckpt: bool, micro: int) -> Memory:
        return memory(shape, counts, precision, optimizer, parallel, ckpt, micro, cfg.devices, budget)

    probe = estimate(cfg.parallel, cfg.activation_checkpointing, 1)
    micro, accum, notes = _batching(global_batch, cfg.devices, probe.max_micro_batch, cfg.micro_batch)
    table = [estimate(p, ck, micro) for p in ("ddp", "fsdp") for ck in (False, True)]
    chosen = next(
        m for m in table if m.parallel == cfg.parallel and m.activation_checkpointing == cfg.activation_checkpointing
    )
    if not chosen.fits:
        better = [m for m in table if m.fits]
        hint = (
            f"; fits with {better[0].parallel}{' + checkpointing' if better[0].activation_checkpointing else ''}"
            if better
            else ""
        )
        notes.append(f"does not fit: {chosen.total_gb:.1f} GB needed per device, {budget:.1f} GB usable{hint}")

    fwd, per_sample, recompute, parts = flops(shape)
    peak = (gpu.bf16_tflops if precision == "bf16" else gpu.tf32_tflops) * 1e12
    step_flops = per_sample * global_batch
    step_seconds = step_flops / (cfg.devices * peak * cfg.mfu)
    assumptions = [f"precision {precision} ({'autocast, fp32 master weights' if precision == 'bf16' else 'fp32'}), "
                   f"optimizer {optimizer}, {memory_gb:g} GB per device with {cfg.memory_headroom:.0%} kept free"]  # fmt: skip
    if family in ("vim", "parti"):
        c = models["model"]
        data = f"data: {cfg.codebook_size} codes, {cfg.token_grid}x{cfg.token_grid} tokens"
        if family == "vim":
            data += f", {c.num_classes} classes" if c.num_classes else ", unconditional"
        else:
            data += f", text padded to {c.max_text_len} positions, text vocabulary {c.text_vocab_size}"
        assumptions.append(data + " (--codebook-size, --token-grid, --num-classes change them)")
    if cfg.activation_checkpointing:
        assumptions.append(
            f"checkpointing recomputes {recompute / per_sample:.0%} of the step's FLOPs (not in the time)"
        )
    return PlanResult(
        name=name, family=family, size=size, paper_params=paper.params if paper else None, params=params,
        total_params=sum(counts.values()), trainable_params=sum(p.trainable for p in params.values()),
        flops_forward_per_sample=fwd, flops_per_sample=per_sample, flops_recompute_per_sample=recompute,
        flops_per_step=step_flops, flops_parts=parts, precision=precision, gpu=cfg.gpu.lower(),
        peak_tflops=peak / 1e12, device_memory_gb=memory_gb, devices=cfg.devices, mfu=cfg.mfu,
        global_batch=global_batch, steps=run.train.steps, micro_batch=micro, grad_accum=accum, memory=table,
        chosen=chosen, step_seconds=step_seconds, total_days=step_seconds * run.train.steps / 86400,
        assumptions=assumptions, notes=notes,
    )  # fmt: skip


__all__ = [
    "GPUS",
    "PAPER",
    "Memory",
    "ParamCount",
    "PlanConfig",
    "PlanResult",
    "activation_bytes",
    "analytic_params",
    "cpu_sdpa_flop_formulas",
    "flops",
    "model_configs",
    "plan",
]
