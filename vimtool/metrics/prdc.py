"""Improved precision and recall of generative models (Kynkaanniemi et al. 2019, NeurIPS, Sec. 2 / eq. 1-2).

Each set's manifold is the union of balls around its feature vectors, a ball's radius being the distance to the
vector's k-th nearest neighbour in its own set (k = 3, the paper's and ADM's default; the vector itself is not
counted: the (k+1)-th smallest distance, itself at 0, as torch-fidelity's `kthvalue(k + 1)` and ADM's
`ManifoldEstimator`). Precision = fraction of generated vectors inside the real manifold; recall = fraction of
real vectors inside the generated manifold. A point on a ball's boundary is inside (`<=`, as both references).

Features are pool_3 (2048-d) vectors. Distances are Euclidean, computed with `torch.cdist` in the features'
dtype (float32, as torch-fidelity and ADM's TF code compute them), in blocks of rows so that memory is
`block x N`, not `N x N`, with the block shrunk as N grows so that one block's distances stay within
`BLOCK_BYTES` (64 MB: 1,024 rows up to N = 16,384, 335 rows at N = 50,000).
"""

from __future__ import annotations

import numpy as np
import torch

from vimtool.errors import VimtoolError

DEFAULT_K = 3
DEFAULT_BLOCK = 1024  # rows per distance block at most
BLOCK_BYTES = 64 * 2**20  # at most this many bytes of distances per block (a few such temporaries live at once)


def block_rows(n_columns: int, block: int = DEFAULT_BLOCK, element_bytes: int = 4) -> int:
    """Rows per block of a (rows, n_columns) distance matrix: `block`, fewer when that would exceed BLOCK_BYTES."""
    return max(1, min(block, BLOCK_BYTES // max(1, n_columns * element_bytes)))


def knn_radii(features: torch.Tensor, k: int = DEFAULT_K, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """(N, D) -> (N,) distance of each vector to its k-th nearest neighbour among the others."""
    if len(features) <= k:
        raise VimtoolError(f"precision/recall with k={k} needs more than {k} images per set, got {len(features)}")
    rows = block_rows(len(features), block, features.element_size())
    radii = [torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(rows)]
    return torch.cat(radii)  # (N,)


def coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int = DEFAULT_BLOCK) -> float:
    """Fraction of `points` within `radii[j]` of some `centres[j]`."""
    inside = 0
    for part in points.split(block_rows(len(centres), block, centres.element_size())):
        inside += int((torch.cdist(part, centres) <= radii[None, :]).any(dim=1).sum())  # (block, M) -> (block,)
    return inside / len(points)


def precision_recall(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = DEFAULT_K,
    device: str | torch.device = "cpu",
    block: int = DEFAULT_BLOCK,
) -> tuple[float, float]:
    """(precision, recall) of `fake` against `real`, both (N, D) feature arrays (see the module docstring)."""
    real_t, fake_t = (torch.as_tensor(np.asarray(f)).to(device) for f in (real, fake))
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise VimtoolError(f"precision/recall needs (N, D) features of one D, got {real_t.shape} and {fake_t.shape}")
    with torch.inference_mode():
        precision = coverage(fake_t, real_t, knn_radii(real_t, k, block), block)
        recall = coverage(real_t, fake_t, knn_radii(fake_t, k, block), block)
    return precision, recall
