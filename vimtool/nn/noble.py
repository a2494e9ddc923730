"""NOBLE: a permanent nonlinear low-rank branch on every linear layer (arXiv 2603.06492, docs/PAPERS.md section 4).

    y = x W + b + sigma(x W_down + b_down) W_up

The branch is trained from scratch with the rest of the model (it is not an adapter). The default sigma is
CosNet, two cosines with learnable per-dimension frequency and phase around an r x r mixing layer:

    CosNet(h) = cos(w2 * (M cos(w1 * h + p1) + b_M) + p2)          (output bounded in [-1, 1])

Interface (docs/ARCHITECTURE.md, used by every model):
- `NobleConfig(rank=0, activation="cosnet", placement=(q, k, v, out, mlp_in, mlp_out), preset="paper", <knobs>)`;
  rank 0 = off. The knobs (`KNOBS`: main_init, mix_bias, lr_mult_down, lr_mult_up_power, lr_mult_mix_power,
  lr_mult_freq, lr_mult_phase) default to the preset's values (`PRESETS`, expanded by `NobleConfig.knobs()`
  only); a knob given explicitly wins over the preset. Saved configs of NOBLE models hold the expanded knobs; an
  old config without them reads as the "paper" preset, exactly the behaviour before presets existed.
- `make_linear(d_in, d_out, bias=True, noble=None, site="q")` -> `NobleLinear` when `noble.rank > 0` and `site in
  noble.placement`, else `nn.Linear` with a zero bias and a N(0, 0.02) weight, or N(0, `noble.main_init`) at a
  placement site (so a baseline with NOBLE off can be given the same main init as a NOBLE run).
- Optimizer hints live ON THE PARAMETERS: `p.lr_mult` (float) and `p.no_weight_decay` (bool), set with
  `set_optim_hints(p, ...)`. Modules owning hinted parameters also define `attach_optim_hints()`, which
  re-attaches them (Parameter attributes do not survive `copy.deepcopy`). The layer only describes its
  parameters; the training side turns the hints into optimizer groups (`vimtool.train.optim.param_groups`).
- `check_noble_options(rank, activation, placement, names, preset=..., **knobs)`: the ONE validation of NOBLE's
  options, used by `NobleConfig` (recipes, saved configs) and `noble_from_cli` (`--noble-rank/--noble-act/
  --noble-placement/--noble-preset`).
- `noble_param_count(model) -> (total, noble_only)`; `noble_from_cli(rank, activation, placement, preset) -> dict`
  (the override dict for a `NobleConfig` section) and `NOBLE_CLI_HELP` (help texts for the `--noble-*` options).

The authors' initialisation and learning-rate multipliers (docs/PAPERS.md section 4), with the knob of each:
  W      ~ N(0, main_init): "paper" 0.02 (the house init), "reference" 0.5/sqrt(d_in) (the authors' code); b = 0
  W_down ~ N(0, 1/sqrt(d_in)), lr x lr_mult_down (1)      b_down = 0, lr x1 (unstated: zero, like any bias)
  W_up   ~ N(0, 0.01/sqrt(r)), lr x (min(d_in, d_out)/r)^lr_mult_up_power (0.4)   (near zero, not zero)
  M      ~ N(0, 0.5/sqrt(r)),  lr x (min(d_in, d_out)/r)^lr_mult_mix_power: "paper" 0.5 as described ("d" read as
         the same min(d_in, d_out) as W_up's), "reference" 0 (x1: what the authors' runs trained it at)
  b_M = 0 (unstated), lr x1, present iff mix_bias;  w1, w2 ~ U[0.8, 1.2], lr x lr_mult_freq (2);
  p1, p2 ~ N(0, 0.1), lr x lr_mult_phase (4).
Frequencies and phases get no weight decay (decay would pull frequencies toward 0 and phases toward an arbitrary
origin); W_down, W_up and M are decayed like any matrix; biases are not.
Speed: with CosNet, training runs `_CosNetNobleFn` (noble_fused.py, a kernel module below this one that knows
nothing of these classes: same math, hand-written backward, the rank-r products folded into the big GEMMs;
self-attention's q/k/v run as one grouped Function there when `can_group` says so, see layers.py);
bench/bench_transformer.py `--op-by-op` compares it with the plain autograd path. Other activations (and CosNet
without b_M, mix_bias false) run op by op.
The authors' code attached one multiplier to a module instead of its parameter, where optimizers never see it;
here every multiplier is an attribute of the parameter itself and tests/test_noble.py checks that each one
reaches a real `torch.optim.AdamW` param group (built by vimtool/train/optim.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vimtool.config import ConfigError
from vimtool.nn.noble_fused import cosnet_noble

SITES: tuple[str, ...] = ("q", "k", "v", "out", "mlp_in", "mlp_out")
# The activations the paper compares. relu2 is squared ReLU; cos is a single cosine with learnable frequency and
# phase (CosNet without the mixing layer and second cosine); identity makes the branch a plain low-rank linear.
ACTIVATIONS: tuple[str, ...] = ("cosnet", "cos", "gelu", "relu", "relu2", "silu", "tanh", "identity")

# How each option is named in messages: recipe / config keys, or the command-line options (noble_from_cli).
CONFIG_NAMES = {"rank": "noble.rank", "activation": "noble.activation", "placement": "noble.placement",
                "preset": "noble.preset"}  # fmt: skip
CLI_NAMES = {"rank": "--noble-rank", "activation": "--noble-act", "placement": "--noble-placement",
             "preset": "--noble-preset"}  # fmt: skip

# Settings by name (docs/PAPERS.md section 4), expanded into the knobs here and nowhere else (NobleConfig).
# "paper": as the paper describes NOBLE; the paper gives no init for the wrapped W, so it keeps the house N(0, 0.02)
#   (this is vimtool's behaviour from before presets existed, hence the default).
# "reference": what the authors' runs did: their code draws W from N(0, 0.5/sqrt(d_in)), and attaches M's multiplier
#   to a module where no optimizer sees it, so M trained at x1 (power 0).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "main_init": "0.02",  # std of the wrapped W: a number, or "C/sqrt(d_in)"
        "mix_bias": True,  # CosNet's M has a bias b_M
        "lr_mult_down": 1.0,  # W_down
        "lr_mult_up_power": 0.4,  # W_up at (min(d_in, d_out)/r)^power
        "lr_mult_mix_power": 0.5,  # M at (min(d_in, d_out)/r)^power
        "lr_mult_freq": 2.0,  # w1, w2 (CosNet and the single cosine)
        "lr_mult_phase": 4.0,  # p1, p2
    },
}
PRESETS["reference"] = PRESETS["paper"] | {"main_init": "0.5/sqrt(d_in)", "lr_mult_mix_power": 0.0}
DEFAULT_PRESET = "paper"
KNOBS: tuple[str, ...] = tuple(PRESETS[DEFAULT_PRESET])


def check_noble_options(
    rank: Any = None,
    activation: Any = None,
    placement: Any = None,
    names: dict[str, str] = CONFIG_NAMES,
    preset: Any = None,
    **knobs: Any,
) -> dict[str, Any]:
    """The one validation of NOBLE's options (configs, recipes, the command line): normalized values of those given.

    Arguments left None are neither checked nor returned. `placement`: a sequence of sites, a comma list, or
    `all`; it must name at least one site (rank 0 turns NOBLE off). `preset`: a name in PRESETS. `knobs`: any of
    KNOBS (main_init: a positive number or "C/sqrt(d_in)", normalized to a string; mix_bias: a bool; lr_mult_down,
    lr_mult_freq, lr_mult_phase: positive numbers; the two powers: any finite number). Returns {"rank": int,
    "activation": str, "placement": tuple of sites, ...} for the given ones; a bad value is a one-line ConfigError
    naming the option as `names` spells it (knobs not in `names` as `noble.<knob>`).
    """
    out: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(
                f"{names.get('preset', 'noble.preset')} {preset!r} is unknown; use {' or '.join(PRESETS)}"
            )
        out["preset"] = preset
    for knob, value in knobs.items():
        if value is not None:
            out[knob] = _check_knob(knob, value, names.get(knob, f"noble.{knob}"))
    if rank is not None:
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise ConfigError(f"{names['rank']} must be an integer >= 0 (0 = off), got {rank!r}")
        out["rank"] = int(rank)
    if activation is not None:
        if activation not in ACTIVATIONS:
            raise ConfigError(f"{names['activation']} {activation!r} is unknown; use one of {', '.join(ACTIVATIONS)}")
        out["activation"] = activation
    if placement is not None:
        if isinstance(placement, str):
            items = SITES if placement.strip() == "all" else placement.split(",")
        else:
            items = placement
        sites = tuple(str(s).strip() for s in items if str(s).strip())
        bad = [s for s in sites if s not in SITES]
        if bad or not sites:
            raise ConfigError(
                f"{names['placement']} {placement!r}: give a comma list of sites from {','.join(SITES)} (or 'all')"
                + (f"; unknown: {', '.join(bad)}" if bad else "")
            )
        out["placement"] = sites
    return out


def _check_knob(knob: str, value: Any, name: str) -> Any:
    """One knob's normalized value (see check_noble_options), or a ConfigError naming it as `name`."""
    if knob not in KNOBS:
        raise ConfigError(f"{name} is not a NOBLE setting; use one of {', '.join(KNOBS)}")
    if knob == "main_init":
        return _main_init_text(value, name)
    if knob == "mix_bias":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    number = None if isinstance(value, bool) else _number(value)
    positive = knob in ("lr_mult_down", "lr_mult_freq", "lr_mult_phase")
    if number is None or not math.isfinite(number) or (positive and number <= 0):
        what = "a number > 0" if positive else "a finite number (0 = multiplier 1)"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return number


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _main_init_text(value: Any, name: str) -> str:
    """main_init as canonical text: "0.02" (a fixed std) or "0.5/sqrt(d_in)" (scaled by the input width)."""
    text = str(value).replace(" ", "")
    scaled = text.endswith("/sqrt(d_in)")
    coef = None if isinstance(value, bool) else _number(text.removesuffix("/sqrt(d_in)") if scaled else text)
    if coef is None or not math.isfinite(coef) or coef <= 0:
        raise ConfigError(
            f"{name} must be a std > 0 such as 0.02, or C/sqrt(d_in) such as 0.5/sqrt(d_in); got {value!r}"
        )
    return f"{coef:g}/sqrt(d_in)" if scaled else f"{coef:g}"


