"""NOBLE: the branch formula, the authors' init, lr multipliers reaching a real optimizer, counts, CLI options."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from vimtool.config import ConfigError, load_config
from vimtool.errors import VimtoolError
from vimtool.nn import (
    ACTIVATIONS,
    SITES,
    CausalDecoder,
    CrossDecoder,
    NobleConfig,
    NobleLinear,
    make_linear,
    noble_from_cli,
    noble_fused,
    noble_param_count,
)
from vimtool.nn.noble import CosNet, SingleCos, can_group, check_noble_options
from vimtool.train.optim import param_groups


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_noble_with_zero_up_projection_equals_the_plain_linear(activation):
    torch.manual_seed(0)
    layer = NobleLinear(12, 20, rank=4, activation=activation)
    plain = nn.Linear(12, 20)
    plain.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    x = torch.randn(3, 5, 12)
    assert not torch.allclose(layer(x), plain(x), atol=1e-7), "the branch should contribute at the authors' init"
    with torch.no_grad():
        layer.up_weight.zero_()
    torch.testing.assert_close(layer(x), plain(x), rtol=1e-6, atol=1e-6)
    no_bias = NobleLinear(12, 20, bias=False, rank=4, activation=activation)
    with torch.no_grad():
        no_bias.up_weight.zero_()
    torch.testing.assert_close(no_bias(x), x @ no_bias.weight.T, rtol=1e-5, atol=1e-6)


def test_noble_output_is_the_papers_formula_with_cosnet():
    torch.manual_seed(0)
    layer = NobleLinear(8, 6, rank=3, activation="cosnet")
    x = torch.randn(4, 8)
    a = layer.act
    h = x @ layer.down_weight.T + layer.down_bias
    sigma = torch.cos(a.freq2 * (torch.cos(a.freq1 * h + a.phase1) @ a.mix_weight.T + a.mix_bias) + a.phase2)
    expected = x @ layer.weight.T + layer.bias + sigma @ layer.up_weight.T
    torch.testing.assert_close(layer(x), expected)
    assert sigma.abs().max() <= 1.0


def _decoder_with_noble(rank=4, activation="cosnet", placement=SITES, cross=False):
    cfg = NobleConfig(rank=rank, activation=activation, placement=placement)
    if cross:
        return CrossDecoder(16, 2, 2, 40, noble=cfg, context_dim=24)
    return CausalDecoder(16, 2, 2, 40, noble=cfg)


@pytest.mark.parametrize("activation", ["cosnet", "cos", "gelu", "identity"])
def test_gradients_reach_every_noble_parameter(activation):
    torch.manual_seed(0)
    model = _decoder_with_noble(activation=activation, cross=True)
    out = model(torch.randn(2, 5, 16), torch.randn(2, 3, 24))
    out.square().sum().backward()
    nobles = [m for m in model.modules() if isinstance(m, NobleLinear)]
    # 2 blocks x (self q,k,v,out + cross q,k,v,out + mlp in,out)
    assert len(nobles) == 2 * 10
    for m in nobles:
        for p in m.branch_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def _expected_hint(layer: NobleLinear, p: nn.Parameter) -> tuple[float, bool]:
    """Multiplier and no-decay flag from docs/PAPERS.md section 4, written out independently of noble.py."""
    d, r = min(layer.in_features, layer.out_features), layer.rank
    table = {
        id(layer.weight): (1.0, False),
        id(layer.bias): (1.0, True),
        id(layer.down_weight): (1.0, False),
        id(layer.down_bias): (1.0, True),
        id(layer.up_weight): ((d / r) ** 0.4, False),
    }
    act = layer.act
    if isinstance(act, CosNet):
        table.update(
            {
                id(act.mix_weight): ((d / r) ** 0.5, False),
                id(act.mix_bias): (1.0, True),
                id(act.freq1): (2.0, True),
                id(act.freq2): (2.0, True),
                id(act.phase1): (4.0, True),
                id(act.phase2): (4.0, True),
            }
        )
    if isinstance(act, SingleCos):
        table.update({id(act.freq): (2.0, True), id(act.phase): (4.0, True)})
    return table[id(p)]


@pytest.mark.parametrize("activation", ["cosnet", "cos"])
@pytest.mark.parametrize("deep_copied", [False, True])
def test_every_lr_multiplier_reaches_the_optimizer(activation, deep_copied):
    torch.manual_seed(0)
    model = _decoder_with_noble(rank=5, activation=activation, cross=True)  # r=5: all multipliers distinct
    if deep_copied:  # attributes on Parameters do not survive deepcopy; param_groups re-attaches them
        model = copy.deepcopy(model)
    lr, wd = 1e-3, 0.1
    opt = torch.optim.AdamW(param_groups(model, lr, wd), lr=lr)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(group_of) == sum(1 for _ in model.parameters()), "every parameter is in exactly one group"
    checked = 0
    mults = set()
    for layer in (m for m in model.modules() if isinstance(m, NobleLinear)):
        for p in layer.parameters():
            mult, no_wd = _expected_hint(layer, p)
            g = group_of[id(p)]
            assert g["lr"] == pytest.approx(lr * mult), f"{layer} param {tuple(p.shape)}"
            assert g["lr_mult"] == pytest.approx(mult)
            assert g["weight_decay"] == (0.0 if no_wd else wd)
            mults.add(round(mult, 6))
            checked += 1
    assert checked > 0
    expected_distinct = 5 if activation == "cosnet" else 4  # 1, 2, 4, up's and (cosnet) M's
    assert len(mults) == expected_distinct
    # Norms get no decay; the plain fused projections (none here: all sites NOBLE) would decay their weights.
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
            for p in m.parameters():
                assert group_of[id(p)]["weight_decay"] == 0.0 and group_of[id(p)]["lr_mult"] == 1.0


def test_param_groups_defaults_for_parameters_without_hints():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    groups = param_groups(model, 1.0, 0.5)
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["param_names"]}
    assert decay == {"1.weight"}, "only the matrix decays; embedding, bias and norm do not"
    assert all(g["lr"] == 1.0 for g in groups)


def test_authors_initialisation_scales():
    torch.manual_seed(0)
    d_in, d_out, r = 512, 1024, 64
    layer = NobleLinear(d_in, d_out, rank=r)
    assert layer.down_weight.std().item() == pytest.approx(1 / math.sqrt(d_in), rel=0.05)
    assert layer.up_weight.std().item() == pytest.approx(0.01 / math.sqrt(r), rel=0.05)
    assert layer.act.mix_weight.std().item() == pytest.approx(0.5 / math.sqrt(r), rel=0.1)
    assert 0.8 <= layer.act.freq1.min() and layer.act.freq1.max() <= 1.2
    assert layer.act.phase1.std().item() == pytest.approx(0.1, rel=0.35)
    assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(layer.bias == 0) and torch.all(layer.down_bias == 0)


def test_reinit_loops_over_nn_linear_keep_the_branch_init():
    layer = NobleLinear(64, 64, rank=8)
    for m in layer.modules():  # what a model-wide init loop would do
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    assert layer.up_weight.std().item() < 0.01


def test_parameter_counts_with_and_without_noble():
    d, depth, mlp, r = 16, 2, 40, 4
    plain = CausalDecoder(d, depth, 2, mlp)
    noble = CausalDecoder(d, depth, 2, mlp, noble=NobleConfig(rank=r))
    total_plain, noble_plain = noble_param_count(plain)
    total, noble_only = noble_param_count(noble)
    assert noble_plain == 0
    assert total - noble_only == total_plain

    def branch(d_in, d_out):  # W_down + b_down + W_up + CosNet (w1, p1, M, b_M, w2, p2)
        return r * d_in + r + d_out * r + (r * r + 5 * r)

    per_block = 4 * branch(d, d) + branch(d, mlp) + branch(mlp, d)
    assert noble_only == depth * per_block


def test_placement_decides_which_projections_get_a_branch():
    model = _decoder_with_noble(placement=("v", "mlp_out"))
    block = model.blocks[0]
    assert isinstance(block.attn.v, NobleLinear) and not isinstance(block.attn.q, NobleLinear)
    assert not isinstance(block.attn.out, NobleLinear)
    assert isinstance(block.mlp.fc_out, NobleLinear) and not isinstance(block.mlp.fc_in, NobleLinear)
    assert type(make_linear(4, 4, noble=NobleConfig(rank=0), site="q")) is nn.Linear


def test_noble_config_rejects_bad_values_with_config_errors():
    with pytest.raises(ConfigError, match="activation"):
        NobleConfig(rank=4, activation="swish9")
    with pytest.raises(ConfigError, match="placement"):
        NobleConfig(rank=4, placement=("q", "ffn"))
    with pytest.raises(ConfigError, match="rank"):
        NobleConfig(rank=-1)


@dataclass
class _ModelCfg:
    width: int = 8
    noble: NobleConfig = field(default_factory=NobleConfig)


def test_cli_options_become_a_typed_noble_config():
    over = {"noble": noble_from_cli(32, "gelu", "q,v,mlp_in")}
    cfg = load_config(_ModelCfg, None, over)
    assert cfg.noble == NobleConfig(rank=32, activation="gelu", placement=("q", "v", "mlp_in"))
    assert noble_from_cli(None, None, None) == {}
    assert load_config(_ModelCfg, None, {"noble": noble_from_cli(8, None, "all")}).noble.placement == SITES
    for bad in [(-1, None, None), (None, "nope", None), (None, None, "q,attn"), (None, None, " , ")]:
        with pytest.raises(VimtoolError, match="--noble-"):
            noble_from_cli(*bad)


def test_configs_and_the_command_line_share_one_noble_check():
    # the same values pass or fail both ways; only the option's name in the message differs
    assert NobleConfig(rank=8, placement="all").placement == SITES
    assert NobleConfig(rank=8, placement="q, v").placement == ("q", "v")
    assert check_noble_options(3, "gelu", ["q", "v"]) == {"rank": 3, "activation": "gelu", "placement": ("q", "v")}
    for bad in [(True, None, None), (2.5, None, None), (None, None, ()), (None, None, "q,attn")]:
        with pytest.raises(ConfigError, match=r"^noble\."):
            NobleConfig(**{k: v for k, v in zip(("rank", "activation", "placement"), bad) if v is not None})
        with pytest.raises(ConfigError, match="^--noble-"):
            noble_from_cli(*bad)
    with pytest.raises(ConfigError, match="need values"):
        NobleConfig(rank=None)
    with pytest.raises(ConfigError, match="noble activation"):
        NobleLinear(4, 4, rank=2, activation="swish9")  # a layer built by hand goes through the same check


def test_model_configs_read_their_noble_section_through_the_same_check():
    from vimtool.models.vim import VIMConfig

    cfg = VIMConfig(vocab_size=16, grid=(2, 2), dim=8, depth=1, heads=2, mlp_dim=16, noble={"rank": 2})
    assert cfg.noble == NobleConfig(rank=2)
    assert NobleConfig.coerce(None) == NobleConfig()
    with pytest.raises(ConfigError, match="unknown key.*rnak"):
        VIMConfig(vocab_size=16, grid=(2, 2), noble={"rnak": 2})
    with pytest.raises(ConfigError, match=r"noble\.activation"):
        VIMConfig(vocab_size=16, grid=(2, 2), noble={"rank": 2, "activation": "swish9"})


def test_param_groups_refuse_a_model_with_nothing_to_train():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(VimtoolError, match="no trainable parameters"):
        param_groups(frozen, 1e-3, 0.0)


def test_noble_under_bf16_autocast_matches_fp32_and_trains():
    torch.manual_seed(0)
    layer = NobleLinear(32, 48, rank=8)
    with torch.no_grad():
        layer.up_weight.normal_(0.0, 0.1)  # a branch big enough to matter in the comparison
    x = torch.randn(4, 7, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), layer(x), rtol=0.05, atol=0.05)
    low.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.branch_parameters())


def _reference_cosnet_noble(layer: NobleLinear, x: torch.Tensor) -> torch.Tensor:
    """The paper's formula op by op through autograd: the reference for the hand-written backward in noble.py."""
    a = layer.act
    h = x @ layer.down_weight.T + layer.down_bias
    sigma = torch.cos(a.freq2 * (torch.cos(a.freq1 * h + a.phase1) @ a.mix_weight.T + a.mix_bias) + a.phase2)
    y = x @ layer.weight.T + sigma @ layer.up_weight.T
    return y if layer.bias is None else y + layer.bias


