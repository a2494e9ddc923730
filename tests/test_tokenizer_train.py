"""train-tokenizer through the engine on a micro model: both optimizers, eval metrics, grid PNG, CLI contract."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vimtool.checkpoint import load_model
from vimtool.commands import app
from vimtool.config import ConfigError, load_config
from vimtool.errors import VimtoolError
from vimtool.models.vitvqgan import ViTVQGAN
from vimtool.train.tokenizer import TokenizerRunConfig, TokenizerTask, train_tokenizer

DATA = "shapes:size=16,n=48"


def _cfg(tmp_path, **over):
    base = {
        "data": DATA, "size": "micro", "eval_images": 16, "grid_images": 4, "eval_batch_size": 8,
        "disc_channels": 8, "disc_max_channels": 16,
        "loss": {"perceptual": 0.0, "adversarial": 0.1, "disc_start": 2, "r1_every": 2},
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "min_lr": 1e-4, "eval_every": 0,
                  "save_every": 0, "log_every": 1, "out_dir": str(tmp_path / "run"), "progress": False},
    }  # fmt: skip
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return load_config(TokenizerRunConfig, None, base)


def test_gan_training_runs_both_optimizers_and_evaluates(tmp_path):
    final = train_tokenizer(_cfg(tmp_path))
    model = load_model(final)
    assert isinstance(model, ViTVQGAN) and model.grid == (4, 4)
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss/l2" in r or "train/loss/l2" in json.dumps(r)]
    assert train_lines, lines
    text = json.dumps(lines)
    assert "loss/adversarial" in text and "loss/disc" in text and "r1" in text  # the GAN part really ran
    evals = [r for r in lines if any(k.startswith("eval/") for k in r)]
    last = evals[-1]
    for k in ("eval/psnr", "eval/recon_l2", "eval/codebook_usage", "eval/codebook_perplexity", "eval/dead_codes"):
        assert k in last, last
    assert 0 < last["eval/codebook_usage"] <= 1 and last["eval/psnr"] > 0
    assert list((tmp_path / "run" / "eval").glob("recon_step_*.png"))


def test_dead_code_restart_option_restarts_codes(tmp_path):
    cfg = _cfg(tmp_path, dead_code_restart=2, loss={"adversarial": 0.0}, train={"steps": 3})
    task = TokenizerTask(cfg)
    models = task.build_models()
    assert "disc" not in models  # adversarial 0: no discriminator at all
    batch = torch.stack([task.train_dataset()[i]["image"] for i in range(8)])
    out0 = task.train_step(models, batch, 0)
    out1 = task.train_step(models, batch, 1)
    before = models["model"].quantizer.codebook.detach().clone()
    out2 = task.train_step(models, batch, 2)
    n = out2.metrics["restarted_codes"]
    assert "restarted_codes" not in out0.metrics and "restarted_codes" not in out1.metrics
    assert n > 0  # a 64-code book on 8 tiny images leaves codes unused
    changed = (models["model"].quantizer.codebook.detach() != before).any(-1).sum().item()
    assert changed == n


def test_bad_settings_fail_with_one_line(tmp_path):
    with pytest.raises(VimtoolError, match="--data"):
        TokenizerTask(TokenizerRunConfig())
    with pytest.raises(ConfigError, match="logit_laplace"):
        TokenizerTask(_cfg(tmp_path, model={"logit_laplace": False}))
    with pytest.raises(ConfigError, match="unknown key 'model.depth'"):
        _cfg(tmp_path, model={"depth": 3}).model_config()


def test_cli_prints_only_the_checkpoint_path(tmp_path):
    runner = CliRunner()
    out_dir = tmp_path / "cli_run"
    res = runner.invoke(app, [
        "train-tokenizer", "--data", DATA, "--size", "micro", "--steps", "2", "--batch-size", "4",
        "--out-dir", str(out_dir), "--set", "loss.perceptual=0", "--set", "loss.adversarial=0",
        "--set", "eval_images=8", "--set", "train.progress=false", "--set", "train.save_every=0",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and Path(lines[0]).is_dir()
    assert (Path(lines[0]) / "model.safetensors").is_file()


def test_eval_tokenizer_command_writes_metrics_and_grid(tmp_path):
    torch.manual_seed(0)
    from vimtool.checkpoint import save_model
    from vimtool.models.vitvqgan import size_config

    save_model(ViTVQGAN(size_config("micro")), tmp_path / "tok")
    res = CliRunner().invoke(
        app,
        [
            "eval-tokenizer",
            "--tokenizer",
            str(tmp_path / "tok"),
            "--data",
            DATA,
            "--num-images",
            "10",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    metrics_path, grid = (Path(p) for p in res.stdout.strip().splitlines())
    m = json.loads(metrics_path.read_text())
    assert m["images"] == 10 and 0 < m["codebook_usage"] <= 1 and m["dead_codes"] >= 64 - 10 * 16
    assert 0 <= m["shapes_check"] <= 1  # captioned shapes data: the checker runs on the reconstructions
    from PIL import Image

    assert Image.open(grid).size[0] > 16


def test_perceptual_term_trains_with_weights_from_the_cache(tmp_path, monkeypatch):
    # Random weights saved under the standard file names in the cache (the real files cannot ship with the tests):
    # this checks the cache step of the resolution order and that the term reaches the generator loss.
    from vimtool.models.perceptual import LPIPS_FILE, VGG16_FILE, VGG16Features

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("VIMTOOL_CACHE", str(cache))
    monkeypatch.setenv("VIMTOOL_OFFLINE", "1")
    torch.save(VGG16Features().state_dict(), cache / VGG16_FILE)
    torch.save(
        {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))},
        cache / LPIPS_FILE,
    )
    cfg = _cfg(tmp_path, loss={"perceptual": 0.1, "adversarial": 0.0})
    task = TokenizerTask(cfg)
    models = task.build_models()
    batch = torch.stack([task.train_dataset()[i]["image"] for i in range(4)])
    out = task.train_step(models, batch, 0)
    assert out.metrics["loss/perceptual"] > 0
    out.losses["model"].backward()
    assert models["model"].patch_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in models["lpips"].parameters())  # frozen


def test_kmeans_codebook_init_runs_once_at_its_step(tmp_path):
    cfg = _cfg(
        tmp_path, codebook_init="kmeans", codebook_init_step=1, codebook_init_images=48, loss={"adversarial": 0.0}
    )
    task = TokenizerTask(cfg)
    models = task.build_models()
    q = models["model"].quantizer
    ds = task.train_dataset()
    batch = torch.stack([ds[i]["image"] for i in range(8)])
    random_codes = q.codebook.detach().clone()
    task.train_step(models, batch, 0)
    assert torch.equal(q.codebook.detach(), random_codes)  # not before its step
    with torch.no_grad():  # codes used by the init images (all 48 of DATA) before and after the init
        z = q.project(models["model"].encode_features(torch.stack([ds[i]["image"] for i in range(len(ds))])))
        used_before = q.nearest(z).unique().numel()
    task.train_step(models, batch, 1)
    with torch.no_grad():
        used_after = q.nearest(z).unique().numel()
    assert used_after > used_before and used_after >= 0.75 * 64, (used_before, used_after)
    after_init = q.codebook.detach().clone()
    task.train_step(models, batch, 1)  # a second micro-batch of the same step: no second init
    assert torch.equal(q.codebook.detach(), after_init)


def test_kmeans_init_is_skipped_when_resuming_past_its_step(tmp_path):
    task = TokenizerTask(_cfg(tmp_path, codebook_init="kmeans", codebook_init_step=0, loss={"adversarial": 0.0}))
    models = task.build_models()
    before = models["model"].quantizer.codebook.detach().clone()
    batch = torch.stack([task.train_dataset()[i]["image"] for i in range(8)])
    task.train_step(models, batch, 3)  # a resumed run starts at step 3: its codebook is the trained one
    assert torch.equal(models["model"].quantizer.codebook.detach(), before)


def test_codebook_init_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="codebook_init must be random or kmeans"):
        TokenizerTask(_cfg(tmp_path, codebook_init="uniform"))
    with pytest.raises(ConfigError, match="codebook_init_step"):
        TokenizerTask(_cfg(tmp_path, codebook_init_step=-1))


def test_l1_term_is_added_with_its_weight(tmp_path):
    from vimtool.models.losses import l1_loss, l2_loss

    task = TokenizerTask(_cfg(tmp_path, loss={"adversarial": 0.0, "l1": 0.5, "l2": 1.0, "vq": 1.0}))
    models = task.build_models()
    batch = torch.stack([task.train_dataset()[i]["image"] for i in range(8)])
    out = task.train_step(models, batch, 0)
    m = out.metrics
    assert "loss/l1" in m
    weighted = sum(getattr(task.loss, k[5:]) * float(v) for k, v in m.items() if k.startswith("loss/"))
    assert float(out.losses["model"]) == pytest.approx(weighted, rel=1e-5)  # the l1 term counts with weight 0.5
    x, y = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert float(l1_loss(x, y)) == pytest.approx(0.5) and float(l2_loss(x, y)) == pytest.approx(0.25)
    off = TokenizerTask(_cfg(tmp_path / "off", loss={"adversarial": 0.0}))
    assert "loss/l1" not in off.train_step(off.build_models(), batch, 0).metrics  # 0 = off: no term at all
    with pytest.raises(ConfigError, match="loss.l1"):
        TokenizerTask(_cfg(tmp_path / "neg", loss={"adversarial": 0.0, "l1": -1.0}))
