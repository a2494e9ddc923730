"""`vimtool plan` (vimtool/plan.py, vimtool/commands/plan.py): counts that agree with real models, sane memory."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from vimtool.commands import app
from vimtool.commands.plan import _human
from vimtool.config import ConfigError
from vimtool.models import parti, vim, vitvqgan
from vimtool.nn.layers import Attention
from vimtool.nn.noble import NobleLinear
from vimtool.plan import PAPER, PlanConfig, PlanResult, cpu_sdpa_flop_formulas, model_configs, plan

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
ALL_NAMED = (
    [f"vim-{s}" for s in vim.SIZES] + [f"parti-{s}" for s in parti.SIZES] + [f"tokenizer-{s}" for s in vitvqgan.SIZES]
)
BUILD_LIMIT = 60_000_000  # real (CPU) builds up to this size; above it, the meta build against the shapes


def _real_model(name: str, config):
    family = name.split("-")[0]
    if family == "vim":
        return vim.VIM(config)
    if family == "parti":
        return parti.Parti(config)
    return vitvqgan.ViTVQGAN(config)


@pytest.mark.parametrize("name", ALL_NAMED)
def test_parameter_counts_equal_the_models(name):
    cfg = PlanConfig(model=name, overrides={"loss": {"adversarial": 0, "perceptual": 0}} if "tokenizer" in name else {})
    result = plan(cfg)
    counted = result.params["model"]
    assert counted.total == counted.analytic  # meta build == the estimator's shapes
    assert counted.trainable == counted.total
    if counted.total <= BUILD_LIMIT:
        torch.manual_seed(0)
        real = _real_model(name, model_configs(cfg)["model"])
        assert sum(p.numel() for p in real.parameters()) == counted.total


def test_the_pixel_refiner_is_counted():
    cfg = PlanConfig(model="tokenizer-tiny", overrides={"loss": {"adversarial": 0, "perceptual": 0},
                                                        "model": {"out_conv": 16}})  # fmt: skip
    counted = plan(cfg).params["model"]
    real = vitvqgan.ViTVQGAN(model_configs(cfg)["model"])
    assert real.out_conv is not None and sum(p.numel() for p in real.parameters()) == counted.total


def test_tokenizer_counts_discriminator_and_frozen_lpips():
    result = plan(PlanConfig(model="tokenizer-ss"))  # the paper's loss: adversarial and perceptual on
    assert set(result.params) == {"model", "disc", "lpips"}
    assert all(p.total == p.analytic for p in result.params.values())
    assert result.params["lpips"].trainable == 0
    assert result.trainable_params == result.params["model"].total + result.params["disc"].total
    assert result.params["lpips"].total == 14_714_688  # torchvision VGG16's 13 convolutions
    assert result.flops_parts["discriminator"] > 0 and result.flops_parts["lpips (frozen)"] > 0


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("vim-micro", {"conditional": "no"}),
        ("vim-micro", {"model": {"noble": {"rank": 4}}}),
        ("parti-micro", {"text_vocab_size": 64}),
        ("tokenizer-micro", {"loss": {"adversarial": 0, "perceptual": 0}}),
        ("tokenizer-micro", {"loss": {"adversarial": 0, "perceptual": 0}, "model": {"out_conv": 8}}),
    ],
)
def test_flops_match_the_flop_counter_within_5_percent(name, overrides):
    cfg = PlanConfig(model=name, overrides={**overrides, "model": {**overrides.get("model", {}), "dropout": 0.0}},
                     codebook_size=64, token_grid=4, precision="fp32")  # fmt: skip
    config = model_configs(cfg)["model"]
    torch.manual_seed(0)
    model = _real_model(name, config)
    # NOBLE through plain autograd: the fused CosNet Function accumulates W_up's product in place (addmm_), which
    # the counter has no formula for; the op-by-op path computes the same products out of place
    for module in model.modules():
        if isinstance(module, NobleLinear):
            module.fused_cosnet = False
        if isinstance(module, Attention):
            module.group_qkv = False
    batch = 3
    if name.startswith("vim"):
        tokens = torch.randint(0, config.vocab_size, (batch, config.num_tokens))

        def run():
            return model.loss(tokens)
    elif name.startswith("parti"):
        ids = torch.randint(0, config.text_vocab_size, (batch, config.max_text_len))
        tokens = torch.randint(0, config.codebook_size, (batch, config.num_image_tokens))

        def run():
            return model(ids, torch.ones_like(ids, dtype=torch.bool), tokens).float().logsumexp(-1).mean()
    else:
        images = torch.rand(batch, 3, config.image_size, config.image_size) * 2 - 1

        def run():
            recon, aux = model(images)
            return recon.square().mean() + aux["vq_loss"]

    counter = FlopCounterMode(display=False, custom_mapping=cpu_sdpa_flop_formulas())
    with counter:
        run().backward()
    measured = counter.get_total_flops()
    estimated = plan(cfg).flops_per_sample * batch
    assert measured > 0
    assert abs(estimated / measured - 1) < 0.05, (estimated, measured)


def test_recipes_resolve_to_their_command():
    families = {}
    for recipe in RECIPES:
        if recipe.name.startswith("reranker_"):  # train-reranker: plan says it does not cover it, in one line
            with pytest.raises(ConfigError, match="train-reranker recipe"):
                plan(PlanConfig(recipe=str(recipe)))
            continue
        families[recipe.name] = plan(PlanConfig(recipe=str(recipe))).family
    assert families["vim_imagenet_base.yaml"] == "vim"
    assert families["parti_coco_350m.yaml"] == "parti"
    assert families["tokenizer_imagenet_ss.yaml"] == "tokenizer"
    assert families["parti_shapes.yaml"] == "parti"  # size tiny fits train-lm too: the header decides


def test_paper_recipe_reports_the_paper_figure_and_batch():
    result = plan(PlanConfig(recipe="recipes/vim_imagenet_base.yaml"))
    assert result.paper_params == PAPER["vim-base"].params
    assert result.global_batch == 1024 and result.steps == 450_000
    reshaped = plan(PlanConfig(recipe="recipes/vim_imagenet_base.yaml", overrides={"model": {"depth": 12}}))
    assert reshaped.paper_params is None
    assert reshaped.total_params < result.total_params


def test_stage2_data_facts_shape_the_model():
    base = plan(PlanConfig(model="vim-base")).total_params  # 8192 codes, 32x32 tokens, 1000 classes + null
    assert plan(PlanConfig(model="vim-base", num_classes=0)).total_params == base - 1000 * 1536
    fewer_codes = plan(PlanConfig(model="vim-base", codebook_size=1024)).total_params
    assert fewer_codes == base - (8192 - 1024) * (2 * 1536 + 1)  # embedding rows, head columns and biases
    short = plan(PlanConfig(model="vim-base", token_grid=16))
    assert short.flops_per_sample < plan(PlanConfig(model="vim-base")).flops_per_sample / 3.9


def test_memory_behaves_with_devices_sharding_and_checkpointing():
    one = plan(PlanConfig(model="parti-3b", devices=1, micro_batch=4, global_batch=256))
    eight = plan(PlanConfig(model="parti-3b", devices=8, micro_batch=4, global_batch=256))
    by = {(m.parallel, m.activation_checkpointing): m for m in eight.memory}
    ddp, fsdp, ckpt = by["ddp", False], by["fsdp", False], by["ddp", True]
    assert fsdp.optimizer_gb == pytest.approx(ddp.optimizer_gb / 8)
    assert fsdp.params_gb == pytest.approx(ddp.params_gb / 8) and fsdp.grads_gb == pytest.approx(ddp.grads_gb / 8)
    assert ckpt.activations_gb < ddp.activations_gb / 5
    assert ckpt.max_micro_batch > ddp.max_micro_batch
    assert one.memory[0].total_gb == pytest.approx(ddp.total_gb)  # DDP memory does not depend on devices
    # mixed precision: 2 + 4 + 12 bytes per parameter; fp32: 4 + 4 + 8
    n = one.trainable_params
    assert (ddp.params_gb + ddp.grads_gb + ddp.optimizer_gb) * 1e9 == pytest.approx(18 * n)
    fp32 = plan(PlanConfig(model="parti-3b", precision="fp32", micro_batch=4, global_batch=256)).memory[0]
    assert (fp32.params_gb + fp32.grads_gb + fp32.optimizer_gb) * 1e9 == pytest.approx(16 * n)


def test_batching_uses_the_fewest_accumulation_steps_that_fit():
    result = plan(PlanConfig(model="vim-base", devices=8, parallel="fsdp", activation_checkpointing=True))
    assert result.devices * result.micro_batch * result.grad_accum == result.global_batch == 1024
    assert result.micro_batch <= result.chosen.max_micro_batch
    assert result.chosen.fits
    too_big = plan(PlanConfig(model="parti-20b", devices=1))
    assert not too_big.chosen.fits and any("does not fit" in n for n in too_big.notes)
    sharded = plan(PlanConfig(model="parti-20b", devices=256, parallel="fsdp", activation_checkpointing=True))
    assert sharded.chosen.fits


def test_time_follows_flops_devices_and_mfu():
    a = plan(PlanConfig(model="vim-large", gpu="a100", devices=8))
    b = plan(PlanConfig(model="vim-large", gpu="a100", devices=16, mfu=0.2))
    assert a.step_seconds == pytest.approx(a.flops_per_step / (8 * 312e12 * 0.4))
    assert b.step_seconds == pytest.approx(a.step_seconds)  # twice the devices at half the MFU
    assert a.total_days == pytest.approx(a.step_seconds * 450_000 / 86400)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown model"):
        plan(PlanConfig(model="vim-huge"))
    with pytest.raises(ConfigError, match="exactly one"):
        plan(PlanConfig())
    with pytest.raises(ConfigError, match="unknown gpu"):
        plan(PlanConfig(model="vim-base", gpu="tpu"))


def test_vimtool_plan_json_through_the_registered_command():
    """`vimtool plan --model vim-base --json` as the console script runs it: the real app, not a test harness."""
    out = CliRunner().invoke(app, ["plan", "--model", "vim-base", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert set(data) == {f.name for f in dataclasses.fields(PlanResult)}
    assert data["name"] == "vim-base" and data["family"] == "vim" and data["paper_params"] == 650e6
    assert [(m["parallel"], m["activation_checkpointing"]) for m in data["memory"]] == [
        ("ddp", False), ("ddp", True), ("fsdp", False), ("fsdp", True)
    ]  # fmt: skip
    assert data["global_batch"] == data["devices"] * data["micro_batch"] * data["grad_accum"] == 1024


def test_plan_is_listed_before_the_training_commands():
    names = [c.name for c in app.registered_commands]
    assert names.index("plan") < names.index("train-tokenizer")


def test_command_prints_the_report_and_json():
    runner = CliRunner()
    args = ["plan", "--model", "vim-base", "--devices", "8", "--parallel", "fsdp", "--gpu", "h200"]
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "paper: 650M" in text.output and "* fsdp " in text.output
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    expected = plan(PlanConfig(model="vim-base", devices=8, parallel="fsdp", gpu="h200"))
    assert data["total_params"] == expected.total_params
    assert data["chosen"]["total_gb"] == pytest.approx(expected.chosen.total_gb)
    assert data["peak_tflops"] == 989


def test_command_applies_set_and_rejects_bad_choices():
    runner = CliRunner()
    out = runner.invoke(app, ["plan", "--model", "vim-base", "--set", "model.depth=12", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["total_params"] < plan(PlanConfig(model="vim-base")).total_params
    bad = runner.invoke(app, ["plan", "--model", "vim-base", "--parallel", "zero3"])
    assert bad.exit_code == 2 and "error: " in bad.output and "parallel" in bad.output
    assert runner.invoke(app, ["plan", "--help"]).exit_code == 0


# The papers' settings: each recipe's header states what `vimtool plan` says about it (8 x H100).
PAPER_RECIPES = ["tokenizer_imagenet_ss.yaml", "tokenizer_imagenet_bb.yaml", "vim_imagenet_base.yaml",
                 "parti_coco_350m.yaml"]  # fmt: skip


def plan_summary(recipe: str) -> str:
    """The sentence a paper recipe's header carries (wrapped over lines), from the plan of 8 H100s."""
    r = plan(PlanConfig(recipe=f"recipes/{recipe}", devices=8, gpu="h100"))
    return (f"vimtool plan --config recipes/{recipe} --devices 8 --gpu h100 estimates {_human(r.total_params)} "
            f"parameters in all, {r.chosen.total_gb:.3g} GB per device, micro-batch {r.micro_batch} x {r.grad_accum} "
            f"accumulation steps, {r.step_seconds:.3g} s per step, {r.total_days:.3g} days at MFU {r.mfu:g}.")  # fmt: skip


def _header(recipe: str) -> list[str]:
    lines = (RECIPES[0].parent / recipe).read_text().splitlines()
    return [ln for ln in lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("#"))]]


@pytest.mark.parametrize("recipe", PAPER_RECIPES)
def test_paper_recipe_headers_state_the_plan(recipe):
    header = _header(recipe)
    assert len(header) <= 6, header
    text = " ".join(ln.lstrip("#").strip() for ln in header)
    assert plan_summary(recipe) in text, f"update the header of {recipe} to: {plan_summary(recipe)}"
    assert "Expected" in text and f"--config recipes/{recipe}" in header[0]