def _graph_node_names(t: torch.Tensor, depth: int = 3) -> str:
    names, frontier = [], [t.grad_fn]
    for _ in range(depth):
        frontier = [f for f in frontier if f is not None]
        names += [type(f).__name__ for f in frontier]
        frontier = [nxt for f in frontier for nxt, _ in f.next_functions]
    return " ".join(names)


def _every_term_matters(layer: NobleLinear) -> NobleLinear:
    """A branch as large as the main path and nonzero biases, so that a wrong term shows in values and gradients
    (the authors' init keeps W_up near zero and the biases at zero)."""
    with torch.no_grad():
        layer.up_weight.normal_(0.0, 0.3)
        layer.down_bias.normal_(0.0, 0.5)
        layer.act.mix_bias.normal_(0.0, 0.5)
        if layer.bias is not None:
            layer.bias.normal_(0.0, 0.5)
    return layer


@pytest.mark.parametrize("layout", ["auto", "up", "down", "none"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_fused_cosnet_values_and_every_gradient_equal_the_reference(bias, shape, layout, monkeypatch):
    monkeypatch.setattr(noble_fused, "_LAYOUT", layout)  # each GEMM layout of _CosNetNobleFn, all in fp32
    torch.manual_seed(0)
    layer = _every_term_matters(NobleLinear(*shape, bias=bias, rank=5))
    x = torch.randn(3, 7, shape[0], requires_grad=True)
    upstream = torch.randn(3, 7, shape[1])
    params = [x, *layer.parameters()]

    out = layer(x)
    assert "CosNetNoble" in _graph_node_names(out), "the fused path is in use (else this compares autograd to itself)"
    fast_grads = torch.autograd.grad(out, params, upstream)
    ref = _reference_cosnet_noble(layer, x)
    ref_grads = torch.autograd.grad(ref, params, upstream)

    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    assert len(names) == (12 if bias else 11)
    for name, fast, slow in zip(names, fast_grads, ref_grads):
        assert fast.shape == slow.shape and fast.dtype == slow.dtype, name
        assert slow.abs().max() > 0, f"reference gradient of {name} is zero: the test would prove nothing"
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("layout", ["up", "down", "none"])
def test_fused_cosnet_passes_gradcheck_in_float64(layout, monkeypatch):
    monkeypatch.setattr(noble_fused, "_LAYOUT", layout)
    torch.manual_seed(0)
    layer = NobleLinear(6, 5, rank=3).double()
    with torch.no_grad():
        layer.up_weight.normal_(0.0, 0.5)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *_: layer(x), (x, *layer.parameters()))


@pytest.mark.parametrize("shape", [(32, 48), (48, 32)])  # auto layout: "up" and "down"
def test_fused_cosnet_under_bf16_autocast_matches_the_reference_under_autocast(shape):
    torch.manual_seed(0)
    layer = NobleLinear(*shape, rank=8)
    with torch.no_grad():
        layer.up_weight.normal_(0.0, 0.2)
    x = torch.randn(4, 7, shape[0], requires_grad=True)
    upstream = torch.randn(4, 7, shape[1])
    params = [x, *layer.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = layer(x)
        ref = _reference_cosnet_noble(layer, x)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), ref.float(), rtol=0.02, atol=0.02)
    fast_grads = torch.autograd.grad(fast.float(), params, upstream)
    ref_grads = torch.autograd.grad(ref.float(), params, upstream)
    for p, fg, rg in zip(params, fast_grads, ref_grads):
        assert fg.dtype == p.dtype == torch.float32, "gradients come back in the parameters' dtype"
        # bf16 keeps ~3 digits; the two paths round at different places, so compare at bf16 precision.
        assert (fg - rg).norm() <= 0.03 * rg.norm() + 1e-6, tuple(p.shape)


