"""Image-quality metrics: FID and Inception Score with pytorch-fid 0.3.0's network and numerics.

- `inception`: `FIDInceptionV3` (the TF-ported network, state-dict compatible with
  `pt_inception-2015-12-05-6726825d.pth`), `load_inception(weights=None, device=...)`,
  `resolve_inception_weights` (path -> cache -> download -> clear error).
- `fid`: `extract_features`, `FidStats.from_features`, `frechet_distance`, `inception_score`,
  `save_npz` / `load_npz`.
- `eval_fid`: `EvalFidConfig` and `evaluate_fid(cfg)`, the library side of `vimtool eval-fid`.
"""

from vimtool.metrics.fid import (
    Features,
    FidStats,
    extract_features,
    frechet_distance,
    inception_score,
    load_npz,
    save_npz,
)
from vimtool.metrics.inception import WEIGHTS_FILE, FIDInceptionV3, load_inception, resolve_inception_weights

__all__ = [
    "Features",
    "FidStats",
    "FIDInceptionV3",
    "WEIGHTS_FILE",
    "extract_features",
    "frechet_distance",
    "inception_score",
    "load_inception",
    "load_npz",
    "resolve_inception_weights",
    "save_npz",
]
