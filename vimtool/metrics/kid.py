"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", ICLR, Sec. 4 / eq. 3).

KID is the unbiased estimate of the squared MMD between the two sets' pool_3 features under the polynomial
kernel k(x, y) = (x . y / d + 1)^3, averaged over random subsets: 100 subsets of 1,000 vectors drawn without
replacement from each set, mean and std over subsets. The subset drawing is torch-fidelity's exactly
(`np.random.RandomState(seed)`, then per subset `choice(n1, m, replace=False)` for set 1 and the same for set
2), so with the same seed the same subsets are used; the kernel sums are computed in float64 (torch-fidelity
computes them in the features' dtype, float32 for its extractor). Sets smaller than the subset size are
handled by clamping the subset size to the smaller set (torch-fidelity refuses instead); the result says
which size was used. KID can be slightly negative for near-identical sets: the estimator is unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vimtool.errors import VimtoolError

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000
DEGREE = 3
COEF0 = 1.0


@dataclass
class KidResult:
    mean: float
    std: float
    subsets: int
    subset_size: int  # the size used: the requested one, clamped to the smaller set
    requested_subset_size: int

    @property
    def clamped(self) -> bool:
        return self.subset_size < self.requested_subset_size


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = DEGREE, coef0: float = COEF0) -> np.ndarray:
    """(m, d), (n, d) -> (m, n): (x . y / d + coef0) ** degree, gamma = 1/d as in the paper and torch-fidelity."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3): off-diagonal means of K_xx and K_yy minus twice mean K_xy."""
    m = len(k_xx)
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(xx + yy - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features_1: np.ndarray,
    features_2: np.ndarray,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = 0,
) -> KidResult:
    """KID between two (N, D) feature arrays; `features_1` is drawn from first (torch-fidelity: generated)."""
    n1, n2 = len(features_1), len(features_2)
    m = min(subset_size, n1, n2)
    if m < 2:
        raise VimtoolError(f"KID needs at least 2 images per set, got {n1} and {n2}")
    if subsets < 1:
        raise VimtoolError(f"KID needs at least 1 subset, got {subsets}")
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = np.asarray(features_1[rng.choice(n1, m, replace=False)], dtype=np.float64)
        y = np.asarray(features_2[rng.choice(n2, m, replace=False)], dtype=np.float64)
        mmds[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    return KidResult(float(mmds.mean()), float(mmds.std()), subsets, m, subset_size)
