"""FID / IS behaviour without the reference: weights resolution, input kinds, scores, npz files, the CLI.

Every Inception here loads seeded stand-in weights (fid_fixtures.py) from a temporary file given with
`--inception-weights` / `weights=`; nothing is downloaded (HF_HUB_OFFLINE=1 also turns our download off).
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from fid_fixtures import model_from_state, seeded_inception_state, write_weights
from PIL import Image
from typer.testing import CliRunner

from vimtool.commands import app
from vimtool.errors import VimtoolError
from vimtool.metrics.batches import load_npz
from vimtool.metrics.eval_fid import EvalFidConfig, evaluate_fid
from vimtool.metrics.fid import (
    FidStats,
    extract_features,
    frechet_distance,
    inception_score,
    save_npz,
    to_model_batch,
)
from vimtool.metrics.inception import WEIGHTS_FILE, FIDInceptionV3, load_inception, resolve_inception_weights

N_IMAGES = 6  # a 299x299 Inception is ~0.05-0.1 s per image on a CPU core: keep sets tiny


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def model(weights):
    return load_inception(weights)[0]


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    """Empty caches everywhere the resolver looks."""
    monkeypatch.setenv("VIMTOOL_CACHE", str(tmp_path / "vimtool-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    return tmp_path


# --- weights ------------------------------------------------------------------------------------------------------


def test_missing_weights_error_names_the_file_and_the_option(no_cache):
    with pytest.raises(VimtoolError) as e:
        resolve_inception_weights()
    msg = str(e.value)
    assert WEIGHTS_FILE in msg and "--inception-weights" in msg and "\n" not in msg
    assert str(no_cache / "vimtool-cache") in msg  # where to put it


def test_missing_weights_cli_is_one_line_exit_2(no_cache, tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(img / f"{i}.png")
    import subprocess

    env = {
        **__import__("os").environ,
        "VIMTOOL_CACHE": str(no_cache / "vimtool-cache"),
        "HOME": str(no_cache / "home"),
        "TORCH_HOME": str(no_cache / "torch-home"),
        "HF_HUB_OFFLINE": "1",
    }
    res = subprocess.run(
        [sys.executable, "-m", "vimtool", "eval-fid", str(img), str(img), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and WEIGHTS_FILE in lines[-1] and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_bad_weights_path_and_wrong_state_dict_are_clear_errors(no_cache, tmp_path):
    with pytest.raises(VimtoolError, match="--inception-weights"):
        resolve_inception_weights(tmp_path / "nope.pth")
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(VimtoolError, match="not the FID Inception"):
        load_inception(bad)


def test_weights_are_found_in_the_caches(no_cache):
    state = seeded_inception_state(1, with_num_batches_tracked=False)  # the file may lack these buffers
    for folder in (no_cache / "vimtool-cache", no_cache / "torch-hub" / "checkpoints"):
        folder.mkdir(parents=True)
        torch.save(state, folder / WEIGHTS_FILE)
        assert resolve_inception_weights() == folder / WEIGHTS_FILE
        model, path = load_inception(fuse=False)
        assert path == folder / WEIGHTS_FILE
        assert all(t.device.type == "cpu" for t in model.state_dict().values())  # nothing left on meta
        assert torch.equal(model.fc.weight, state["fc.weight"])  # the real weights, not random ones
        (folder / WEIGHTS_FILE).unlink()


def test_weights_download_to_the_cache_when_online(no_cache, monkeypatch):
    """The download itself is mocked (no network here): URL, atomic placement and later cache hits are ours."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        torch.save(seeded_inception_state(2), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = resolve_inception_weights()
    assert calls == ["https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE]
    assert path == no_cache / "vimtool-cache" / WEIGHTS_FILE and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [WEIGHTS_FILE]  # no temp file left behind
    assert resolve_inception_weights() == path and len(calls) == 1  # second time: from the cache

    def failing_download(url, dst, progress=True):
        raise OSError("network unreachable")

    path.unlink()
    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(VimtoolError, match="--inception-weights"):
        resolve_inception_weights()


def test_state_dict_keys_and_shapes_are_the_weight_file_s():
    sd = FIDInceptionV3().state_dict()
    # Spot checks of the TF port's layout (pytorch-fid's fid_inception_v3 with 1008 classes, no aux head).
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)
    # torchvision counts 27,161,264 parameters for Inception v3 with its aux head (3,326,696) and 1000 classes;
    # without the aux head and with 1008 classes (+8 x 2049): 23,850,960.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 23_850_960


def test_fused_model_matches_unfused(weights):
    plain = model_from_state(torch.load(weights, weights_only=True))
    fused = model_from_state(torch.load(weights, weights_only=True)).fuse_for_inference()
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    a, b = plain(x), fused(x)
    scale = a.pool.abs().max()
    assert (a.pool - b.pool).abs().max() <= 1e-5 * scale
    assert (a.logits - b.logits).abs().max() <= 1e-5 * a.logits.abs().max()