@pytest.mark.parametrize("autocast", [False, True])
def test_cosnet_without_autograd_gives_the_training_paths_output(autocast):
    torch.manual_seed(0)
    layer = NobleLinear(24, 16, rank=4)
    with torch.no_grad():
        layer.up_weight.normal_(0.0, 0.3)
    x = torch.randn(2, 5, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        trained = layer(x)
        with torch.no_grad():
            sampled = layer(x)
        with torch.inference_mode():
            inferred = layer(x)
    assert trained.requires_grad and not sampled.requires_grad
    assert sampled.dtype == inferred.dtype == trained.dtype == (torch.bfloat16 if autocast else torch.float32)
    tol = 2e-2 if autocast else 1e-6  # bf16: the two paths round sigma W_up^T at different points
    torch.testing.assert_close(sampled.float(), trained.detach().float(), rtol=tol, atol=tol)
    torch.testing.assert_close(inferred, sampled)
    torch.testing.assert_close(sampled.float(), _reference_cosnet_noble(layer, x).detach(), rtol=tol, atol=tol)


# --- q/k/v as one grouped Function (noble_fused._CosNetNobleGroupFn) ------------------------------------------------


def _qkv_layers(d_in: int, d_outs, rank: int, bias: bool, dtype=torch.float32) -> list[NobleLinear]:
    layers = []
    for d_out in d_outs:
        layers.append(_every_term_matters(NobleLinear(d_in, d_out, bias=bias, rank=rank).to(dtype)))
    return layers


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("d_outs", [(12, 12, 12), (12, 20, 7)], ids=["qkv", "uneven"])
def test_grouped_cosnet_values_and_every_gradient_equal_the_per_layer_reference(bias, d_outs):
    torch.manual_seed(0)
    layers = _qkv_layers(16, d_outs, 5, bias)
    x = torch.randn(3, 7, 16, requires_grad=True)
    upstream = [torch.randn(3, 7, d) for d in d_outs]
    params = [x] + [p for layer in layers for p in layer.parameters()]
    assert can_group(layers)

    outs = noble_fused.grouped_cosnet_noble(layers, x)
    assert all("CosNetNobleGroup" in _graph_node_names(y) for y in outs), "the grouped Function is in use"
    fast_grads = torch.autograd.grad(outs, params, upstream)
    refs = [_reference_cosnet_noble(layer, x) for layer in layers]  # the paper's formula, per layer, autograd
    ref_grads = torch.autograd.grad(refs, params, upstream)

    for y, ref in zip(outs, refs):
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    names = ["x"] + [f"{i}.{n}" for i, layer in enumerate(layers) for n, _ in layer.named_parameters()]
    assert len(names) == len(params) == 1 + 3 * (11 if bias else 10)
    for name, fast, slow in zip(names, fast_grads, ref_grads):
        assert fast.shape == slow.shape and fast.dtype == slow.dtype, name
        assert slow.abs().max() > 0, f"reference gradient of {name} is zero: the test would prove nothing"
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")


def test_grouped_cosnet_passes_gradcheck_in_float64():
    torch.manual_seed(0)
    layers = _qkv_layers(4, (3, 2, 3), 2, bias=True, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    params = [p for layer in layers for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda x, *_: noble_fused.grouped_cosnet_noble(layers, x), (x, *params))


def test_grouped_cosnet_under_bf16_autocast_matches_the_reference_under_autocast():
    torch.manual_seed(0)
    layers = _qkv_layers(32, (32, 32, 32), 8, bias=True)
    x = torch.randn(4, 7, 32, requires_grad=True)
    upstream = [torch.randn(4, 7, 32) for _ in layers]
    params = [x] + [p for layer in layers for p in layer.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = noble_fused.grouped_cosnet_noble(layers, x)
        ref = [_reference_cosnet_noble(layer, x) for layer in layers]
    assert all(y.dtype == torch.bfloat16 for y in fast)
    for y, r in zip(fast, ref):
        torch.testing.assert_close(y.float(), r.float(), rtol=0.02, atol=0.02)
    fast_grads = torch.autograd.grad([y.float() for y in fast], params, upstream)
    ref_grads = torch.autograd.grad([y.float() for y in ref], params, upstream)
    for p, fg, rg in zip(params, fast_grads, ref_grads):
        assert fg.dtype == p.dtype == torch.float32, "gradients come back in the parameters' dtype"
        assert (fg - rg).norm() <= 0.03 * rg.norm() + 1e-6, tuple(p.shape)  # bf16 precision, rounded elsewhere


def test_grouping_applies_only_to_fused_cosnet_layers_on_one_input_width():
    cos = [NobleLinear(8, 8, rank=2) for _ in range(3)]
    assert can_group(cos)
    assert not can_group(cos[:1])
    assert not can_group([*cos[:2], NobleLinear(8, 8, rank=2, activation="gelu")])
    assert not can_group([*cos[:2], NobleLinear(6, 8, rank=2)])
    assert not can_group([*cos[:2], nn.Linear(8, 8)])
    cos[1].fused_cosnet = False  # the op-by-op path was asked for: grouping would silently bypass it
    assert not can_group(cos)


@pytest.mark.parametrize("autocast", [False, True])
def test_grouped_qkv_attention_trains_like_three_separate_layers(autocast):
    from vimtool.nn import Attention

    torch.manual_seed(0)
    attn = Attention(16, 4, noble=NobleConfig(rank=3, placement=("q", "k", "v")))
    assert attn.group_qkv and not attn.fused
    for site in ("q", "k", "v"):
        getattr(attn, site).up_weight.data.normal_(0.0, 0.3)
    x = torch.randn(2, 6, 16, requires_grad=True)
    upstream = torch.randn(2, 6, 16)
    params = [x, *attn.parameters()]
    grads, outs = [], []
    for grouped in (True, False):
        attn.group_qkv = grouped
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = attn(x, causal=True)
        outs.append(y.float())
        grads.append(torch.autograd.grad(y.float(), params, upstream))
    if autocast:
        # bf16 through softmax makes q/k gradients noisy for either path (k's bias gradient is 0 in exact math);
        # the Function's own bf16 gradients are checked above. Here: the output and the input gradient.
        torch.testing.assert_close(outs[0], outs[1], rtol=2e-2, atol=2e-2)
        assert (grads[0][0] - grads[1][0]).norm() <= 0.03 * grads[1][0].norm()
    else:
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        for g_group, g_sep in zip(*grads):
            assert g_sep.abs().max() > 0
            torch.testing.assert_close(g_group, g_sep, rtol=1e-5, atol=1e-5)
    # the parameters stay where they were: checkpoints and optimizer groups do not change
    names = {n for n, _ in attn.named_parameters()}
    assert {"q.weight", "k.down_weight", "v.up_weight", "q.act.mix_weight", "out.weight"} <= names
    assert not any(n.startswith(("qkv.", "kv.")) for n in names)


def test_grouped_qkv_with_gradients_on_keeps_the_kv_cache_exact():
    torch.manual_seed(0)
    dec = CausalDecoder(16, 2, 4, 32, noble=NobleConfig(rank=3))
    assert all(block.attn.group_qkv for block in dec.blocks)
    x = torch.randn(2, 9, 16)
    full = dec(x)  # gradients on: the grouped Function
    cache = dec.new_cache(2, 9)
    pieces = [dec(x[:, :5], cache=cache)] + [dec(x[:, i : i + 1], cache=cache) for i in range(5, 9)]
    assert full.requires_grad and pieces[0].requires_grad
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and the no-grad path (sampling) gives the same
        torch.testing.assert_close(dec(x), full.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_noble_under_torch_compile_runs_op_by_op_in_one_graph_and_matches_eager():
    # train.compile: under torch.compile NobleLinear and the grouped q/k/v take the op-by-op formula (inductor
    # fuses it); the fused Functions' strided out= GEMMs would break the graph. Same values and gradients.
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = _decoder_with_noble(rank=4)
    for m in model.modules():
        if isinstance(m, NobleLinear):
            m.up_weight.data.normal_(0.0, 0.3)  # W_up near zero would hide a wrong branch
    x = torch.randn(2, 5, 16)
    outs, grads = [], []
    breaks = sum(counters["graph_break"].values())
    for run in (model, torch.compile(model)):
        y = run(x)
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), list(model.parameters())))
    assert sum(counters["graph_break"].values()) == breaks  # one graph: the NOBLE layers traced op by op
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for g_compiled, g_eager in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- presets and knobs (settings by name)
KNOB_VALUES = {  # written out from docs/PAPERS.md section 4, independently of noble.PRESETS
    "paper": {"main_init": "0.02", "mix_bias": True, "lr_mult_down": 1.0, "lr_mult_up_power": 0.4,
              "lr_mult_mix_power": 0.5, "lr_mult_freq": 2.0, "lr_mult_phase": 4.0},
    "reference": {"main_init": "0.5/sqrt(d_in)", "mix_bias": True, "lr_mult_down": 1.0, "lr_mult_up_power": 0.4,
                  "lr_mult_mix_power": 0.0, "lr_mult_freq": 2.0, "lr_mult_phase": 4.0},
}  # fmt: skip


def test_presets_expand_to_their_knobs_and_explicit_knobs_win():
    for preset, knobs in KNOB_VALUES.items():
        cfg = NobleConfig(rank=8, preset=preset)
        assert {k: getattr(cfg, k) for k in knobs} == knobs, "NOBLE on: the fields hold the expanded values"
        assert NobleConfig(rank=0, preset=preset).knobs() == knobs
    assert NobleConfig() == NobleConfig(preset="paper"), "the default is the paper preset (today's behaviour)"
    # NOBLE off: the fields keep what was given, so a partial section merged over the default keeps its preset
    assert NobleConfig().main_init is None and NobleConfig(main_init=0.1).main_init == "0.1"
    mixed = NobleConfig(rank=8, preset="reference", main_init=0.02, lr_mult_freq=3)
    assert (mixed.main_init, mixed.lr_mult_freq, mixed.lr_mult_mix_power) == ("0.02", 3.0, 0.0)
    assert NobleConfig(main_init=" 0.25 / sqrt(d_in)").main_init == "0.25/sqrt(d_in)"
    assert NobleConfig(main_init="0.5/sqrt(d_in)").main_std(256) == pytest.approx(0.5 / 16)
    bad = {"preset": "authors", "main_init": "1/d_in", "mix_bias": "yes", "lr_mult_freq": 0, "lr_mult_up_power": "x"}
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=rf"^noble\.{key}"):
            NobleConfig(rank=8, **{key: value})
    with pytest.raises(ConfigError, match="unknown key.*lr_mult_mix"):
        NobleConfig.coerce({"rank": 8, "lr_mult_mix": 1.0})


