"""The eval suite without references: known answers of each metric, ADM .npz batches, the feature cache, the resize
protocol, the resolution guard and the protocol card. Inceptions load seeded stand-in weights (fid_fixtures.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from fid_fixtures import model_from_state, seeded_inception_state, write_weights
from PIL import Image

from vimtool.errors import VimtoolError
from vimtool.metrics.batches import open_npz, write_image_batch
from vimtool.metrics.eval_fid import EvalFidConfig, evaluate_fid
from vimtool.metrics.fid import FidStats, frechet_distance, inception_pass, save_npz, to_model_batch
from vimtool.metrics.inception import SPATIAL_CHANNELS, SPATIAL_DIM
from vimtool.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from vimtool.metrics.prdc import precision_recall
from vimtool.metrics.resize import pil_bicubic_299
from vimtool.metrics.suite import ALL_METRICS, Needs, SetAccumulator, parse_metrics

N = 6  # images per set: a 299x299 Inception costs ~0.05-0.1 s per image on a CPU core


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """N MNIST digits (28x28) as a PNG folder and as an ADM batch, and N coloured squares of 32x32 as a folder."""
    from vimtool.data.sources import open_source

    root = tmp_path_factory.mktemp("sets")
    folder, other = root / "digits", root / "squares"
    folder.mkdir()
    other.mkdir()
    images = [np.asarray(ex.image.convert("RGB")) for _, ex in zip(range(N), open_source("mnist5k", split="train"))]
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
        sq = np.zeros((32, 32, 3), np.uint8)
        sq[4 * i : 4 * i + 12, 8:20] = (40 * i, 255 - 30 * i, 90)
        Image.fromarray(sq).save(other / f"{i:03d}.png")
    np.savez(root / "digits.npz", arr_0=np.stack(images))
    return root, folder, other, images


def _cfg(weights, tmp_path, *inputs, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("workers", 0)
    kw.setdefault("kid_subsets", 5)
    kw.setdefault("is_splits", 2)
    return EvalFidConfig(inputs=[str(i) for i in inputs], inception_weights=str(weights), out=str(tmp_path / "o"), **kw)


def _read(tmp_path):
    out = tmp_path / "o"
    return json.loads((out / "scores.json").read_text())["scores"], json.loads((out / "protocol.json").read_text())


# --- metric math: known answers ----------------------------------------------------------------------------------


def test_precision_recall_known_answers():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(50, 8)).astype(np.float32)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)  # identical sets
    assert precision_recall(real, real + 1e3) == (0.0, 0.0)  # disjoint, far apart
    # Points on a line, k = 1: every real ball has radius 1. Fake = real[:5] and those moved far away.
    line = np.stack([np.arange(10.0), np.zeros(10)], axis=1).astype(np.float32)
    fake = np.concatenate([line[:5], line[:5] + 1000])
    precision, recall = precision_recall(line, fake, k=1)
    assert precision == 0.5  # the 5 copies are inside, the 5 far points are not
    assert recall == 0.6  # fake balls (radius 1 around 0..4) cover real 0..5
    with pytest.raises(VimtoolError, match="more than 3"):
        precision_recall(line[:3], line[:3])


def test_mmd_matches_its_definition_and_kid_clamps_the_subset_size():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) + 0.5
    kxx, kxy, kyy = polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y)
    # Gretton et al. 2012 eq. 3 written as explicit sums over i != j.
    m = 5
    direct = (
        sum(kxx[i, j] + kyy[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    )
    assert mmd2_unbiased(kxx, kxy, kyy) == pytest.approx(direct, rel=1e-12)
    assert kxx[0, 1] == pytest.approx((x[0] @ x[1] / 4 + 1) ** 3)
    far = kernel_inception_distance(x, x + 10, subsets=3, subset_size=1000, seed=0)
    assert far.subset_size == 5 and far.clamped and far.requested_subset_size == 1000
    same = kernel_inception_distance(x, x, subsets=3, subset_size=5, seed=0)
    assert far.mean > 100 * abs(same.mean)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(2)
    s = FidStats.from_features(rng.normal(size=(40, 12)))
    assert frechet_distance(s, s) == pytest.approx(0.0, abs=1e-9)


def test_parse_metrics():
    assert parse_metrics(None) is None
    assert parse_metrics("kid, FID") == ("fid", "kid")  # the suite's order, case-insensitive
    assert parse_metrics(list(ALL_METRICS)) == ALL_METRICS
    with pytest.raises(VimtoolError, match="fid,sfid,is,precision,recall,kid"):
        parse_metrics("fid,lpips")


# --- memory that must not grow with N beyond the kept features ----------------------------------------------------


def test_inception_score_works_one_split_at_a_time():
    """IS of 10,000 float32 logit rows (40 MB) allocates less than the input: one split's float64 arrays at a time,
    not four N x 1008 float64 copies (which made eval-fid's peak grow by ~1.6 GB at 50,000 images)."""
    import tracemalloc

    from vimtool.metrics.fid import inception_score

    logits = np.random.default_rng(5).normal(0, 3, size=(10_000, 1008)).astype(np.float32)
    whole = inception_score(logits.astype(np.float64), splits=10)
    tracemalloc.start()
    try:
        score = inception_score(logits, splits=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < logits.nbytes, f"IS allocated {peak / 2**20:.0f} MB for {logits.nbytes / 2**20:.0f} MB of logits"
    assert score == pytest.approx(whole, rel=1e-12)


def test_kept_features_live_in_large_blocks_not_one_array_per_batch():
    """The accumulator keeps no per-batch arrays: rows go into blocks of >= 32 MB (glibc serves those from their
    own mmap; per-batch arrays pinned the heap between the Inception's activations, +25 MB per batch of 50), and
    result() is the rows in order, whatever the block size."""
    from vimtool.metrics.fid import RowStore
    from vimtool.metrics.inception import InceptionOutputs

    acc = SetAccumulator(Needs(pool=True, logits=True))
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(b, 2048, generator=g), torch.rand(b, 1008, generator=g)) for b in (4, 4, 3)]
    for pool, logits in batches:
        acc.add(InceptionOutputs(pool=pool, logits=logits, spatial=None))
    assert len(acc.pools.blocks) == 1 and acc.pools.blocks[0].nbytes >= 32 * 2**20
    assert acc.logits.blocks[0].nbytes >= 32 * 2**20
    feats = acc.result({"8x8": 11})
    assert np.array_equal(feats.pool, torch.cat([b[0] for b in batches]).numpy())
    assert np.array_equal(feats.logits, torch.cat([b[1] for b in batches]).numpy())
    assert feats.pool.dtype == np.float32 and feats.count == 11 and acc.pools.blocks == []
    small = RowStore(3, block_rows=2)  # several blocks, a partial last one
    for rows in (np.arange(9.0).reshape(3, 3), np.arange(9.0, 15.0).reshape(2, 3)):
        small.add(rows)
    assert len(small.blocks) == 3
    assert np.array_equal(small.result(), np.arange(15.0).reshape(5, 3)) and small.blocks == []


