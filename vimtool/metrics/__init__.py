"""Image-quality metrics: FID, sFID, IS, precision/recall and KID on pytorch-fid 0.3.0's network and numerics.

- `inception`: `FIDInceptionV3` (the TF-ported network, state-dict compatible with
  `pt_inception-2015-12-05-6726825d.pth`), `load_inception(weights=None, device=...)`,
  `resolve_inception_weights` (path -> cache -> download -> clear error).
- `fid`: `extract_features`, `FidStats.from_features`, `frechet_distance`, `inception_score`,
  `save_npz` (read back with `batches.load_npz`).
- `suite`: the one-pass metric suite (`SetAccumulator`, `RunningGaussian`, `parse_metrics`); `prdc`:
  `precision_recall` (Kynkaanniemi et al. 2019); `kid`: `kernel_inception_distance` (Binkowski et al. 2018);
  `resize`: the 299x299 resize protocols; `batches`: ADM `.npz` batches (`open_npz`, `write_image_batch`);
  `feature_cache`: features keyed by content.
- `eval_fid`: `EvalFidConfig` and `evaluate_fid(cfg)`, the library side of `vimtool eval-fid`; `eval_report`:
  its protocol card and table.
"""

from vimtool.metrics.batches import load_npz
from vimtool.metrics.fid import (
    Features,
    FidStats,
    extract_features,
    frechet_distance,
    inception_score,
    save_npz,
)
from vimtool.metrics.inception import WEIGHTS_FILE, FIDInceptionV3, load_inception, resolve_inception_weights
from vimtool.metrics.kid import kernel_inception_distance
from vimtool.metrics.prdc import precision_recall

__all__ = [
    "Features",
    "FidStats",
    "FIDInceptionV3",
    "WEIGHTS_FILE",
    "extract_features",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_inception",
    "load_npz",
    "precision_recall",
    "resolve_inception_weights",
    "save_npz",
]