@pytest.mark.parametrize("preset", ["paper", "reference"])
def test_the_wrapped_weights_init_statistics_match_the_preset(preset):
    torch.manual_seed(0)
    d = 512
    std = 0.02 if preset == "paper" else 0.5 / math.sqrt(d)  # 0.0221: 10% from 0.02, far beyond sampling error
    cfg = NobleConfig(rank=32, preset=preset)
    layer = make_linear(d, d, noble=cfg, site="mlp_in")
    assert isinstance(layer, NobleLinear)
    w = layer.weight.detach()
    # sampling error of the std of 262k normal draws is ~0.14%; of the mean, std / 512
    assert w.std().item() == pytest.approx(std, rel=0.02)
    assert abs(w.mean().item()) < 4 * std / d
    assert torch.all(layer.bias == 0) and torch.all(layer.act.mix_bias == 0)
    # the branch's init does not depend on the preset
    assert layer.down_weight.std().item() == pytest.approx(1 / math.sqrt(d), rel=0.05)
    # a baseline (rank 0) gets the same main init at the placement sites, the house init elsewhere
    base = NobleConfig(rank=0, preset=preset, placement=("q",))
    assert make_linear(d, d, noble=base, site="q").weight.std().item() == pytest.approx(std, rel=0.02)
    assert make_linear(d, d, noble=base, site="k").weight.std().item() == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("family", ["parti", "vim", "dual"])