def test_precision_recall_distance_blocks_stay_within_the_byte_budget(monkeypatch):
    """Each cdist block is at most BLOCK_BYTES however many vectors the other set has (the block shrinks with N)."""
    from vimtool.metrics import prdc

    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(300, 4)).astype(np.float32), rng.normal(size=(500, 4)).astype(np.float32)
    expected = precision_recall(real, fake)
    monkeypatch.setattr(prdc, "BLOCK_BYTES", 64 * 500 * 4)  # 64 rows of 500 float32 distances
    shapes = []
    real_cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b: shapes.append((len(a), len(b))) or real_cdist(a, b))
    assert precision_recall(real, fake) == expected  # the same answer in smaller blocks
    assert shapes and max(r * c * 4 for r, c in shapes) <= 64 * 500 * 4, shapes


# --- the network's spatial output and the one pass ---------------------------------------------------------------


def test_spatial_features_are_mixed_6d_first_seven_channels():
    model = model_from_state(seeded_inception_state(seed=1))
    captured = {}
    model.Mixed_6d.register_forward_hook(lambda mod, inp, out: captured.setdefault("6d", out))
    model.Mixed_6d.branch1x1.register_forward_hook(lambda mod, inp, out: captured.setdefault("1x1", out))
    out = model(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert out.spatial.shape == (2, SPATIAL_CHANNELS, 17, 17) and SPATIAL_DIM == 2023
    assert torch.equal(out.spatial, captured["6d"][:, :7])
    assert torch.equal(out.spatial, captured["1x1"][:, :7])  # TF mixed_6/conv: the 1x1 branch after its ReLU
    assert out.spatial.std() > 0


def test_fid_only_keeps_no_per_image_features(weights, digits):
    _, folder, _, _ = digits
    model = model_from_state(torch.load(weights, weights_only=True)).fuse_for_inference()
    acc = SetAccumulator(Needs(stats=True, spatial=True))
    sizes = inception_pass(sorted(folder.glob("*.png")), model, {"a": (None, acc)}, batch_size=4, workers=0)
    feats = acc.result(sizes)
    assert feats.pool is None and feats.logits is None and acc.pools is None and acc.logits is None
    assert feats.stats.sigma.shape == (2048, 2048) and feats.spatial.sigma.shape == (2023, 2023)
    assert feats.count == N and sizes == {"28x28": N}


# --- ADM .npz batches ---------------------------------------------------------------------------------------------


def test_image_batch_round_trip_streams_and_reads_subsets(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(150, 9, 7, 3), dtype=np.uint8)  # more than one read chunk
    path = write_image_batch(tmp_path / "b.npz", iter(imgs), len(imgs))
    np.testing.assert_array_equal(np.load(path)["arr_0"], imgs)  # numpy (and ADM) read it
    batch = open_npz(path)
    assert batch.image_count == 150 and batch.image_size == "9x7" and batch.stats is None
    np.testing.assert_array_equal(np.stack(list(batch.iter_images())), imgs)
    np.testing.assert_array_equal(np.stack(list(batch.iter_images([140, 3, 70]))), imgs[[3, 70, 140]])
    np.savez_compressed(tmp_path / "nchw.npz", arr_0=imgs[:5].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(np.stack(list(open_npz(tmp_path / "nchw.npz").iter_images())), imgs[:5])
    with pytest.raises(VimtoolError, match="differ in size"):
        write_image_batch(tmp_path / "c.npz", [imgs[0], imgs[0][:5]], 2)
    assert not (tmp_path / "c.npz").exists() and not list(tmp_path.glob(".c.npz*"))


def test_stats_files_hold_spatial_statistics(tmp_path):
    rng = np.random.default_rng(4)
    pool, spatial = FidStats.from_features(rng.normal(size=(9, 6))), FidStats.from_features(rng.normal(size=(9, 5)))
    got = open_npz(save_npz(pool, tmp_path / "s.npz", spatial=spatial))
    np.testing.assert_array_equal(got.spatial.sigma, spatial.sigma)
    np.testing.assert_array_equal(got.stats.mu, pool.mu)
    assert got.stats.count == 9 and not got.has_images
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(VimtoolError, match="mu_s"):
        open_npz(tmp_path / "bad.npz")


# --- the resize protocol ------------------------------------------------------------------------------------------


def test_pil_bicubic_is_clean_fid_s_per_channel_float_resize():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(28, 30, 3), dtype=np.uint8)
    out = pil_bicubic_299(img)
    assert out.shape == (299, 299, 3) and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    # PIL's own bicubic on the uint8 RGB image is the same filter, but rounded and clipped to 8 bits between its
    # horizontal and vertical passes (the overshoot clean-fid's float mode avoids): equal up to that.
    via_uint8 = np.asarray(Image.fromarray(img).resize((299, 299), Image.BICUBIC), dtype=np.float32)
    diff = np.abs(out - via_uint8)
    assert diff.mean() < 1.0 and np.percentile(diff, 90) <= 1.0
    x = to_model_batch([img], torch.device("cpu"), "pil-bicubic")
    torch.testing.assert_close(x[0], torch.from_numpy(out).permute(2, 0, 1) / 255)
    bilinear = torch.nn.functional.interpolate(
        to_model_batch([img], torch.device("cpu")), size=(299, 299), mode="bilinear", align_corners=False
    )
    assert (bilinear - x).abs().max() > 0.05  # the two protocols differ


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_suite_of_a_set_against_itself(weights, digits, tmp_path):
    root, folder, _, _ = digits
    written = evaluate_fid(_cfg(weights, tmp_path, folder, root / "digits.npz", save_stats=tmp_path / "s.npz"))
    scores, card = _read(tmp_path)
    key = "A vs B"
    assert abs(scores["fid"][key]) < 1e-3 and abs(scores["sfid"][key]) < 1e-3
    assert scores["precision"][key] == 1.0 and scores["recall"][key] == 1.0
    assert scores["kid"][key]["subset_size"] == N and scores["kid"][key]["requested_subset_size"] == 1000
    assert set(scores["inception_score"]) == {"A", "B"}
    assert set(card["metrics"]) == set(ALL_METRICS) and card["metrics_skipped"] == {}
    assert card["metrics"]["precision"]["k"] == 3 and card["metrics"]["kid"]["subsets"] == 5
    assert card["metrics"]["is"]["splits"] == 2
    assert card["references"][key]["role"] == "A" and card["references"][key]["kind"] == "folder"
    assert card["inputs"][1]["kind"] == "npz-images" and len(card["inputs"][1]["stats_sha256"]) == 64
    assert card["preprocess"]["resize_mode"] == "torch-bilinear"
    assert "float32" in card["memory"]
    saved = open_npz(tmp_path / "s.npz")
    assert saved.stats.count == N and saved.spatial.mu.shape == (2023,)
    assert tmp_path / "s.npz" in written


@pytest.mark.slow
def test_reference_batch_statistics_are_used_and_recorded(weights, digits, tmp_path):
    root, folder, _, images = digits
    # An ADM-style reference batch: arr_0 images + mu/sigma/mu_s/sigma_s (here: of the same digits).
    evaluate_fid(_cfg(weights, tmp_path / "r", folder, save_stats=tmp_path / "stats.npz"))
    st = np.load(tmp_path / "stats.npz")
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.stack(images), mu=st["mu"], sigma=st["sigma"], mu_s=st["mu_s"], sigma_s=st["sigma_s"])
    evaluate_fid(_cfg(weights, tmp_path, ref, folder, metrics="fid,sfid,precision"))
    scores, card = _read(tmp_path)
    assert abs(scores["fid"]["A vs B"]) < 1e-3 and scores["precision"]["A vs B"] == 1.0
    entry = card["references"]["A vs B"]
    assert entry["kind"] == "npz-reference" and "mu/sigma" in entry["statistics"]
    from vimtool.metrics.inception import sha256_file

    assert entry["sha256"] == sha256_file(ref)
    assert card["inputs"][0]["kept"]["pool_3_features"].endswith("float32")  # run for precision only
    # Statistics alone give FID/sFID; asking for precision against them is a one-line error naming --metrics.
    with pytest.raises(VimtoolError, match="--metrics") as e:
        evaluate_fid(_cfg(weights, tmp_path, tmp_path / "stats.npz", folder, metrics="precision"))
    assert "\n" not in str(e.value)
    evaluate_fid(_cfg(weights, tmp_path, tmp_path / "stats.npz", folder))  # default: what the inputs allow
    scores, card = _read(tmp_path)
    assert set(card["metrics"]) == {"fid", "sfid", "is"} and "precision" in card["metrics_skipped"]
    assert set(scores["inception_score"]) == {"B"}


