"""The ImageNet evaluation suite from ONE Inception pass per image set: FID, sFID, IS, precision, recall, KID.

Papers report ImageNet generation with ADM's evaluator (Dhariwal & Nichol 2021, `evaluations/evaluator.py`):
FID, sFID, Inception Score, precision and recall on 50,000 samples against a reference batch. Here:

- FID (Heusel et al. 2017): Frechet distance of pool_3 (2048-d) Gaussians, pytorch-fid 0.3.0's numerics
  (`fid.frechet_distance`).
- sFID (Nash et al. 2021, "Generating Images with Sparse Representations", Sec. 4): the same distance on
  spatial features, TF's `mixed_6/conv` first 7 channels (7 x 17 x 17 = 2023-d; `inception.SPATIAL_CHANNELS`
  says why that is our Mixed_6d). Flattened in (H, W, C) order, as ADM flattens its NHWC tensor, so our
  `mu_s`/`sigma_s` line up with the ones in ADM's reference batches.
- IS (Salimans et al. 2016): `fid.inception_score`, 10 consecutive splits, no shuffle (the original code and
  ADM's `compute_inception_score`; torch-fidelity shuffles with seed 2020 by default).
- Precision and recall (Kynkaanniemi et al. 2019), k = 3 on pool_3: `prdc.py`.
- KID (Binkowski et al. 2018), cubic polynomial kernel, 100 subsets of 1,000: `kid.py`.

Memory: the pass streams images batch by batch. FID/sFID statistics accumulate as float64 running sums of x
and x x^T (about a shift, see `RunningGaussian`), so FID/sFID alone keep O(d^2) numbers whatever N is.
Precision/recall and KID need the pool_3 vectors themselves: kept as float32 (50,000 x 2048 = 400 MB); IS keeps
the 1008 logits per image as float32 (200 MB at 50,000). Beyond those arrays nothing grows with N: the rows are
kept in large blocks outside the heap that the pass's activations reuse (`fid.RowStore`), IS works one split at
a time, precision/recall compute distances in blocks of bounded bytes (`prdc.BLOCK_BYTES`), KID on 1,000-vector
subsets (bench/bench_eval_memory.py measures the command's peak RSS against N: docs/BENCHMARKS.md, 4b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vimtool.errors import VimtoolError
from vimtool.metrics.fid import FidStats, RowStore
from vimtool.metrics.inception import FEATURE_DIM, NUM_CLASSES, SPATIAL_DIM, InceptionOutputs

ALL_METRICS = ("fid", "sfid", "is", "precision", "recall", "kid")
PAIR_METRICS = ("fid", "sfid", "precision", "recall", "kid")  # compare two sets
FEATURE_METRICS = ("precision", "recall", "kid")  # need the pool_3 vectors, not only statistics
FEATURE_DTYPE = np.float32


def parse_metrics(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """`"fid,kid"` (or a list) -> ("fid", "kid") in the suite's order; None stays None (= all the inputs allow)."""
    if spec is None:
        return None
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown or not names:
        raise VimtoolError(f"--metrics {spec!r}: choose from {','.join(ALL_METRICS)} (comma-separated)")
    return tuple(m for m in ALL_METRICS if m in names)


class RunningGaussian:
    """Mean and covariance of a stream of d-vectors from float64 running sums of x and x x^T.

    The sums are taken about a shift (the first batch's mean) so that `sum xx^T - n mu mu^T` does not cancel
    catastrophically; the covariance is the unbiased one (N - 1), as `np.cov` and pytorch-fid compute it.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self.shift: np.ndarray | None = None
        self.sum = np.zeros(dim, dtype=np.float64)
        self.outer = np.zeros((dim, dim), dtype=np.float64)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)  # float32 -> float64 is exact
        if x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d vectors, got {x.shape[1]}")
        if self.shift is None:
            self.shift = x.mean(axis=0)
        d = x - self.shift  # (B, dim)
        self.sum += d.sum(axis=0)
        self.outer += d.T @ d  # (dim, dim)
        self.count += len(x)

    def stats(self) -> FidStats:
        if self.count < 2:
            raise VimtoolError(f"FID needs at least 2 images per set, got {self.count}; give more images")
        mean_d = self.sum / self.count
        sigma = (self.outer - self.count * np.outer(mean_d, mean_d)) / (self.count - 1)
        return FidStats(mu=self.shift + mean_d, sigma=sigma, count=self.count)


@dataclass
class SetFeatures:
    """What one Inception pass kept of one image set (only the parts the asked metrics need)."""

    count: int = 0
    stats: FidStats | None = None  # pool_3 Gaussian (FID)
    spatial: FidStats | None = None  # mixed_6/conv[:7] Gaussian (sFID)
    pool: np.ndarray | None = None  # (N, 2048) float32 (precision, recall, KID)
    logits: np.ndarray | None = None  # (N, 1008) float32 (IS)
    sizes: dict[str, int] = field(default_factory=dict)

    def has(self, part: str) -> bool:
        return getattr(self, part) is not None


@dataclass
class Needs:
    """Which parts of `SetFeatures` an image set's pass must produce."""

    stats: bool = False
    spatial: bool = False
    pool: bool = False
    logits: bool = False

    @classmethod
    def everything(cls) -> Needs:
        return cls(True, True, True, True)

    def parts(self) -> list[str]:
        return [p for p in ("stats", "spatial", "pool", "logits") if getattr(self, p)]

    def any(self) -> bool:
        return bool(self.parts())