def test_mixed_sizes_in_one_batch_give_the_per_image_features(model):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((30, 30, 3), (41, 23, 3))]
    together = extract_features(imgs, model, batch_size=2, workers=0).pool
    alone = np.concatenate([extract_features([im], model, batch_size=1, workers=0).pool for im in imgs])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5 * np.abs(alone).max())
    assert to_model_batch(imgs, torch.device("cpu")).shape == (2, 3, 299, 299)


# --- scores -------------------------------------------------------------------------------------------------------


def test_frechet_distance_of_known_gaussians():
    # Diagonal covariances: FID = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 in closed form.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    s1 = FidStats(mu=np.zeros(3), sigma=np.diag(a))
    s2 = FidStats(mu=np.array([1.0, 2.0, 0.0]), sigma=np.diag(b))
    assert frechet_distance(s1, s2) == pytest.approx(5.0 + 1.0 + 1.0 + 0.0, rel=1e-12)
    assert frechet_distance(s1, s1) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(VimtoolError, match="different sizes"):
        frechet_distance(s1, FidStats(mu=np.zeros(2), sigma=np.eye(2)))
    with pytest.raises(VimtoolError, match="NaN or inf"):
        frechet_distance(s1, FidStats(mu=np.array([0.0, np.nan, 0.0]), sigma=np.diag(b)))


def test_frechet_distance_of_non_commuting_and_singular_covariances():
    # Tr sqrtm(S1 S2) of non-commuting S1, S2: against the eigenvalues of the product computed directly.
    rng = np.random.default_rng(0)
    for n, d in ((100, 8), (4, 8)):  # full rank; rank 3 (fewer samples than dimensions)
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        s1, s2 = FidStats.from_features(x), FidStats.from_features(y)
        tr = np.sqrt(np.clip(np.linalg.eigvals(s1.sigma @ s2.sigma).real, 0, None)).sum()
        direct = ((s1.mu - s2.mu) ** 2).sum() + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * tr
        # singular: the square roots of round-off-sized eigenvalues (~1e-16) differ by ~1e-8 between methods
        rel = 1e-12 if n > d else 1e-7
        assert frechet_distance(s1, s2) == pytest.approx(direct, rel=rel)
        assert frechet_distance(s1, s2) == pytest.approx(frechet_distance(s2, s1), rel=rel)  # symmetric