@dataclass
class NobleConfig:
    """Where and how NOBLE branches are added. rank 0 turns NOBLE off everywhere.

    `preset` names a set of knob values (PRESETS); a knob given explicitly wins over the preset. `knobs()` is the
    one place presets expand. With NOBLE on (rank > 0) the expanded values are also written into the fields, so a
    checkpoint's config.json records every value its branches were built and trained with. With NOBLE off the
    fields keep what was given (None = the preset's): a recipe's partial `noble:` section is merged over the
    default config's fields, and expanded defaults there would overrule the recipe's preset.
    """

    rank: int = 0
    activation: str = "cosnet"
    placement: tuple[str, ...] = field(default_factory=lambda: SITES)
    preset: str = DEFAULT_PRESET
    main_init: str | None = None
    mix_bias: bool | None = None
    lr_mult_down: float | None = None
    lr_mult_up_power: float | None = None
    lr_mult_mix_power: float | None = None
    lr_mult_freq: float | None = None
    lr_mult_phase: float | None = None

    def __post_init__(self) -> None:
        if None in (self.rank, self.activation, self.placement, self.preset):  # e.g. `rank:` left empty in a recipe
            raise ConfigError(
                "noble.rank, noble.activation, noble.placement and noble.preset need values (rank 0 turns NOBLE off)"
            )
        given = {knob: getattr(self, knob) for knob in KNOBS}
        checked = check_noble_options(self.rank, self.activation, self.placement, preset=self.preset, **given)
        expanded = self.knobs() if checked["rank"] > 0 else {}
        for name, value in (expanded | checked).items():  # checked: the given values, normalized
            setattr(self, name, value)

    def knobs(self) -> dict[str, Any]:
        """Every knob's value: the preset's, overridden by those given."""
        given = {knob: getattr(self, knob) for knob in KNOBS}
        return PRESETS[self.preset] | {k: v for k, v in given.items() if v is not None}

    def main_std(self, d_in: int) -> float:
        """The std of a wrapped main weight with `d_in` inputs (main_init)."""
        coef, _, scaled = self.knobs()["main_init"].partition("/")
        return float(coef) / (math.sqrt(d_in) if scaled else 1.0)

    @classmethod
    def coerce(cls, value: Any) -> NobleConfig:
        """A model config's `noble` field as given (a NobleConfig, a dict from config.json or a recipe, or None)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        keys = ("rank", "activation", "placement", "preset", *KNOBS)
        if not isinstance(value, dict):
            raise ConfigError(f"noble must be a mapping with keys from {', '.join(keys)}; got {value!r}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise ConfigError(f"noble has unknown key(s) {', '.join(unknown)}; use {', '.join(keys)}")
        return cls(**value)

    def applies_to(self, site: str) -> bool:
        return self.rank > 0 and site in self.placement


def set_optim_hints(p: nn.Parameter, lr_mult: float | None = None, no_weight_decay: bool | None = None) -> nn.Parameter:
    """Attach optimizer hints to a parameter (read by `vimtool.train.optim.param_groups`). Returns `p`."""
    if lr_mult is not None:
        p.lr_mult = float(lr_mult)
    if no_weight_decay is not None:
        p.no_weight_decay = bool(no_weight_decay)
    return p


def init_linear(layer: nn.Linear, std: float = 0.02) -> nn.Linear:
    """House init for plain linears: N(0, 0.02) weights (GPT-2/ViT practice), zero bias without weight decay."""
    nn.init.normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
        set_optim_hints(layer.bias, no_weight_decay=True)
    return layer


class CosNet(nn.Module):
    """sigma(h) = cos(w2 * (M cos(w1 * h + p1) + b_M) + p2) on the last dim (size r). Bounded in [-1, 1].

    `options` (a NobleConfig, default: the "paper" preset) gives the lr multipliers and whether b_M exists."""

    def __init__(self, rank: int, dim_for_lr: int, options: NobleConfig | None = None) -> None:
        super().__init__()
        self.rank = rank
        self.options = options or NobleConfig()
        self.freq1 = nn.Parameter(torch.empty(rank))
        self.phase1 = nn.Parameter(torch.empty(rank))
        self.mix_weight = nn.Parameter(torch.empty(rank, rank))
        self.mix_bias = nn.Parameter(torch.empty(rank)) if self.options.knobs()["mix_bias"] else None
        self.freq2 = nn.Parameter(torch.empty(rank))
        self.phase2 = nn.Parameter(torch.empty(rank))
        self.dim_for_lr = dim_for_lr
        self.attach_optim_hints()
        self.reset_parameters()

    def attach_optim_hints(self) -> None:
        # lr multipliers (docs/PAPERS.md section 4): w x2, p x4, M x (d/r)^0.5 as the paper describes them.
        o = self.options.knobs()
        for f in (self.freq1, self.freq2):
            set_optim_hints(f, lr_mult=o["lr_mult_freq"], no_weight_decay=True)
        for ph in (self.phase1, self.phase2):
            set_optim_hints(ph, lr_mult=o["lr_mult_phase"], no_weight_decay=True)
        mix_mult = (self.dim_for_lr / self.rank) ** o["lr_mult_mix_power"]
        set_optim_hints(self.mix_weight, lr_mult=mix_mult, no_weight_decay=False)
        if self.mix_bias is not None:
            set_optim_hints(self.mix_bias, lr_mult=1.0, no_weight_decay=True)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.freq1.uniform_(0.8, 1.2)
            self.freq2.uniform_(0.8, 1.2)
            self.phase1.normal_(0.0, 0.1)
            self.phase2.normal_(0.0, 0.1)
            self.mix_weight.normal_(0.0, 0.5 / math.sqrt(self.rank))
            if self.mix_bias is not None:
                self.mix_bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = torch.cos(torch.addcmul(self.phase1, h, self.freq1))  # cos(w1 * h + p1)
        m = F.linear(a, self.mix_weight, self.mix_bias)
        return torch.cos(torch.addcmul(self.phase2, m, self.freq2))


class SingleCos(nn.Module):
    """sigma(h) = cos(w * h + p): the paper's single-cosine ablation (same init and multipliers as CosNet's w, p)."""

    def __init__(self, rank: int, options: NobleConfig | None = None) -> None:
        super().__init__()
        self.options = options or NobleConfig()
        self.freq = nn.Parameter(torch.empty(rank))
        self.phase = nn.Parameter(torch.empty(rank))
        self.attach_optim_hints()
        self.reset_parameters()

    def attach_optim_hints(self) -> None:
        o = self.options.knobs()
        set_optim_hints(self.freq, lr_mult=o["lr_mult_freq"], no_weight_decay=True)
        set_optim_hints(self.phase, lr_mult=o["lr_mult_phase"], no_weight_decay=True)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.freq.uniform_(0.8, 1.2)
            self.phase.normal_(0.0, 0.1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cos(torch.addcmul(self.phase, h, self.freq))


class _Relu2(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.square(F.relu(h))


def make_activation(name: str, rank: int, dim_for_lr: int, options: NobleConfig | None = None) -> nn.Module:
    """The branch nonlinearity sigma by name (see ACTIVATIONS); `options` gives CosNet's and cos's knobs."""
    check_noble_options(activation=name, names={"activation": "noble activation"})
    if name == "cosnet":
        return CosNet(rank, dim_for_lr, options)
    if name == "cos":
        return SingleCos(rank, options)
    simple = {
        "gelu": nn.GELU,
        "relu": nn.ReLU,
        "relu2": _Relu2,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
        "identity": nn.Identity,
    }
    return simple[name]()


class NobleLinear(nn.Linear):
    """`nn.Linear` plus the NOBLE branch: y = x W + b + sigma(x W_down + b_down) W_up.

    The main `weight`/`bias` are an ordinary `nn.Linear`'s (so `isinstance(m, nn.Linear)` holds and W_up = 0
    gives exactly the plain layer). The branch tensors are raw parameters, not child `nn.Linear`s, so that a
    model-wide "re-init every nn.Linear" loop cannot overwrite the authors' near-zero W_up init.
    `options` (a NobleConfig; default: the "paper" preset) gives the main init, M's bias and the lr multipliers;
    `rank` and `activation` are this layer's own.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        bias: bool = True,
        rank: int = 32,
        activation: str = "cosnet",
        options: NobleConfig | None = None,
    ) -> None:
        self.rank = rank
        self.options = options or NobleConfig()  # a plain attribute, set first: reset_parameters reads it
        super().__init__(d_in, d_out, bias=bias)  # calls reset_parameters (guarded below until the branch exists)
        lr_dim = min(d_in, d_out)
        self.down_weight = nn.Parameter(torch.empty(rank, d_in))  # W_down, stored (r, d_in) like nn.Linear
        self.down_bias = nn.Parameter(torch.empty(rank))
        self.act = make_activation(activation, rank, lr_dim, self.options)
        self.up_weight = nn.Parameter(torch.empty(d_out, rank))  # W_up, stored (d_out, r)
        self.activation = activation
        self.attach_optim_hints()
        self.reset_parameters()

    def attach_optim_hints(self) -> None:
        o = self.options.knobs()
        set_optim_hints(self.down_weight, lr_mult=o["lr_mult_down"], no_weight_decay=False)
        set_optim_hints(self.down_bias, lr_mult=1.0, no_weight_decay=True)
        lr_dim = min(self.in_features, self.out_features)
        up_mult = (lr_dim / self.rank) ** o["lr_mult_up_power"]
        set_optim_hints(self.up_weight, lr_mult=up_mult, no_weight_decay=False)
        if self.bias is not None:
            set_optim_hints(self.bias, no_weight_decay=True)

    def reset_parameters(self) -> None:
        init_linear(self, std=self.options.main_std(self.in_features))
        if not hasattr(self, "up_weight"):  # nn.Linear.__init__ calls us before the branch exists
            return
        with torch.no_grad():
            self.down_weight.normal_(0.0, 1.0 / math.sqrt(self.in_features))
            self.down_bias.zero_()
            self.up_weight.normal_(0.0, 0.01 / math.sqrt(self.rank))
        if hasattr(self.act, "reset_parameters"):
            self.act.reset_parameters()

    def branch_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters NOBLE adds (everything except the main weight and bias)."""
        yield self.down_weight
        yield self.down_bias
        yield self.up_weight
        yield from self.act.parameters()

    # False makes CosNet run op by op through autograd like the other activations (the path before the fused kernel's
    # fusion; bench/bench_transformer.py --op-by-op times both). A plain attribute: not part of the state dict.
    fused_cosnet = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> (..., d_out). CosNet (the default) runs fused with a hand-written backward."""
        # under torch.compile (train.compile) the op-by-op formula: inductor fuses its elementwise passes itself,
        # where the hand-written Function would split the graph (strided out= GEMMs are not traceable)
        if _fused(self) and not torch.compiler.is_compiling():
            return cosnet_noble(self, x)
        return self._forward_modules(x)

    def _forward_modules(self, x: torch.Tensor) -> torch.Tensor:
        """Any activation, through autograd op by op (the CosNet default takes the fused `_CosNetNobleFn`)."""
        # One GEMM for x W and x W_down (weights stacked (d_out + r, d_in)): under autocast x is cast to bf16 once
        # instead of twice. W_up's product is accumulated into x W by addmm (no separate add).
        d_out, r = self.out_features, self.rank
        weight = torch.cat([self.weight, self.down_weight])  # (d_out + r, d_in)
        main_bias = self.bias if self.bias is not None else self.down_bias.new_zeros(d_out)
        both = F.linear(x, weight, torch.cat([main_bias, self.down_bias]))  # (..., d_out + r)
        y, h = both.split([d_out, r], dim=-1)
        if h.dtype in (torch.float16, torch.bfloat16):
            # Under autocast run the r-wide nonlinearity in fp32: it is a sliver of the work, and bf16 keeps only
            # ~3 digits of CosNet's phase w*h + p.
            with torch.autocast(h.device.type, enabled=False):
                a = self.act(h.float()).to(h.dtype)  # (..., r)
        else:
            a = self.act(h)  # (..., r)
        out = torch.addmm(y.reshape(-1, d_out), a.reshape(-1, r), self.up_weight.t())  # (N, d_out)
        return out.view(*x.shape[:-1], d_out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, noble_rank={self.rank}, activation={self.activation}"


def _fused(layer: nn.Module) -> bool:
    """Whether `layer` runs the fused CosNet kernel: a CosNet NobleLinear with fused_cosnet on and M's bias (the
    kernel takes b_M as a tensor; without it, mix_bias false, the layer runs op by op)."""
    return (
        isinstance(layer, NobleLinear)
        and isinstance(layer.act, CosNet)
        and layer.act.mix_bias is not None
        and layer.fused_cosnet
    )


def make_linear(
    d_in: int, d_out: int, bias: bool = True, noble: NobleConfig | None = None, site: str = "q"
) -> nn.Linear:
    """A projection at `site` (one of SITES): `NobleLinear` when NOBLE is on there, else a plain `nn.Linear`.

    The plain layer gets the house N(0, 0.02), or `noble.main_init` when `site` is in `noble.placement` even at
    rank 0: a baseline can then start from the same main weights' init as the NOBLE run it is compared with."""
    if site not in SITES:
        raise ValueError(f"unknown NOBLE site {site!r}; expected one of {SITES}")
    if noble is not None and noble.applies_to(site):
        return NobleLinear(d_in, d_out, bias=bias, rank=noble.rank, activation=noble.activation, options=noble)
    return init_linear(nn.Linear(d_in, d_out, bias=bias), std=_plain_std(noble, site, d_in))


def _plain_std(noble: NobleConfig | None, site: str, d_in: int) -> float:
    """Init std of a plain projection at `site`: `noble.main_init` where the site is in the placement, else 0.02."""
    return noble.main_std(d_in) if noble is not None and site in noble.placement else 0.02


def make_fused_linear(
    d_in: int, d_out: int, sites: Sequence[str], bias: bool = True, noble: NobleConfig | None = None
) -> nn.Linear:
    """One plain layer standing for the projections at `sites` (fused qkv / kv, `d_out` rows each) where NOBLE
    leaves them all plain: each site's rows start as `make_linear` would start that site alone (so a baseline's
    `noble.main_init` reaches them too)."""
    stds = [_plain_std(noble, s, d_in) for s in sites]
    layer = init_linear(nn.Linear(d_in, d_out * len(sites), bias=bias), std=stds[0])
    if len(set(stds)) > 1:  # sites with different inits (a placement that names only some of them)
        with torch.no_grad():
            for i, std in enumerate(stds):
                layer.weight[i * d_out : (i + 1) * d_out].normal_(0.0, std)
    return layer


def can_group(layers: Sequence[nn.Module]) -> bool:
    """Whether `noble_fused.grouped_cosnet_noble` applies: CosNet NobleLinears on the fused path, one input width."""
    return len(layers) > 1 and all(_fused(m) for m in layers) and len({m.in_features for m in layers}) == 1


def noble_param_count(model: nn.Module) -> tuple[int, int]:
    """(all parameters, of which in NOBLE branches). The model without NOBLE has `total - noble_only`."""
    total = sum(p.numel() for p in model.parameters())
    seen: set[int] = set()
    noble = 0
    for module in model.modules():
        if isinstance(module, NobleLinear):
            for p in module.branch_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    noble += p.numel()
    return total, noble


# Help texts for the `--noble-*` options, shared by every training command so they read the same everywhere.
NOBLE_CLI_HELP: dict[str, str] = {
    "rank": "NOBLE branch rank on the chosen projections (0 = off; the paper's default is 32).",
    "activation": f"NOBLE branch nonlinearity: {', '.join(ACTIVATIONS)} (default cosnet).",
    "placement": f"Comma list of projections that get a NOBLE branch, from {','.join(SITES)}, or 'all'.",
    "preset": f"NOBLE settings by name: {' or '.join(PRESETS)} (default {DEFAULT_PRESET}); knobs: {', '.join(KNOBS)}.",
}


def noble_from_cli(
    rank: int | None, activation: str | None, placement: str | None, preset: str | None = None
) -> dict[str, Any]:
    """`--noble-rank/--noble-act/--noble-placement/--noble-preset` -> override dict for a `NobleConfig` section.

    Only the options given appear (None = not given), so a recipe's values survive. `placement` is a comma list
    of sites, or `all`. Example: `overrides["model"]["noble"] = noble_from_cli(32, None, "q,v,mlp_in")`.
    Checked by `check_noble_options` (the same check as `NobleConfig`), with the options' command-line names.
    """
    out = check_noble_options(rank, activation, placement, names=CLI_NAMES, preset=preset)
    if "placement" in out:
        out["placement"] = list(out["placement"])  # a plain list, like a recipe's
    return out
