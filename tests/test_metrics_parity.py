"""Parity of the suite's metric math with the reference implementations, on the SAME features and logits.

- KID, precision/recall, IS: torch-fidelity 0.4.0's pure metric functions (`kid_features_to_metric`,
  `prc_features_to_metric`, `isc_features_to_metric`);
- FID and sFID: pytorch-fid 0.3.0's `calculate_frechet_distance` on `np.cov` statistics, against ours from the
  streaming float64 sums.

Both live in the reference folder of tests/fid_reference.sh ($VIMTOOL_FID_REF or <repo>/.ci-ref), never in
the venv. torch-fidelity's metric modules import `torch_fidelity.utils`, which imports torchvision; the folder's
torchvision 0.28.0 imports beside this CPU-only torch with the fake-kernel registration skipped
(`fid_fixtures.import_reference`), so no stub is needed and no torchvision op is ever run.

Features: pool_3 / spatial / logits of our Inception (seeded stand-in weights, fid_fixtures.py) on real MNIST
digits and photos, plus seeded synthetic pool_3-like vectors where more samples are needed (KID subsets).
Agreement: 1e-5 relative, except where a convention differs (stated at the assertion).
Under CI (`CI=true`) a missing reference fails; locally it skips with the command that installs it.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch
from fid_fixtures import REPO, import_reference, mnist_digits, model_from_state, reference_dir, seeded_inception_state

from vimtool.metrics.fid import FidStats, frechet_distance, inception_pass, inception_score
from vimtool.metrics.kid import kernel_inception_distance
from vimtool.metrics.prdc import precision_recall
from vimtool.metrics.suite import Needs, RunningGaussian, SetAccumulator

REL = 1e-5
INSTALL = "bash tests/fid_reference.sh .ci-ref (or pip install --no-deps --target .ci-ref torch-fidelity==0.4.0)"


def _missing(what: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is missing under CI: the workflow must run {INSTALL} before pytest")
    pytest.skip(f"{what} not installed; run {INSTALL}")


@pytest.fixture(scope="module")
def refs():
    ref = reference_dir()
    if ref is None or not (ref / "torch_fidelity").is_dir():
        subprocess.run(["bash", str(REPO / "tests" / "fid_reference.sh"), str(REPO / ".ci-ref")], capture_output=True)
        ref = reference_dir()
    if ref is None:
        _missing("the pytorch-fid reference folder")
    if not (ref / "torch_fidelity").is_dir():
        _missing(f"torch-fidelity 0.4.0 in {ref}")
    _, fid_score = import_reference(ref)  # makes the folder's torchvision importable (see the docstring)
    import torch_fidelity.metric_isc as isc
    import torch_fidelity.metric_kid as kid
    import torch_fidelity.metric_prc as prc

    return fid_score, isc, kid, prc


@pytest.fixture(scope="module")
def real_features():
    """Our Inception's outputs on 40 real MNIST digits in two sets of 20 (one pass each, every part kept)."""
    model = model_from_state(seeded_inception_state(seed=0)).fuse_for_inference()
    digits = mnist_digits(40)
    out = []
    for part in (digits[:20], digits[20:]):
        acc = SetAccumulator(Needs.everything())
        spatial = []

        class _Spatial:  # the raw spatial vectors too, to build np.cov statistics like pytorch-fid's
            def add(self, o):
                spatial.append(o.spatial.float().permute(0, 2, 3, 1).reshape(len(o.pool), -1).numpy())

        sizes = inception_pass(part, model, {"acc": (None, acc), "raw": (None, _Spatial())}, batch_size=10, workers=0)
        feats = acc.result(sizes)
        out.append((feats, np.concatenate(spatial)))
    return out


def _synthetic_pool(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """pool_3-like vectors: non-negative (post-ReLU averages), correlated, float32."""
    mix = np.random.default_rng(1234).normal(size=(64, 2048)) / 8  # one subspace for every set
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, 64)) @ mix + 0.3 + shift, 0).astype(np.float32)