@pytest.mark.slow
def test_different_resolutions_need_an_explicit_resize(weights, digits, tmp_path):
    _, folder, squares, _ = digits
    with pytest.raises(VimtoolError, match="--resize") as e:
        evaluate_fid(_cfg(weights, tmp_path, folder, squares, metrics="fid"))
    assert "28x28" in str(e.value) and "32x32" in str(e.value) and "\n" not in str(e.value)
    evaluate_fid(_cfg(weights, tmp_path, folder, squares, metrics="fid,is", resize="pil-bicubic"))
    scores, card = _read(tmp_path)
    assert scores["fid"]["A vs B"] > 1e-2
    assert card["preprocess"]["resize_mode"] == "pil-bicubic" and "explicitly" in card["preprocess"]["resize_chosen"]
    assert "PIL bicubic" in card["preprocess"]["resize"]
    assert card["inputs"][0]["kept"]["pool_3_features"] is None  # FID + IS: no pool_3 vectors kept


@pytest.mark.slow
def test_feature_cache_computes_a_reference_once(weights, digits, tmp_path, monkeypatch):
    _, folder, _, _ = digits
    cache = tmp_path / "cache"
    evaluate_fid(_cfg(weights, tmp_path, folder, folder, metrics="fid", feature_cache=cache))
    first, card = _read(tmp_path)
    assert len(list(cache.glob("*.npz"))) == 1  # both sides are the same files: one entry
    assert card["inputs"][1]["from_feature_cache"] is True  # B found A's entry
    import vimtool.metrics.eval_fid as ef

    def no_pass(*a, **k):
        raise AssertionError("the Inception ran although the features were cached")

    monkeypatch.setattr(ef, "inception_pass", no_pass)
    evaluate_fid(_cfg(weights, tmp_path, folder, folder, metrics="fid,precision,kid", feature_cache=cache))
    again, _ = _read(tmp_path)
    assert again["fid"] == first["fid"] and again["precision"]["A vs B"] == 1.0
    # Touching a file changes its mtime: a different key, so the Inception must run again.
    f = sorted(folder.glob("*.png"))[0]
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="cached"):
        evaluate_fid(_cfg(weights, tmp_path, folder, folder, metrics="fid", feature_cache=cache))


@pytest.mark.slow
def test_one_set_inception_score_and_save_batch(weights, digits, tmp_path):
    _, folder, _, images = digits
    written = evaluate_fid(
        _cfg(weights, tmp_path, folder, metrics="is", is_splits=2, save_batch=tmp_path / "batch.npz")
    )
    scores, card = _read(tmp_path)
    assert set(scores["inception_score"]) == {"A"} and scores["inception_score"]["A"]["splits"] == 2
    assert list(card["metrics"]) == ["is"]
    np.testing.assert_array_equal(np.load(tmp_path / "batch.npz")["arr_0"], np.stack(images))
    assert tmp_path / "batch.npz" in written


def test_eval_fid_help_lists_every_metric():
    """The command's options come from the CLI layer (vimtool/commands/), which must offer --metrics & co."""
    from typer.testing import CliRunner

    from vimtool.commands import app

    res = CliRunner().invoke(app, ["eval-fid", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for option in ("--metrics", "--resize", "--feature-cache", "--save-batch"):
        assert option in res.output, f"eval-fid --help lacks {option}: add it (EvalFidConfig's field) to the command"
    for metric in ALL_METRICS:
        assert metric in res.output.split("--metrics", 1)[1], f"--metrics help does not name {metric}"
