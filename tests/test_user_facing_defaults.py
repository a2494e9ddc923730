"""Small things a user trips on: eval-tokenizer's split and printed numbers, the tuned sampling temperature, grid
labels that say what their number is, and the current Hub login command."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vimtool.commands import app
from vimtool.data.preview import _label_text
from vimtool.sampling import DEFAULT_TEMPERATURE, SampleConfig
from vimtool.sampling.command import grid_score_name

ROOT = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, splits: tuple[str, ...]) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_eval_tokenizer_uses_a_split_the_data_has_and_prints_a_table(tmp_path, caplog):
    from vimtool.checkpoint import save_model
    from vimtool.models.vitvqgan import ViTVQGAN, size_config

    torch.manual_seed(0)
    save_model(ViTVQGAN(size_config("micro")), tmp_path / "tok")
    data = _image_folder(tmp_path / "digits", ("train", "test"))  # no val folder
    with caplog.at_level(logging.INFO, logger="vimtool"):
        res = CliRunner().invoke(app, [
            "eval-tokenizer", "--tokenizer", str(tmp_path / "tok"), "--data", str(data), "--out", str(tmp_path / "ev"),
        ])  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics_path, _ = (Path(p) for p in res.stdout.split())
    m = json.loads(metrics_path.read_text())
    assert m["split"] == "test" and m["images"] == 6  # the test folder's 6 images, not train's
    assert any("split 'test'" in r.getMessage() for r in caplog.records)
    table = {ln.split()[0]: ln.split()[1] for ln in res.stderr.splitlines() if len(ln.split()) == 2}
    assert table["metric"] == "value"
    assert float(table["psnr"]) == pytest.approx(m["psnr"], rel=1e-5)
    assert float(table["codebook_usage"]) == pytest.approx(m["codebook_usage"], rel=1e-5)

    only_train = _image_folder(tmp_path / "train_only", ("train",))
    res = CliRunner().invoke(app, [
        "eval-tokenizer", "--tokenizer", str(tmp_path / "tok"), "--data", str(only_train), "--out", str(tmp_path / "e2"),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["split"] == "train"


def test_sampling_defaults_to_each_familys_tuned_temperature():
    # docs/RESULTS.md: VIM 0.8 (sections 2.1), Parti 0.6 (section 3); the paper's 1.0 read lower on both
    assert DEFAULT_TEMPERATURE == {"vim": 0.8, "parti": 0.6}
    assert SampleConfig().temperature is None
    assert SampleConfig().for_family("vim").temperature == 0.8
    assert SampleConfig().for_family("parti").temperature == 0.6
    assert SampleConfig(temperature=1.0).for_family("vim").temperature == 1.0  # a given value stays
    res = CliRunner().invoke(app, ["sample", "--help"], terminal_width=200)
    assert "0.8 for VIM, 0.6 for Parti" in res.output


def test_sample_records_the_temperature_it_used(vim_world, tmp_path):
    from vimtool.sampling.command import sample

    sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), classes=[0], num_samples=1, out=str(tmp_path),
                        device="cpu"))  # fmt: skip
    assert json.loads((tmp_path / "sampling.json").read_text())["settings"]["temperature"] == 0.8


def test_grid_labels_say_what_their_number_is():
    assert _label_text(3, None) == "class 3"
    assert _label_text(3, ["0", "1", "2", "three"]) == "class 3: three"
    assert _label_text(None, None) == ""
    assert grid_score_name("likelihood") == "likelihood"
    assert grid_score_name("contrastive:0.5") == "contrastive"
    assert grid_score_name("0.5*contrastive:0.5") == "contrastive"
    assert grid_score_name("mymodule:judge") == "score"
    assert grid_score_name("none") == ""


def test_hub_messages_name_the_current_login_command():
    stale = [p for p in (ROOT / "vimtool").rglob("*.py") if "huggingface-cli login" in p.read_text(encoding="utf-8")]
    assert stale == []
    res = CliRunner().invoke(app, ["train-lm", "--help"], terminal_width=200)
    assert "hf auth login" in res.output