def test_a_baselines_main_init_reaches_every_plain_projection_of_the_model(family):
    """At rank 0 (a baseline), `main_init` must start every projection at the placement sites, the fused qkv / kv
    layers included, in every model family: the study's "baseline-reference-init" ablation compares inits, and
    Parti once dropped the NOBLE section at rank 0 (so the ablation trained the plain baseline)."""
    from dataclasses import replace

    from vimtool.models.dual_encoder import DualEncoder, DualEncoderConfig
    from vimtool.models.parti import SIZES as PARTI_SIZES
    from vimtool.models.parti import Parti
    from vimtool.models.vim import VIM
    from vimtool.models.vim import size_config as vim_size

    def build(noble):
        torch.manual_seed(0)
        if family == "parti":
            return Parti(replace(PARTI_SIZES["tiny"], text_vocab_size=64, codebook_size=64, grid=(4, 4), noble=noble))
        if family == "vim":
            return VIM(vim_size("micro", vocab_size=64, grid=(4, 4), num_classes=4, noble=noble))
        return DualEncoder(DualEncoderConfig(text_vocab_size=64, image_size=16, noble=noble)).text_tower

    def projections(model):  # the attention and MLP linears of the transformer blocks, by name
        return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)
                and n.rsplit(".", 1)[-1] in ("qkv", "kv", "q", "k", "v", "out", "fc_in", "fc_out")}  # fmt: skip

    house, reference = build({"rank": 0}), build({"rank": 0, "main_init": "0.5/sqrt(d_in)"})
    layers = projections(reference)
    assert any(n.endswith("qkv") for n in layers), sorted(layers)  # the fused layer is among them
    if family == "parti":
        assert any(n.endswith(".kv") for n in layers), sorted(layers)  # cross-attention's fused kv
    for name, layer in layers.items():
        want = 0.5 / math.sqrt(layer.in_features)
        assert layer.weight.std().item() == pytest.approx(want, rel=0.1), name  # >= 1,024 draws: ~3% error
        assert projections(house)[name].weight.std().item() == pytest.approx(0.02, rel=0.1), name
    # only some sites: the fused layer's rows start per site
    qk = build({"rank": 0, "main_init": "0.5/sqrt(d_in)", "placement": ["q", "k"]})
    fused = next(m for n, m in projections(qk).items() if n.endswith("qkv"))
    d = fused.in_features
    stds = [fused.weight[i * d : (i + 1) * d].std().item() for i in range(3)]
    assert stds == pytest.approx([0.5 / math.sqrt(d)] * 2 + [0.02], rel=0.1)


