"""What `eval-fid` writes besides the numbers: the protocol card (protocol.json) and the stderr table.

The card says exactly how each number was made, so that two numbers can be compared or not: the Inception
weights' sha256, every metric with its settings, each set's kind, count, image sizes and the sha256 of a
statistics / reference file (or the content key of a cached image set), the resize to 299x299, which set
each pair was measured against, and what was kept in memory.
"""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any

import torch

from vimtool.metrics.inception import WEIGHTS_FILE, sha256_file
from vimtool.metrics.resize import DESCRIPTIONS
from vimtool.metrics.suite import FEATURE_METRICS, metric_settings


def _input_entry(s) -> dict[str, Any]:
    entry = {
        "role": s.role,
        "spec": s.spec,
        "kind": s.kind,
        "count": s.count,
        "image_size": s.image_size,
        "stats_sha256": s.info.get("sha256"),
        **{k: v for k, v in s.info.items() if k != "sha256"},
    }
    if s.feats is not None:
        entry["kept"] = {
            "fid_statistics": s.feats.stats is not None,
            "sfid_statistics": s.feats.spatial is not None,
            "pool_3_features": None if s.feats.pool is None else f"{s.feats.pool.shape} {s.feats.pool.dtype}",
            "logits": None if s.feats.logits is None else f"{s.feats.logits.shape} {s.feats.logits.dtype}",
        }
    return entry


def _reference_entry(s) -> dict[str, Any]:
    return {
        "role": s.role,
        "spec": s.spec,
        "kind": s.kind,
        "count": s.count,
        "image_size": s.image_size,
        "sha256": s.info.get("sha256"),  # of the .npz statistics / reference batch
        "feature_cache_key": s.info.get("feature_cache_key"),
        "statistics": s.info.get("statistics"),
    }


def _memory_note(metrics, cached: str | None) -> str:
    kept = [m for m in FEATURE_METRICS if m in metrics]
    note = "images streamed in batches; FID/sFID statistics as float64 running sums of x and x x^T; "
    note += f"pool_3 features kept as float32 for {', '.join(kept)}" if kept else "no pool_3 features kept"
    if "is" in metrics:
        note += "; logits kept as float32 for IS"
    if cached:
        note += "; cached sets keep all of these (the cache entry serves any metric)"
    return note


def protocol_card(cfg, sets, weights, device, tok_info, scores, metrics, skipped, resize) -> dict[str, Any]:
    from vimtool import __version__

    by_role = {s.role: s for s in sets}
    return {
        "tool": f"vimtool {__version__} eval-fid",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "protocol": "pytorch-fid 0.3.0 Inception (pool_3 2048-d, mixed_6/conv[:7] 2023-d, 1008 logits) with ADM's "
        "metric suite (FID, sFID, IS, precision/recall) and KID",
        "metrics": metric_settings(metrics, cfg.is_splits, cfg.pr_k, cfg.kid_subsets, cfg.kid_subset_size),
        "metrics_skipped": skipped,
        "inception": None
        if weights is None
        else {
            "file": WEIGHTS_FILE,
            "path": str(weights),
            "sha256": sha256_file(weights),
            "bn_folded_channels_last": cfg.fuse,
            "dtype": "float32",
            # PyTorch's default lets cuDNN convolutions use TF32 on Ampere+ GPUs (pytorch-fid runs the same way).
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
        },
        "preprocess": {
            "decode": "PIL convert('RGB') -> uint8",
            "resize": DESCRIPTIONS[resize],
            "resize_mode": resize,
            "resize_chosen": "explicitly (--resize)" if cfg.resize else "default (sets share a resolution)",
            "range": "[0, 1] -> 2x - 1 -> [-1, 1]",
        },
        "inputs": [_input_entry(s) for s in sets],
        "references": {key: _reference_entry(by_role[role]) for key, role in scores["reference"].items()},
        "memory": _memory_note(metrics, cfg.feature_cache),
        "tokenizer": tok_info,
        "n": cfg.n,
        "seed": cfg.seed,
        "split": cfg.split,
        "batch_size": cfg.batch_size,
        "device": str(device),
        "feature_cache": cfg.feature_cache,
        "scores": scores,
    }


def print_table(sets, scores: dict) -> None:
    rows = [("set", "kind", "images", "size", "IS")]
    for s in sets:
        sizes = s.info.get("image_sizes") or {}
        size = next(iter(sizes)) if len(sizes) == 1 else ("mixed" if sizes else (s.image_size or "-"))
        isc = scores["inception_score"].get(s.role)
        rows.append(
            (
                s.role,
                s.kind,
                str(s.count if s.count is not None else "?"),
                size,
                f"{isc['mean']:.3f} +- {isc['std']:.3f}" if isc else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    label = scores.get("metric", "FID")
    for key, ref in scores["reference"].items():
        parts = []
        for name, title in (("fid", label), ("sfid", "sFID"), ("precision", "precision"), ("recall", "recall")):
            if key in scores.get(name, {}):
                parts.append(f"{title} {scores[name][key]:.4f}")
        if key in scores.get("kid", {}):
            kid = scores["kid"][key]
            parts.append(f"KID {kid['mean']:.5f} +- {kid['std']:.5f} (subsets of {kid['subset_size']})")
        lines.append(f"{key} (reference {ref}): " + ", ".join(parts))
    print("\n".join(lines), file=sys.stderr)