class SetAccumulator:
    """A `fid.FeatureSink`: folds each batch's Inception outputs into what `needs` asks for."""

    def __init__(self, needs: Needs) -> None:
        self.needs = needs
        self.count = 0
        self.pool_gauss = RunningGaussian(FEATURE_DIM) if needs.stats else None
        self.spatial_gauss = RunningGaussian(SPATIAL_DIM) if needs.spatial else None
        self.pools = RowStore(FEATURE_DIM, FEATURE_DTYPE) if needs.pool else None
        self.logits = RowStore(NUM_CLASSES, FEATURE_DTYPE) if needs.logits else None

    def add(self, out: InceptionOutputs) -> None:
        pool = out.pool.float().cpu().numpy()  # (B, 2048)
        self.count += len(pool)
        if self.pool_gauss is not None:
            self.pool_gauss.add(pool)
        if self.spatial_gauss is not None:
            # (B, 7, 17, 17) -> (B, 17, 17, 7) -> (B, 2023): ADM flattens TF's NHWC tensor in this order.
            spatial = out.spatial.float().permute(0, 2, 3, 1).reshape(len(pool), -1)
            self.spatial_gauss.add(spatial.cpu().numpy())
        if self.pools is not None:
            self.pools.add(pool)
        if self.logits is not None:
            self.logits.add(out.logits)

    def result(self, sizes: dict[str, int]) -> SetFeatures:
        return SetFeatures(
            count=self.count,
            stats=self.pool_gauss.stats() if self.pool_gauss is not None else None,
            spatial=self.spatial_gauss.stats() if self.spatial_gauss is not None else None,
            pool=self.pools.result() if self.pools is not None else None,
            logits=self.logits.result() if self.logits is not None else None,
            sizes=dict(sizes),
        )


def metric_settings(
    metrics: tuple[str, ...], is_splits: int, pr_k: int, kid_subsets: int, kid_subset_size: int
) -> dict[str, dict]:
    """Exact settings of each metric, for the protocol card."""
    settings = {
        "fid": {
            "features": "pool_3, 2048-d",
            "statistics": "float64 running sums of x and x x^T (shifted), unbiased covariance (N - 1)",
            "distance": "pytorch-fid 0.3.0 calculate_frechet_distance's value; Tr sqrtm(S1 S2) from symmetric "
            "eigendecompositions (agrees within 1e-7 relative, tested)",
        },
        "sfid": {
            "features": "TF mixed_6/conv channels [:7] = Mixed_6d output channels [:7] (its branch1x1 after "
            "ReLU), 7x17x17, flattened (H, W, C) as ADM: 2023-d",
            "statistics": "as fid",
            "distance": "as fid",
        },
        "is": {
            "splits": is_splits,
            "split_order": "consecutive, no shuffle (original code, ADM; torch-fidelity shuffles by default)",
            "logits": "pool_3 @ fc.weight (no bias), 1008 classes, softmax in float64",
        },
        "precision": {
            "k": pr_k,
            "features": "pool_3, kept as float32",
            "distance": "Euclidean, torch.cdist in float32",
            "definition": "fraction of the test set inside the reference set's k-NN balls (Kynkaanniemi 2019)",
        },
        "recall": {
            "k": pr_k,
            "features": "pool_3, kept as float32",
            "distance": "Euclidean, torch.cdist in float32",
            "definition": "fraction of the reference set inside the test set's k-NN balls (Kynkaanniemi 2019)",
        },
        "kid": {
            "kernel": "polynomial (x.y / 2048 + 1)^3",
            "estimator": "unbiased MMD^2, mean and std over subsets",
            "subsets": kid_subsets,
            "subset_size": kid_subset_size,
            "subset_size_rule": "clamped to the smaller set when a set has fewer images",
            "subset_draw": "np.random.RandomState(seed).choice(n, m, replace=False), test set first "
            "(torch-fidelity's order)",
            "kernel_dtype": "float64",
        },
    }
    return {m: settings[m] for m in metrics}
