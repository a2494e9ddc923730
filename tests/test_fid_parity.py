"""Parity with pytorch-fid 0.3.0 itself: same weights in both, real images, features and FID compared.

The reference lives outside the venv (tests/fid_reference.sh installs it; CI runs that script before pytest);
it is looked up at $VIMTOOL_FID_REF or <repo>/.ci-ref. Without it the tests skip locally and fail under CI. Only the download of the weights is replaced: both
implementations load the same seeded state dict with the real file's keys (see fid_fixtures.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from fid_fixtures import (
    REPO,
    import_reference,
    mnist_digits,
    model_from_state,
    reference_dir,
    seeded_inception_state,
    shipped_photos,
)
from PIL import Image

from vimtool.metrics.batches import load_npz
from vimtool.metrics.fid import FidStats, extract_features, frechet_distance, save_npz


def _install_reference():
    """The reference folder, installing it when missing; under CI (`CI` set) a missing reference FAILS the tests.

    Locally the reference may be out of reach (no network): then the tests skip and say why. CI installs it before
    pytest (.ci/run runs tests/fid_reference.sh), so there a missing reference is a broken CI, never a green run.
    """
    ref = reference_dir()
    if ref is not None:
        return ref
    target = REPO / ".ci-ref"
    res = subprocess.run(
        ["bash", str(REPO / "tests" / "fid_reference.sh"), str(target)], capture_output=True, text=True
    )
    ref = reference_dir()
    if ref is None:
        why = (
            f"the pytorch-fid 0.3.0 reference is not in $VIMTOOL_FID_REF or {target} and "
            f"`bash tests/fid_reference.sh {target}` could not install it: {res.stderr.strip()[-300:]}"
        )
        if running_under_ci():
            pytest.fail(f"CI must run the FID parity tests: {why}", pytrace=False)
        pytest.skip(why)
    return ref


def running_under_ci() -> bool:
    """True under a CI runner: GitHub Actions, GitLab and most others set CI=true (any value but empty/false/0)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def reference():
    ref = _install_reference()
    inception, fid_score = import_reference(ref)
    return ref, inception, fid_score


@pytest.fixture(scope="module")
def real_images(tmp_path_factory, reference):
    """32 MNIST digits (PNG, grey 28x28) and 8 real photos that ship in wheels (JPEG, various sizes).

    Few on purpose: a 299x299 Inception costs ~0.05-0.1 s per image on a CPU core, and both networks run.
    """
    ref, _, _ = reference
    folder = tmp_path_factory.mktemp("mnist")
    for i, digit in enumerate(mnist_digits(32)):
        Image.fromarray(digit).save(folder / f"digit_{i:03d}.png")
    photos = shipped_photos(ref)
    assert len(photos) >= 20, "foolbox's ImageNet samples should be in the reference folder"
    return sorted(folder.glob("*.png")), photos[:8]


@pytest.mark.slow
def test_features_and_fid_match_pytorch_fid(reference, real_images):
    _, inception, fid_score = reference
    state = seeded_inception_state(seed=0)
    # Replace only the download: pytorch-fid's own InceptionV3 (FIDInceptionA/C/E blocks) gets our weights.
    inception.load_state_dict_from_url = lambda *args, **kwargs: state
    ref_model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    ours = model_from_state(state).fuse_for_inference()  # the default, fastest path

    digits, photos = real_images
    # pytorch-fid stacks a batch, so it needs one size per batch: digits in batches of 16, photos one by one.
    ref_digits = fid_score.get_activations(digits, ref_model, batch_size=16, device="cpu", num_workers=0)
    ref_photos = np.concatenate(
        [fid_score.get_activations([p], ref_model, batch_size=1, device="cpu", num_workers=0) for p in photos]
    )
    our_digits = extract_features(digits, ours, batch_size=16).pool
    our_photos = extract_features(photos, ours, batch_size=8).pool  # mixed sizes in one batch

    for ref_act, our_act in ((ref_digits, our_digits), (ref_photos, our_photos)):
        assert our_act.shape == ref_act.shape
        scale = np.abs(ref_act).max()
        assert scale > 0.1 and ref_act.std(axis=0).mean() > 1e-3  # features are not degenerate
        np.testing.assert_allclose(our_act, ref_act, rtol=0, atol=1e-5 * scale)

    # FID between the two real sets by both implementations (one 2048x2048 sqrtm each: ~10-60 s on a CPU).
    fid_ref = fid_score.calculate_frechet_distance(
        np.mean(ref_digits, axis=0),
        np.cov(ref_digits, rowvar=False),
        np.mean(ref_photos, axis=0),
        np.cov(ref_photos, rowvar=False),
    )
    fid_our = frechet_distance(FidStats.from_features(our_digits), FidStats.from_features(our_photos))
    assert fid_ref > 1e-2
    assert abs(fid_our - fid_ref) <= 1e-4 * abs(fid_ref), (fid_our, fid_ref)


def test_frechet_distance_numerics_equal_pytorch_fid(reference):
    """Same stats in, same number out: pytorch-fid takes scipy.linalg.sqrtm of the product, we two
    symmetric eigendecompositions: equal within 1e-12 relative at full rank, 1e-7 when singular."""
    _, _, fid_score = reference
    rng = np.random.default_rng(0)
    for n, d in ((200, 16), (10, 32)):  # full rank, and singular (fewer samples than dimensions)
        x, y = rng.normal(size=(n, d)), rng.normal(0.3, 1.2, size=(n, d))
        sx, sy = FidStats.from_features(x), FidStats.from_features(y)
        ref = fid_score.calculate_frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma)
        assert frechet_distance(sx, sy) == pytest.approx(ref, rel=1e-12 if n > d else 1e-7)


def test_npz_stats_interoperate_with_pytorch_fid(reference, tmp_path):
    _, inception, fid_score = reference
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2048)).astype(np.float32)
    ours = FidStats.from_features(x)
    ours_path = save_npz(ours, tmp_path / "ours.npz")
    # pytorch-fid's loader reads our file (it takes `.npz` paths as precomputed statistics).
    mu, sigma = fid_score.compute_statistics_of_path(str(ours_path), None, 50, 2048, "cpu")
    np.testing.assert_array_equal(mu, ours.mu)
    np.testing.assert_array_equal(sigma, ours.sigma)
    # ... and we read pytorch-fid's, written exactly as its --save-stats writes it.
    theirs_path = tmp_path / "theirs.npz"
    np.savez_compressed(theirs_path, mu=ours.mu * 2, sigma=ours.sigma * 3)
    back = load_npz(theirs_path)
    np.testing.assert_array_equal(back.mu, ours.mu * 2)
    np.testing.assert_array_equal(back.sigma, ours.sigma * 3)
    assert back.count is None


def test_reference_stays_out_of_the_package():
    """The reference is a test-only folder: importing vimtool's metrics never pulls in torchvision/pytorch_fid."""
    code = "import sys, vimtool.metrics.eval_fid, vimtool.commands; print('torchvision' in sys.modules, 'pytorch_fid' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_reference_fails_under_ci_and_skips_locally(monkeypatch, ci):
    """A reference that cannot be installed never turns into a green run on CI: fail there, skip (with why) here."""
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "reference_dir", lambda: None)
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "pip: no network"), raising=True
    )
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="no network"):
        _install_reference()