def test_ms_bias_exists_iff_the_knob_says():
    torch.manual_seed(0)
    for preset in KNOB_VALUES:
        assert NobleLinear(16, 16, rank=4, options=NobleConfig(rank=4, preset=preset)).act.mix_bias is not None
    cfg = NobleConfig(rank=4, preset="reference", mix_bias=False)
    layer = NobleLinear(16, 8, rank=4, options=cfg)
    with_bias = NobleLinear(16, 8, rank=4)
    assert layer.act.mix_bias is None and "act.mix_bias" not in layer.state_dict()
    assert sum(p.numel() for p in with_bias.parameters()) - sum(p.numel() for p in layer.parameters()) == 4
    x = torch.randn(3, 16)
    a = layer.act
    h = x @ layer.down_weight.T + layer.down_bias
    sigma = torch.cos(a.freq2 * (torch.cos(a.freq1 * h + a.phase1) @ a.mix_weight.T) + a.phase2)
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias + sigma @ layer.up_weight.T)
    layer(x).sum().backward()
    assert a.mix_weight.grad is not None and a.mix_weight.grad.abs().sum() > 0
    assert not can_group([layer, layer]), "the fused kernel needs b_M; without it the layer runs op by op"


def _expected_mult(layer: NobleLinear, p: nn.Parameter, knobs: dict) -> tuple[str, float] | None:
    """(kind, lr multiplier) of a NOBLE parameter from the knob values (None: not a NOBLE parameter)."""
    d, r, act = min(layer.in_features, layer.out_features), layer.rank, layer.act
    kinds = {id(layer.down_weight): ("W_down", knobs["lr_mult_down"]), id(layer.down_bias): ("b_down", 1.0),
             id(layer.up_weight): ("W_up", (d / r) ** knobs["lr_mult_up_power"])}  # fmt: skip
    if isinstance(act, CosNet):
        kinds |= {id(act.mix_weight): ("M", (d / r) ** knobs["lr_mult_mix_power"]),
                  id(act.freq1): ("w", knobs["lr_mult_freq"]), id(act.freq2): ("w", knobs["lr_mult_freq"]),
                  id(act.phase1): ("p", knobs["lr_mult_phase"]), id(act.phase2): ("p", knobs["lr_mult_phase"])}  # fmt: skip
        if act.mix_bias is not None:
            kinds[id(act.mix_bias)] = ("b_M", 1.0)
    if isinstance(act, SingleCos):
        kinds |= {id(act.freq): ("w", knobs["lr_mult_freq"]), id(act.phase): ("p", knobs["lr_mult_phase"])}
    return kinds.get(id(p))