def test_inception_score_extremes():
    n, k = 80, 1008
    assert inception_score(np.zeros((n, k))) == pytest.approx((1.0, 0.0), abs=1e-9)  # no information: IS = 1
    # Each split of 8 holds 4 classes twice, each predicted with certainty: IS = 4 in every split.
    logits = np.full((n, k), -1e3)
    logits[np.arange(n), np.arange(n) % 4] = 0.0
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(4.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(VimtoolError, match="at least 10"):
        inception_score(np.zeros((5, k)))


def test_npz_round_trip_and_adm_batches(tmp_path):
    rng = np.random.default_rng(0)
    stats = FidStats.from_features(rng.normal(size=(20, 16)))
    back = load_npz(save_npz(stats, tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.count == 20 and back.mu.dtype == np.float64
    # ADM sample batch: arr_0 uint8 NHWC (and NCHW is transposed); a reference batch with both prefers stats.
    imgs = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "adm.npz", arr_0=imgs, arr_1=np.arange(4))
    np.testing.assert_array_equal(load_npz(tmp_path / "adm.npz"), imgs)
    np.savez(tmp_path / "nchw.npz", arr_0=imgs.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(load_npz(tmp_path / "nchw.npz"), imgs)
    np.savez(tmp_path / "ref.npz", arr_0=imgs, mu=stats.mu, sigma=stats.sigma)
    assert isinstance(load_npz(tmp_path / "ref.npz"), FidStats)
    np.testing.assert_array_equal(load_npz(tmp_path / "ref.npz", prefer_images=True), imgs)
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(VimtoolError, match="expected 'mu' and 'sigma'"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(VimtoolError, match=".npz"):
        save_npz(stats, tmp_path / "s.txt")


# --- inputs -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_set(tmp_path_factory):
    """The first N_IMAGES examples of the `mnist5k` data spec, also as a PNG folder, a path list and an npz."""
    from vimtool.data.sources import open_source

    root = tmp_path_factory.mktemp("digits")
    folder = root / "pngs"
    folder.mkdir()
    images = [np.asarray(ex.image) for _, ex in zip(range(N_IMAGES), open_source("mnist5k", split="train"))]
    paths = []
    for i, im in enumerate(images):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(im).save(paths[-1])
    (root / "list.txt").write_text("\n".join(str(p) for p in paths) + "\n")
    np.savez(root / "arr.npz", arr_0=np.stack(images))
    return root, folder, paths


@pytest.mark.slow
def test_input_kinds_give_the_same_stats(digit_set, weights, tmp_path, monkeypatch):
    root, folder, paths = digit_set
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(str(p) for p in paths) + "\n"))
    results = {}
    for spec in (str(folder), str(root / "list.txt"), "-", str(root / "arr.npz"), "mnist5k"):
        out = tmp_path / f"stats{len(results)}.npz"
        cfg = EvalFidConfig(
            inputs=[spec],
            n=N_IMAGES,
            inception_weights=str(weights),
            save_stats=str(out),
            out=str(tmp_path / "o"),
            batch_size=4,
        )
        written = evaluate_fid(cfg)
        assert out in written
        results[spec] = load_npz(out)
    first = results[str(folder)]
    assert first.count == N_IMAGES
    for spec, stats in results.items():
        np.testing.assert_allclose(stats.mu, first.mu, rtol=0, atol=1e-9 * np.abs(first.mu).max(), err_msg=spec)
        np.testing.assert_allclose(
            stats.sigma, first.sigma, rtol=0, atol=1e-9 * np.abs(first.sigma).max(), err_msg=spec
        )
    card = json.loads((tmp_path / "o" / "protocol.json").read_text())
    assert card["inputs"][0]["kind"] == "data" and card["inputs"][0]["count"] == N_IMAGES


def test_bad_inputs_are_one_line_errors(tmp_path, weights):
    with pytest.raises(VimtoolError, match="one or two"):
        evaluate_fid(EvalFidConfig(inputs=[]))
    with pytest.raises(VimtoolError, match="give two image sets"):
        evaluate_fid(EvalFidConfig(inputs=[str(tmp_path)]))
    with pytest.raises(VimtoolError, match="does not exist"):
        evaluate_fid(EvalFidConfig(inputs=[str(tmp_path / "missing.npz"), str(tmp_path)]))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(VimtoolError, match="no image paths"):
        evaluate_fid(EvalFidConfig(inputs=[str(tmp_path / "empty.txt")], save_stats=str(tmp_path / "x.npz")))


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_fid_of_a_set_against_itself_is_zero_and_writes_the_card(digit_set, weights, tmp_path):
    root, folder, paths = digit_set
    gen = tmp_path / "samples"
    gen.mkdir()
    for p in paths:
        (gen / p.name).write_bytes(p.read_bytes())
    (gen / "sampling.json").write_text(json.dumps({"temperature": 1.0, "top_k": 100, "seed": 7}))
    out = tmp_path / "eval"
    stdin = "\n".join(str(gen / p.name) for p in paths) + "\n"
    res = CliRunner().invoke(
        app,
        [
            "eval-fid",
            str(folder),
            "-",
            "--inception-weights",
            str(weights),
            "--out",
            str(out),
            "--batch-size",
            "5",
            "--set",
            "is_splits=3",
        ],
        input=stdin,
    )
    assert res.exit_code == 0, res.output
    printed = res.stdout.strip().splitlines()
    assert printed == [str(out / "scores.json"), str(out / "protocol.json")]
    scores = json.loads((out / "scores.json").read_text())["scores"]
    assert abs(scores["fid"]["A vs B"]) < 1e-3  # same images through different input kinds
    assert set(scores["inception_score"]) == {"A", "B"}
    card = json.loads((out / "protocol.json").read_text())
    assert card["inception"]["sha256"] and card["inception"]["file"] == WEIGHTS_FILE
    assert [i["kind"] for i in card["inputs"]] == ["folder", "stdin"]
    assert [i["count"] for i in card["inputs"]] == [N_IMAGES, N_IMAGES]
    assert card["inputs"][1]["sampling"]["top_k"] == 100 and card["seed"] == 0
    assert card["inputs"][0]["image_sizes"] == {"28x28": N_IMAGES}
    assert "bilinear 299x299" in card["preprocess"]["resize"]


@pytest.mark.slow
def test_rfid_of_a_tokenizer_on_the_real_set(digit_set, weights, tmp_path):
    from vimtool.checkpoint import save_model
    from vimtool.models.vitvqgan import SIZES, ViTVQGAN

    torch.manual_seed(0)
    tok = ViTVQGAN(SIZES["micro"])  # untrained: its reconstructions are far from the digits
    ckpt = save_model(tok, tmp_path / "tok")
    root, folder, _ = digit_set
    out = tmp_path / "eval"
    written = evaluate_fid(
        EvalFidConfig(
            inputs=[str(folder)],
            tokenizer=str(ckpt),
            inception_weights=str(weights),
            out=str(out),
            batch_size=5,
            save_stats=str(tmp_path / "real.npz"),
        )
    )
    scores = json.loads((out / "scores.json").read_text())["scores"]
    assert scores["metric"] == "rFID" and scores["fid"]["A-recon vs A"] > 1e-2
    card = json.loads((out / "protocol.json").read_text())
    assert card["tokenizer"]["image_size"] == SIZES["micro"].image_size
    assert [i["role"] for i in card["inputs"]] == ["A", "A-recon"]
    assert tmp_path / "real.npz" in written


def test_seeded_weights_are_deterministic_and_give_varied_features():
    a, b = seeded_inception_state(3), seeded_inception_state(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = model_from_state(a)
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.pool.shape == (3, 2048) and out.logits.shape == (3, 1008)
    assert torch.isfinite(out.pool).all()
    # Not constant across images nor across features: FID on these features means something.
    assert out.pool.std(dim=0).mean() > 1e-3 and out.pool.std(dim=1).mean() > 1e-2
