"""A cache of image sets' Inception outputs keyed by content, so that a reference set is run through once.

`--feature-cache DIR` turns it on. An entry is `DIR/<key>.npz` holding everything the suite can use: the
pool_3 and spatial statistics (float64), the pool_3 vectors and the logits (float32), the count and the image
sizes. The key is a sha256 over:
- the set's identity: for files (folder, list, stdin, glob) each chosen file's absolute path, size and mtime
  in nanoseconds (one `stat` per file, no reading: editing or replacing a file changes its size or mtime);
  for an `.npz` image batch the sha256 of its bytes (computed for the protocol card anyway) and the chosen
  indices; data specs and tokenizer reconstructions are never cached (a stream of unknown content);
- the Inception weights' sha256, the resize mode, the BatchNorm fold flag and this format's version.
Writes go through vimtool/atomic.py, so a crash never leaves a half entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from vimtool.atomic import atomic_path
from vimtool.metrics.fid import FidStats
from vimtool.metrics.suite import SetFeatures

log = logging.getLogger(__name__)

FORMAT = "vimtool-eval-features-v1"


def files_identity(paths: list[Path]) -> str:
    """sha256 of (absolute path, size, mtime_ns) of each file, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "files:" + h.hexdigest()


def npz_identity(file_sha256: str, indices: list[int] | None) -> str:
    h = hashlib.sha256(file_sha256.encode())
    h.update(json.dumps(indices).encode())
    return "npz:" + h.hexdigest()


def cache_key(identity: str, weights_sha256: str, resize: str, fused: bool) -> str:
    text = json.dumps([FORMAT, identity, weights_sha256, resize, fused])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(folder: str | Path, key: str) -> SetFeatures | None:
    """The cached features under `key`, or None (absent or unreadable: then recomputed and overwritten)."""
    path = Path(folder) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            count = int(f["count"])
            return SetFeatures(
                count=count,
                stats=FidStats(f["mu"], f["sigma"], count),
                spatial=FidStats(f["mu_s"], f["sigma_s"], count),
                pool=f["pool"],
                logits=f["logits"],
                sizes=json.loads(str(f["sizes"])),
            )
    except Exception as e:  # a truncated or foreign file: recompute rather than fail
        log.warning("ignoring unreadable feature cache entry %s: %s", path, e)
        return None


def save(folder: str | Path, key: str, feats: SetFeatures) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            count=np.asarray(feats.count, dtype=np.int64),
            mu=feats.stats.mu,
            sigma=feats.stats.sigma,
            mu_s=feats.spatial.mu,
            sigma_s=feats.spatial.sigma,
            pool=feats.pool,
            logits=feats.logits,
            sizes=np.asarray(json.dumps(feats.sizes)),
        )
    return path