CUSTOM = {"main_init": "0.1", "mix_bias": False, "lr_mult_down": 0.7, "lr_mult_up_power": 0.3,
          "lr_mult_mix_power": 0.6, "lr_mult_freq": 1.5, "lr_mult_phase": 3.0}  # fmt: skip


@pytest.mark.parametrize("activation", ["cosnet", "cos"])
@pytest.mark.parametrize("setting", ["paper", "reference", "custom"])
def test_every_knobs_multiplier_reaches_the_optimizers_groups(setting, activation):
    torch.manual_seed(0)
    knobs = CUSTOM if setting == "custom" else KNOB_VALUES[setting]
    cfg = NobleConfig(rank=5, activation=activation, **(CUSTOM if setting == "custom" else {"preset": setting}))
    model = CrossDecoder(16, 1, 2, 40, noble=cfg, context_dim=24)  # widths 16 and 40: two values of d/r
    lr = 2e-3
    group_of = {id(p): g for g in param_groups(model, lr, 0.1) for p in g["params"]}
    kinds = set()
    for layer in (m for m in model.modules() if isinstance(m, NobleLinear)):
        for p in layer.branch_parameters():
            expected = _expected_mult(layer, p, knobs)
            assert expected is not None, f"a NOBLE parameter {tuple(p.shape)} of unknown kind"
            assert group_of[id(p)]["lr"] == pytest.approx(lr * expected[1]), expected[0]
            kinds.add(expected[0])
        assert group_of[id(layer.weight)]["lr"] == pytest.approx(lr)
    cosnet = {"M", "b_M"} - ({"b_M"} if not knobs["mix_bias"] else set())
    assert kinds == {"W_down", "b_down", "W_up", "w", "p"} | (cosnet if activation == "cosnet" else set())


