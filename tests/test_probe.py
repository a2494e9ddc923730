"""Linear probe: per-block top-1, baselines, saved heads that the sampler's rejection sampling reuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from vim_fixtures import CLASSES, make_shards

from vimtool.errors import VimtoolError
from vimtool.probe import ProbeConfig, choose_l2, fit_softmax, load_probe_head, probe, token_histogram, top1


def test_softmax_classifier_separates_separable_data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 5, generator=g) * 4
    y = torch.arange(300) % 3
    x = centers[y] + torch.randn(300, 5, generator=g)
    params = fit_softmax(x[:200], y[:200], 3)
    assert top1(params, x[200:], y[200:]) > 0.95
    shuffled = fit_softmax(x[:200], y[:200][torch.randperm(200, generator=g)], 3)
    assert top1(shuffled, x[200:], y[200:]) < 0.7  # labels carry no signal -> near chance


def test_choose_l2_scores_on_a_tenth_of_the_training_rows():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(3, 5, generator=g) * 4
    y = torch.arange(200) % 3
    x = centers[y] + torch.randn(200, 5, generator=g)
    l2, score = choose_l2(x, y, 3, [1e-3, 1e2], max_iter=50)
    assert l2 == 1e-3 and score > 0.9  # a penalty of 100 flattens the weights: the weak one wins on separable data
    noise = torch.randn(200, 5, generator=g)  # features without signal: the selection split scores near chance
    assert choose_l2(noise, y, 3, [1e-3, 1e-1], max_iter=50)[1] < 0.6
    assert choose_l2(x, y, 3, [1e-2]) == (1e-2, None)  # nothing to choose: no selection score
    with pytest.raises(VimtoolError, match="l2 needs"):
        choose_l2(x, y, 3, [])


def test_token_histogram_sums_to_one():
    h = token_histogram(torch.tensor([[1, 1, 2, 0]]), 4)
    assert h.tolist() == [[0.25, 0.5, 0.25, 0.0]]


@pytest.fixture(scope="module")
def probed(vim_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    val = make_shards(vim_world["root"] / "val_shards", vim_world["tokenizer"], n=60, seed=5)
    paths = probe(ProbeConfig(checkpoint=str(vim_world["ckpt"]), shards=[str(s) for s in vim_world["shards"]],
                              val_shards=[str(v) for v in val], out=str(out), device="cpu", max_iter=100))  # fmt: skip
    return out, paths


def test_probe_reports_every_block_and_the_baselines(probed, vim_world):
    out, paths = probed
    report = json.loads((out / "probe.json").read_text())
    assert set(report["top1"]) == {"block1", "block2"}  # micro VIM: 2 blocks, all swept by default
    assert report["best_block"] in (1, 2)
    assert set(report["baselines"]) == {"pixels", "tokens"}
    # the pattern rows are class-determined: features of the LM separate them far above chance (1/3)
    assert report["best_top1"] > 0.8
    assert report["baselines"]["tokens"] > 0.8
    assert [p.name for p in paths] == ["probe.json", "head_best", "head_pixels", "head_tokens", "head_pixels_mlp"]
    assert 0 <= report["classifiers"]["pixels_mlp"] <= 1 and set(report["l2"]) == {
        "block1",
        "block2",
        "pixels",
        "tokens",
    }
    # a block picked without the held-out rows: the best on the training rows' selection tenth, scored held out
    sel = report["selection_top1"]
    assert set(sel) == {"block1", "block2"} and all(0 <= v <= 1 for v in sel.values())
    picked = report["block_picked_on_train"]
    assert sel[f"block{picked}"] == max(sel.values())
    assert report["picked_top1"] == report["top1"][f"block{picked}"] <= report["best_top1"]


def test_saved_head_reproduces_its_top1_and_scores_samples(probed, vim_world):
    from vimtool.checkpoint import load_model
    from vimtool.data.shards import load_token_table

    out, _ = probed
    head = load_probe_head(out / "head_best")
    assert head.meta["feature"] == "lm" and head.num_classes == CLASSES
    lm = load_model(vim_world["ckpt"])
    tokens, labels, _, _ = load_token_table(vim_world["root"] / "val_shards")
    acc = float((head.probabilities(tokens, lm=lm).argmax(1) == labels).float().mean())
    assert abs(acc - head.meta["top1"]) < 1e-6


def test_rejection_sampling_keeps_the_best_scored_candidates(probed, vim_world, tmp_path):
    from vimtool.sampling import SampleConfig
    from vimtool.sampling.command import sample

    out, _ = probed
    cfg = dict(checkpoint=str(vim_world["ckpt"]), classes=[1], num_samples=4, device="cpu", seed=3)
    plain = sample(SampleConfig(**cfg, out=str(tmp_path / "plain")))
    kept = sample(SampleConfig(**cfg, out=str(tmp_path / "rej"), classifier=str(out / "head_tokens"), acceptance=0.5,
                               judge=str(out / "head_pixels_mlp")))  # fmt: skip
    assert len(plain) == len(kept) == 4
    rec = json.loads((tmp_path / "rej" / "sampling.json").read_text())
    assert rec["generated"] == 8 and rec["kept"] == 4
    preds = [im["predicted"] for im in rec["images"]]
    assert rec["classifier_agreement"] == pytest.approx(sum(p == 1 for p in preds) / 4)
    judged = [im["judged"] for im in rec["images"]]
    assert all(j in range(CLASSES) for j in judged)
    assert rec["judge_agreement"] == pytest.approx(sum(j == 1 for j in judged) / 4)
    scores = [im["score"] for im in rec["images"]]
    # the kept four are the best four of the eight candidates (same seed: candidates 0-3 are the plain run's)
    head = load_probe_head(out / "head_tokens")
    from vimtool.checkpoint import load_model
    from vimtool.sampling import DEFAULT_TEMPERATURE
    from vimtool.sampling.logits import SamplingParams
    from vimtool.sampling.vim import generate

    params = SamplingParams(DEFAULT_TEMPERATURE["vim"])  # what `sample` uses when no temperature is given
    cands = generate(load_model(vim_world["ckpt"]), torch.ones(8, dtype=torch.long), 8, params, seed=3)
    all_scores = head.probabilities(cands)[:, 1]
    assert sorted(scores, reverse=True) == pytest.approx(sorted(all_scores.tolist(), reverse=True)[:4], abs=1e-6)
    assert np.array_equal(np.load(tmp_path / "plain" / "tokens.npy"), cands[:4].numpy())


def test_lm_head_refuses_another_checkpoint(probed, vim_world, tmp_path):
    from vimtool.checkpoint import load_model, save_model
    from vimtool.sampling import SampleConfig
    from vimtool.sampling.command import sample

    out, _ = probed
    other = load_model(vim_world["ckpt"])
    with torch.no_grad():
        other.head.bias.add_(1.0)
    meta = json.loads((Path(vim_world["ckpt"]) / "config.json").read_text())
    save_model(
        other, tmp_path / "other", extra={"tokenizer": meta["tokenizer"], "tokenizer_path": meta["tokenizer_path"]}
    )
    with pytest.raises(VimtoolError, match="reads block"):
        sample(SampleConfig(checkpoint=str(tmp_path / "other"), classes=[0], num_samples=1, out=str(tmp_path / "s"),
                            classifier=str(out / "head_best"), acceptance=0.5, device="cpu"))  # fmt: skip


def test_probe_bad_block_and_unlabelled_shards(vim_world, tmp_path):
    with pytest.raises(VimtoolError, match="has blocks 1..2"):
        probe(ProbeConfig(checkpoint=str(vim_world["ckpt"]), shards=[str(s) for s in vim_world["shards"]], blocks=[3],
                          out=str(tmp_path), baselines=[]))  # fmt: skip
    unl = make_shards(tmp_path / "unl", vim_world["tokenizer"], n=20, labels=False)
    with pytest.raises(VimtoolError, match="without a label"):
        probe(ProbeConfig(checkpoint=str(vim_world["ckpt"]), shards=[str(s) for s in unl], out=str(tmp_path)))
    with pytest.raises(VimtoolError, match="not a probe head"):
        load_probe_head(tmp_path)


@pytest.mark.slow
def test_probe_command_prints_the_written_paths(vim_world, tmp_path):
    from typer.testing import CliRunner

    from vimtool.commands import app

    shards = [a for s in vim_world["shards"] for a in ("--shards", str(s))]
    res = CliRunner().invoke(app, ["probe", "-c", str(vim_world["ckpt"]), *shards, "--block", "2", "--baselines", "tokens",
                                   "--out", str(tmp_path / "p"), "--device", "cpu", "--set", "max_iter=50", "--set", "pixel_classifier=false",
                                   "--set", "l2=[1e-3]"])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert [Path(p).name for p in lines] == ["probe.json", "head_best", "head_tokens"]
    report = json.loads(Path(lines[0]).read_text())
    assert list(report["top1"]) == ["block2"] and report["best_block"] == 2 and list(report["baselines"]) == ["tokens"]


def test_pixel_mlp_judge_is_reproducible_for_a_seed():
    import torch

    from vimtool.probe import fit_pixel_mlp

    g = torch.Generator().manual_seed(3)
    images, y = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(1)
    a = fit_pixel_mlp(images, y, 3, hidden=16, epochs=2)
    torch.manual_seed(2)  # a different global RNG state must not change the judge
    b = fit_pixel_mlp(images, y, 3, hidden=16, epochs=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["weight"], fit_pixel_mlp(images, y, 3, hidden=16, epochs=2, seed=1)["weight"])


def test_raw_pixels_baseline_reads_the_original_images_behind_real_shards(vim_world, tmp_path):
    # real mnist5k digits tokenized by the fixture's tokenizer (a micro ViT-VQGAN at 16 px): the raw_pixels baseline
    # must see the ORIGINAL digits (resized as tokenize-dataset resized them), row for row, copies flipped/shifted
    import shutil

    from vimtool.data import open_source
    from vimtool.data.transforms import resize_center_crop, to_tensor, translate
    from vimtool.probe import labelled_rows, raw_pixel_features
    from vimtool.tokenize import TokenizeConfig, shift_offsets, tokenize_dataset

    spec, tok = "mnist5k:val_fraction=0.2,fold=1", str(vim_world["tokenizer"])
    train = tokenize_dataset(TokenizeConfig(tokenizer=tok, data=spec, out=str(tmp_path / "train"), limit=40, flip=True,
                                            shifts=1, rows_per_shard=30, progress=False))  # fmt: skip
    val = tokenize_dataset(
        TokenizeConfig(tokenizer=tok, data=spec, split="val", out=str(tmp_path / "val"), limit=20, progress=False)
    )
    raw = raw_pixel_features([str(p) for p in train], 16, "token shard")  # (120, 3 * 16 * 16): digits, flips, shifts
    digits = [to_tensor(resize_center_crop(ex.image, 16)) for ex in open_source(spec, limit=40)]
    assert raw.shape == (120, 3 * 16 * 16)
    # rows in shard order: each batch of digits, then its flipped copies, then its shifted copies
    got = {tuple(r.tolist()) for r in raw}
    assert all(tuple(d.flatten().tolist()) in got for d in digits)
    assert all(tuple(torch.flip(d, dims=[2]).flatten().tolist()) in got for d in digits)
    ids = [ex.source_id for ex in open_source(spec, limit=40)]
    assert all(tuple(translate(d, *shift_offsets(i, 1, 2)[0]).flatten().tolist()) in got for d, i in zip(digits, ids))
    originals = raw_pixel_features([str(p) for p in train], 16, "token shard", augmented_rows=False)
    _, labels, _, kept_ids = labelled_rows([str(p) for p in train], "token shard", augmented_rows=False)
    assert sorted(kept_ids) == sorted(ids) and len(labels) == 40  # the copies left out, row for row with the pixels
    by_id = dict(zip(ids, digits))
    assert all(torch.equal(row, by_id[i].flatten()) for row, i in zip(originals, kept_ids))

    report_dir = tmp_path / "probe"
    probe(ProbeConfig(checkpoint=str(vim_world["ckpt"]), shards=[str(p) for p in train], val_shards=[str(p) for p in val],
                      baselines=["pixels", "tokens", "raw_pixels"], pixel_classifier=False, out=str(report_dir),
                      device="cpu", max_iter=50))  # fmt: skip
    report = json.loads((report_dir / "probe.json").read_text())
    assert (
        set(report["baselines"]) == {"pixels", "tokens", "raw_pixels"} and 0 <= report["baselines"]["raw_pixels"] <= 1
    )
    assert load_probe_head(report_dir / "head_raw_pixels").meta["feature"] == "raw_pixels"
    assert report["n_train"] == 40  # the flipped and shifted copies trained the LM, not the probe
    probe(ProbeConfig(checkpoint=str(vim_world["ckpt"]), shards=[str(p) for p in train], val_shards=[str(p) for p in val],
                      baselines=["raw_pixels"], pixel_classifier=False, out=str(report_dir / "all"), device="cpu",
                      max_iter=20, augmented_rows=True))  # fmt: skip
    assert json.loads((report_dir / "all" / "probe.json").read_text())["n_train"] == 120

    lonely = tmp_path / "lonely"  # a shard copied away from its tokenize.json: no way to find its images
    lonely.mkdir()
    shutil.copy(val[0], lonely / val[0].name)
    with pytest.raises(VimtoolError, match="tokenize.json"):
        raw_pixel_features([str(lonely)], 16, "token shard")
