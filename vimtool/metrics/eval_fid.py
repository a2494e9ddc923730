"""`vimtool eval-fid`: FID / IS of two image sets (or rFID of a tokenizer) with a protocol card.

Each side (`A`, `B`) is one of, in this order of recognition:
- `-`: image paths on stdin, one per line (`vimtool sample ... | vimtool eval-fid - REF`);
- `*.npz`: statistics (`mu`/`sigma`: pytorch-fid's `--save-stats`, ours, ADM reference batches) or an image
  batch (`arr_0`, ADM's sample format); see `vimtool.metrics.fid.load_npz`;
- `data:SPEC`: a `--data` spec forced (any spec `vimtool.data.sources.open_source` reads);
- an existing folder: its image files, recursively, sorted (pytorch-fid reads only the top level);
- an existing `.txt` / `.lst` file: image paths, one per line (relative to the working directory, else to the
  list file's folder); an existing image file or a glob: those images;
- anything else: a `--data` spec (`mnist5k`, `shapes`, `user/name:split`, ...), read with `--split`.
`--n N` caps every side at N images: the first N of a data spec; a seeded random N (`--seed`) of a longer file
list or `arr_0` batch. `--tokenizer CKPT` gives rFID: A's images are center-cropped/resized to the tokenizer's
size and reconstructed (then quantized to 8 bits, as a saved PNG would be); the reconstructions are compared
with B, or, without B, with the same cropped real images.

Writes `<out>/scores.json` and `<out>/protocol.json` (inputs, counts, image sizes, weights and stats hashes,
preprocessing, seed, `sampling.json` settings found beside generated images), `--save-stats` A's statistics;
prints a table on stderr. The library function returns the written paths; the CLI prints them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vimtool import __version__
from vimtool.atomic import write_json
from vimtool.checkpoint import load_model
from vimtool.data.sources import open_source
from vimtool.data.transforms import resize_center_crop
from vimtool.devices import resolve_device
from vimtool.errors import VimtoolError
from vimtool.metrics.fid import (
    IMAGE_SUFFIXES,
    Features,
    FidStats,
    extract_features,
    extract_features_multi,
    frechet_distance,
    inception_score,
    load_npz,
    save_npz,
)
from vimtool.metrics.inception import INPUT_SIZE, WEIGHTS_FILE, load_inception, sha256_file
from vimtool.pipes import expand_paths

log = logging.getLogger(__name__)


@dataclass
class EvalFidConfig:
    """Settings of `vimtool eval-fid` (recipe keys = these names)."""

    inputs: list[str] = field(default_factory=list)  # A [B]
    n: int | None = None  # at most N images per side
    batch_size: int = 50  # pytorch-fid's default
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps
    inception_weights: str | None = None  # path to pt_inception-2015-12-05-6726825d.pth
    save_stats: str | None = None  # write A's statistics to this .npz
    tokenizer: str | None = None  # checkpoint folder or Hub id: rFID of its reconstructions
    out: str = "outputs/eval-fid"
    split: str = "train"  # split of `--data` specs
    seed: int = 0  # random subset when --n is below a file list's length; tokenizer sampling
    is_splits: int = 10  # Inception Score splits
    workers: int = 2  # image decoding threads
    prefer_npz_images: bool = False  # ADM batches with both: recompute stats from arr_0 instead of mu/sigma
    fuse: bool = True  # fold BatchNorm into convs + channels-last (same numbers to float rounding; faster)


@dataclass
class ImageSet:
    """One side of the comparison, resolved: either images to run through the Inception, or stats."""

    role: str
    spec: str
    kind: str  # stdin | list | folder | files | data | npz | npz-images
    images: Iterable | None = None  # paths, PIL images or uint8 arrays
    count: int | None = None  # known before reading (None: streaming data set)
    stats: FidStats | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --- resolving the inputs ---------------------------------------------------------------------------------------


def resolve_input(spec: str, role: str, cfg: EvalFidConfig) -> ImageSet:
    """Turn one `A`/`B` argument into an `ImageSet` (see the module docstring for the order of the rules)."""
    p = Path(spec).expanduser()
    if spec == "-":
        return _from_paths(expand_paths(["-"], IMAGE_SUFFIXES, what="image"), spec, role, "stdin", cfg)
    if spec.lower().endswith(".npz"):
        if not p.is_file():
            raise VimtoolError(f"{role}: statistics file {p} does not exist; write it with --save-stats first")
        loaded = load_npz(p, prefer_images=cfg.prefer_npz_images)
        info = {"sha256": sha256_file(p)}
        if isinstance(loaded, FidStats):
            return ImageSet(role, spec, "npz", stats=loaded, count=loaded.count, info=info)
        arr = _subset(loaded, cfg)
        info["selection"] = _selection_note(len(loaded), len(arr), cfg)
        return ImageSet(role, spec, "npz-images", images=list(arr), count=len(arr), info=info)
    if spec.startswith("data:"):
        return _from_data(spec[len("data:") :], role, cfg)
    if p.is_dir():
        return _from_paths(expand_paths([spec], IMAGE_SUFFIXES, what="image"), spec, role, "folder", cfg, p)
    if p.is_file() and p.suffix.lower() in (".txt", ".lst"):
        return _from_paths(_read_list(p), spec, role, "list", cfg)
    if p.is_file() or any(ch in spec for ch in "*?["):
        return _from_paths(expand_paths([spec], IMAGE_SUFFIXES, what="image"), spec, role, "files", cfg)
    return _from_data(spec, role, cfg)


def _read_list(list_file: Path) -> list[Path]:
    out = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        q = Path(line).expanduser()
        if not q.is_file() and not q.is_absolute() and (list_file.parent / q).is_file():
            q = list_file.parent / q
        if not q.is_file():
            raise VimtoolError(f"{list_file}: listed image {line} does not exist; fix the list")
        out.append(q)
    if not out:
        raise VimtoolError(f"{list_file} lists no image paths; give one path per line")
    return out


def _subset(items, cfg: EvalFidConfig):
    if cfg.n is None or cfg.n >= len(items):
        return items
    idx = sorted(random.Random(cfg.seed).sample(range(len(items)), cfg.n))
    return items[idx] if isinstance(items, np.ndarray) else [items[i] for i in idx]


def _selection_note(available: int, taken: int, cfg: EvalFidConfig) -> str:
    return "all" if taken == available else f"random {taken} of {available} (seed {cfg.seed})"


def _from_paths(
    paths: list[Path], spec: str, role: str, kind: str, cfg: EvalFidConfig, folder: Path | None = None
) -> ImageSet:
    files = [f for f in paths if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise VimtoolError(f"{role}: {spec} gives no image files ({', '.join(IMAGE_SUFFIXES)})")
    chosen = _subset(files, cfg)
    info: dict[str, Any] = {"selection": _selection_note(len(files), len(chosen), cfg)}
    sampling = _find_sampling_json(files, folder)
    if sampling is not None:
        info["sampling"] = sampling
    return ImageSet(role, spec, kind, images=chosen, count=len(chosen), info=info)


def _find_sampling_json(files: list[Path], folder: Path | None) -> dict | None:
    """`sample` records its settings in `sampling.json` beside its images: look there and one level up."""
    candidates = [folder] if folder is not None else []
    first = files[0].parent
    candidates += [first, first.parent]
    for d in candidates:
        f = d / "sampling.json"
        if f.is_file():
            try:
                return {"file": str(f), **json.loads(f.read_text(encoding="utf-8"))}
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable %s: %s", f, e)
    return None


def _from_data(spec: str, role: str, cfg: EvalFidConfig) -> ImageSet:
    source = open_source(spec, split=cfg.split, seed=cfg.seed, limit=cfg.n)
    count = len(source) if hasattr(source, "__len__") else cfg.n
    if cfg.n is not None and count is not None:
        count = min(count, cfg.n)

    def images():
        for i, ex in enumerate(source):
            if cfg.n is not None and i >= cfg.n:
                break
            yield ex.image

    info = {"split": cfg.split, "selection": "first" if cfg.n is None else f"first {cfg.n}"}
    return ImageSet(role, spec, "data", images=images(), count=count, info=info)


# --- the run ------------------------------------------------------------------------------------------------------


def _tokenizer_transform(cfg: EvalFidConfig, device: torch.device):
    """(tokenizer, its image size, batch transform [0,1] -> reconstruction quantized to 8 bits, [0,1])."""
    model = load_model(cfg.tokenizer).to(device).eval()
    if not hasattr(model, "reconstruct"):
        raise VimtoolError(f"--tokenizer {cfg.tokenizer} is a {type(model).__name__}, not an image tokenizer")
    size = int(model.config.image_size)

    def transform(x: torch.Tensor) -> torch.Tensor:
        rec = model.reconstruct(x * 2 - 1)  # model side is [-1, 1] (ARCHITECTURE.md, Images)
        rec = ((rec.float().clamp(-1, 1) + 1) / 2 * 255).round() / 255  # what a saved 8-bit PNG would hold
        return rec

    return model, size, transform


def _crop_images(images: Iterable, size: int) -> Iterable:
    for img in images:
        if isinstance(img, (str, Path)):
            with Image.open(img) as im:
                img = im.convert("RGB")
        elif isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        yield resize_center_crop(img.convert("RGB"), size)


def evaluate_fid(cfg: EvalFidConfig) -> list[Path]:
    """Run `eval-fid`; returns the written paths (scores, protocol card, saved stats)."""
    if not 1 <= len(cfg.inputs) <= 2:
        raise VimtoolError(f"eval-fid takes one or two image sets (A [B]), got {len(cfg.inputs)}")
    if cfg.n is not None and cfg.n < 2:
        raise VimtoolError(f"--n must be at least 2 (a covariance needs 2 images), got {cfg.n}")
    if len(cfg.inputs) == 1 and cfg.tokenizer is None and cfg.save_stats is None:
        raise VimtoolError("give two image sets (A B), or one with --tokenizer (rFID) or --save-stats")
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    sets = [resolve_input(s, role, cfg) for s, role in zip(cfg.inputs, ("A", "B"))]
    if cfg.save_stats and sets[0].stats is not None:
        raise VimtoolError(f"--save-stats: A ({cfg.inputs[0]}) is already statistics; give images for A")
    if cfg.save_stats and cfg.tokenizer and len(sets) == 2:
        raise VimtoolError("--save-stats with --tokenizer saves the cropped real set's stats: give A alone")
    if cfg.tokenizer and sets[0].images is None:
        raise VimtoolError(f"--tokenizer needs real images as A, not statistics ({cfg.inputs[0]})")

    needs_model = any(s.images is not None for s in sets)
    model = weights = None
    if needs_model:
        model, weights = load_inception(cfg.inception_weights, device=device, fuse=cfg.fuse)

    feats: dict[str, Features] = {}
    stats: dict[str, FidStats] = {}
    tok_info = None
    if cfg.tokenizer:
        tok, size, transform = _tokenizer_transform(cfg, device)
        tok_info = {"checkpoint": cfg.tokenizer, "image_size": size, "model_type": getattr(tok, "model_type", None)}
        a = sets[0]
        a.info["crop"] = f"resize + center crop to {size}x{size} (the tokenizer's input)"
        # One pass over A: its reconstructions, and (without B) the same cropped real images to compare with.
        wanted = {"A-recon": transform} if len(sets) == 2 else {"A-recon": transform, "A": None}
        feats.update(
            extract_features_multi(
                _crop_images(a.images, size), model, wanted, cfg.batch_size, a.count, cfg.workers, desc="A + recon"
            )
        )
        if len(sets) == 2:
            a.info["used_as"] = "source of the reconstructions only"
        sets.append(ImageSet("A-recon", f"{a.spec} -> {cfg.tokenizer}", "reconstruction"))
    for s in sets:
        if s.stats is not None:
            stats[s.role] = s.stats
            continue
        if s.info.get("used_as"):
            s.count = len(feats["A-recon"])
            continue
        if s.role not in feats:
            feats[s.role] = extract_features(s.images, model, cfg.batch_size, s.count, cfg.workers, desc=s.role)
        stats[s.role] = FidStats.from_features(feats[s.role].pool)
        s.count = len(feats[s.role])
        s.info["image_sizes"] = feats[s.role].sizes
        if s.count < 2048:
            log.warning(
                "%s has %d images: fewer than 2048 gives a rank-deficient covariance and a biased FID "
                "(papers use 50k / 30k)",
                s.role,
                s.count,
            )

    pairs = []
    if tok_info is not None:
        pairs.append(("A-recon", "B" if len(cfg.inputs) == 2 else "A", "rFID"))
    elif len(sets) == 2:
        pairs.append(("A", "B", "FID"))
    scores: dict[str, Any] = {"fid": {}, "inception_score": {}}
    for x, y, name in pairs:
        scores["fid"][f"{x} vs {y}"] = frechet_distance(stats[x], stats[y])
        scores["metric"] = name
    for role, f in feats.items():
        if len(f) >= cfg.is_splits:
            mean, std = inception_score(f.logits, cfg.is_splits)
            scores["inception_score"][role] = {"mean": mean, "std": std, "splits": cfg.is_splits}

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if cfg.save_stats:
        written.append(save_npz(stats["A"], cfg.save_stats))
    card = _protocol_card(cfg, sets, weights, device, tok_info, scores, stats)
    written.append(write_json(out / "scores.json", {"scores": scores, "counts": {s.role: s.count for s in sets}}))
    written.append(write_json(out / "protocol.json", card))
    _print_table(sets, scores, feats)
    return written


def _protocol_card(cfg, sets, weights, device, tok_info, scores, stats) -> dict[str, Any]:
    return {
        "tool": f"vimtool {__version__} eval-fid",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "protocol": "pytorch-fid 0.3.0 (FID Inception v3, pool3 2048-d, float64 stats, scipy sqrtm)",
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
            "decode": "PIL convert('RGB') -> uint8 / 255",
            "resize": f"bilinear {INPUT_SIZE}x{INPUT_SIZE}, align_corners=False, no antialias",
            "range": "2x - 1 -> [-1, 1]",
        },
        "inputs": [
            {
                "role": s.role,
                "spec": s.spec,
                "kind": s.kind,
                "count": s.count,
                "stats_sha256": s.info.get("sha256"),
                **{k: v for k, v in s.info.items() if k != "sha256"},
            }
            for s in sets
        ],
        "tokenizer": tok_info,
        "n": cfg.n,
        "seed": cfg.seed,
        "split": cfg.split,
        "batch_size": cfg.batch_size,
        "device": str(device),
        "inception_score": {"splits": cfg.is_splits, "logits": "pool3 @ fc.weight (no bias), 1008 classes"},
        "scores": scores,
    }


def _print_table(sets: list[ImageSet], scores: dict, feats: dict[str, Features]) -> None:
    rows = [("set", "kind", "images", "size", "IS")]
    for s in sets:
        sizes = s.info.get("image_sizes") or {}
        size = next(iter(sizes)) if len(sizes) == 1 else ("mixed" if sizes else "-")
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
    for pair, value in scores["fid"].items():
        lines.append(f"{scores.get('metric', 'FID')} ({pair}): {value:.4f}")
    print("\n".join(lines), file=sys.stderr)