def test_fid_and_sfid_equal_pytorch_fid_on_the_same_features(refs, real_features):
    fid_score = refs[0]
    (a, a_spatial), (b, b_spatial) = real_features
    for ours_a, ours_b, raw_a, raw_b, dim in (
        (a.stats, b.stats, a.pool, b.pool, 2048),
        (a.spatial, b.spatial, a_spatial, b_spatial, 2023),
    ):
        assert raw_a.shape == (20, dim)
        # Our streaming float64 statistics equal np.cov of the kept float32 vectors (pytorch-fid's statistics).
        np.testing.assert_allclose(ours_a.mu, raw_a.astype(np.float64).mean(0), rtol=0, atol=1e-12)
        cov = np.cov(raw_a.astype(np.float64), rowvar=False)
        np.testing.assert_allclose(ours_a.sigma, cov, rtol=0, atol=1e-10 * np.abs(cov).max())
        ref = fid_score.calculate_frechet_distance(
            raw_a.mean(0), np.cov(raw_a, rowvar=False), raw_b.mean(0), np.cov(raw_b, rowvar=False)
        )
        assert ref > 1e-3
        assert frechet_distance(ours_a, ours_b) == pytest.approx(ref, rel=REL)


def test_inception_score_equals_torch_fidelity_without_shuffle(refs, real_features):
    isc = refs[1]
    (a, _), (b, _) = real_features
    logits = np.concatenate([a.logits, b.logits])  # 40 images
    for splits in (10, 4):
        ref = isc.isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=False)
        mean, std = inception_score(logits, splits)
        assert mean == pytest.approx(ref["inception_score_mean"], rel=REL)
        assert std == pytest.approx(ref["inception_score_std"], rel=REL, abs=1e-9)
    # Convention difference, stated on the card: torch-fidelity shuffles (seed 2020) by default, we do not
    # (the original code and ADM's evaluator take consecutive splits). Shuffled, the mean moves off ours.
    shuffled = isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    assert shuffled["inception_score_mean"] != pytest.approx(inception_score(logits, 10)[0], rel=1e-9)


def test_precision_recall_equal_torch_fidelity(refs, real_features):
    prc = refs[3]
    (a, _), (b, _) = real_features
    cases = [
        (a.pool, b.pool),
        (_synthetic_pool(300, 1), _synthetic_pool(200, 2, shift=0.05)),  # partly overlapping manifolds
    ]
    for real, fake in cases:
        # torch-fidelity: features_1 is the generated set, features_2 the real one.
        ref = prc.prc_features_to_metric(
            torch.from_numpy(fake),
            torch.from_numpy(real),
            prc_neighborhood=3,
            prc_batch_size=10000,
            save_cpu_ram=False,
            verbose=False,
        )
        precision, recall = precision_recall(real, fake, k=3)
        assert precision == pytest.approx(ref["precision"], rel=REL)
        assert recall == pytest.approx(ref["recall"], rel=REL)
    assert 0 < precision < 1 and 0 < recall < 1  # the synthetic case is not a trivial 0 or 1


def test_kid_equals_torch_fidelity_on_the_same_subsets(refs):
    kid = refs[2]
    f1, f2 = _synthetic_pool(400, 3), _synthetic_pool(300, 4, shift=0.02)
    kwargs = dict(kid_subsets=10, kid_subset_size=200, rng_seed=7, verbose=False)
    # Same float64 features in: the same subsets (same RandomState draws) and the same number.
    ref = kid.kid_features_to_metric(torch.from_numpy(f1).double(), torch.from_numpy(f2).double(), **kwargs)
    ours = kernel_inception_distance(f1, f2, subsets=10, subset_size=200, seed=7)
    assert ref["kernel_inception_distance_mean"] > 1e-4
    assert ours.mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=REL)
    assert ours.std == pytest.approx(ref["kernel_inception_distance_std"], rel=REL)
    # Convention difference: torch-fidelity sums the kernels in the features' dtype (float32 from its
    # extractor), we in float64; on float32 input the two agree to float32 accuracy only.
    ref32 = kid.kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), **kwargs)
    assert ours.mean == pytest.approx(ref32["kernel_inception_distance_mean"], rel=1e-2)


def test_running_gaussian_is_np_cov_for_offset_data():
    """Large mean, small spread: naive sums of x x^T would cancel; the shifted sums do not."""
    rng = np.random.default_rng(0)
    x = (1e3 + rng.normal(size=(257, 16))).astype(np.float32)
    g = RunningGaussian(16)
    for part in np.array_split(x, 7):
        g.add(part)
    s = g.stats()
    ref = FidStats.from_features(x)
    np.testing.assert_allclose(s.mu, ref.mu, rtol=1e-14)
    np.testing.assert_allclose(s.sigma, ref.sigma, rtol=0, atol=1e-9 * np.abs(ref.sigma).max())
    assert s.count == 257