def test_saved_configs_record_the_expanded_knobs_and_old_ones_load_as_before(tmp_path):
    import json

    from vimtool.checkpoint import load_model, save_model
    from vimtool.models.vim import VIM, VIMConfig

    torch.manual_seed(0)
    cfg = VIMConfig(vocab_size=16, grid=(2, 2), dim=8, depth=1, heads=2, mlp_dim=16,
                    noble={"rank": 2, "preset": "reference", "lr_mult_freq": 3.0})  # fmt: skip
    folder = save_model(VIM(cfg), tmp_path / "ckpt")
    saved = json.loads((folder / "config.json").read_text())["config"]["noble"]
    assert saved == {"rank": 2, "activation": "cosnet", "placement": list(SITES), "preset": "reference",
                     **KNOB_VALUES["reference"], "lr_mult_freq": 3.0}  # fmt: skip
    assert load_model(folder).config.noble == cfg.noble
    # a checkpoint written before presets existed: rank, activation, placement only -> today's defaults (paper)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["noble"] = {"rank": 2, "activation": "cosnet", "placement": list(SITES)}
    (folder / "config.json").write_text(json.dumps(meta))
    old = load_model(folder).config.noble
    assert old == NobleConfig(rank=2) and {k: getattr(old, k) for k in KNOB_VALUES["paper"]} == KNOB_VALUES["paper"]


def test_the_preset_option_reaches_the_model_config():
    assert noble_from_cli(None, None, None, "reference") == {"preset": "reference"}
    cfg = load_config(_ModelCfg, None, {"noble": {"lr_mult_freq": 1.0, **noble_from_cli(8, None, None, "reference")}})
    assert cfg.noble == NobleConfig(rank=8, preset="reference", lr_mult_freq=1.0)
    with pytest.raises(ConfigError, match="^--noble-preset 'authors'"):
        noble_from_cli(None, None, None, "authors")


@pytest.mark.parametrize("command", ["train-tokenizer", "train-lm", "train-t2i"])
def test_every_training_commands_help_lists_the_noble_preset(command):
    from typer.testing import CliRunner

    from vimtool.commands import app

    res = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "--noble-preset" in res.output and "reference" in res.output and "lr_mult_mix_power" in res.output
