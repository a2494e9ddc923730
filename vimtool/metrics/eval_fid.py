"""`vimtool eval-fid`: the ImageNet metric suite (FID, sFID, IS, precision, recall, KID) of two image sets, or of a
tokenizer's reconstructions (rFID), from ONE Inception pass per set, with a protocol card.

A is the reference (real images, an ADM reference batch, statistics), B the set under test (generated).
Each side is one of, in this order of recognition:
- `-`: image paths on stdin, one per line (`vimtool sample ... | vimtool eval-fid REF -`);
- `*.npz`: statistics (`mu`/`sigma`, and `mu_s`/`sigma_s` for sFID: pytorch-fid's `--save-stats`, ours, ADM
  reference batches) and/or an image batch (`arr_0` uint8 NxHxWx3, ADM's sample format), streamed from the file
  (`batches.open_npz`); a reference batch's statistics are used for FID/sFID (as ADM's evaluator does) and its
  images only for the metrics that need features, unless `prefer_npz_images`;
- `data:SPEC`: a `--data` spec forced (any spec `vimtool.data.sources.open_source` reads);
- an existing folder: its image files, recursively, sorted (pytorch-fid reads only the top level);
- an existing `.txt` / `.lst` file: image paths, one per line (relative to the working directory, else to the
  list file's folder); an existing image file or a glob: those images;
- anything else: a `--data` spec (`mnist5k`, `shapes`, `user/name:split`, ...), read with `--split`.
`--n N` caps every side at N images: the first N of a data spec; a seeded random N (`--seed`) of a longer file
list or `arr_0` batch. `--tokenizer CKPT` gives rFID: A's images are center-cropped/resized to the tokenizer's
size and reconstructed (then quantized to 8 bits, as a saved PNG would be); the reconstructions are compared
with B, or, without B, with the same cropped real images.

`--metrics` picks a subset of fid,sfid,is,precision,recall,kid (default: all that the inputs allow; asking for
one they cannot give is an error). Sets of different resolutions are compared only with an explicit `--resize`
(torch-bilinear: pytorch-fid; pil-bicubic: clean-fid). `--feature-cache DIR` keeps each image set's Inception
outputs keyed by content (`feature_cache.py`), so a reference is run through once.

Writes `<out>/scores.json` and `<out>/protocol.json` (`eval_report.py`: metrics and their settings, inputs,
counts, image sizes, the reference of each pair with its sha256, weights hash, resize, memory kept, seed,
`sampling.json` settings found beside generated images), `--save-stats` A's statistics, `--save-batch` A's
images as an ADM batch; prints a table on stderr. The library function returns the written paths.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vimtool.atomic import write_json
from vimtool.checkpoint import load_model
from vimtool.data.sources import open_source
from vimtool.data.transforms import resize_center_crop
from vimtool.devices import resolve_device
from vimtool.errors import VimtoolError
from vimtool.metrics import feature_cache
from vimtool.metrics.batches import open_npz, write_image_batch
from vimtool.metrics.eval_report import print_table, protocol_card
from vimtool.metrics.feature_cache import files_identity, npz_identity
from vimtool.metrics.fid import (
    IMAGE_SUFFIXES,
    FidStats,
    frechet_distance,
    image_to_uint8,
    inception_pass,
    inception_score,
    open_image,
    save_npz,
)
from vimtool.metrics.inception import load_inception, sha256_file
from vimtool.metrics.kid import kernel_inception_distance
from vimtool.metrics.prdc import precision_recall
from vimtool.metrics.resize import DEFAULT_RESIZE, check_resize_mode
from vimtool.metrics.suite import ALL_METRICS, Needs, SetAccumulator, SetFeatures, parse_metrics
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
    metrics: str | None = None  # comma list of fid,sfid,is,precision,recall,kid; None: all the inputs allow
    resize: str | None = None  # torch-bilinear | pil-bicubic; None: torch-bilinear, sets of one resolution only
    pr_k: int = 3  # precision/recall: k-th nearest neighbour radius (Kynkaanniemi et al. 2019)
    kid_subsets: int = 100  # KID: number of random subsets
    kid_subset_size: int = 1000  # KID: images per subset (clamped to the smaller set)
    feature_cache: str | None = None  # folder caching each image set's Inception outputs, keyed by content
    save_batch: str | None = None  # write A's images as an ADM sample batch (.npz, arr_0 uint8 NxHxWx3)


@dataclass
class ImageSet:
    """One side of the comparison, resolved: either images to run through the Inception, or stats."""

    role: str
    spec: str
    kind: str  # stdin | list | folder | files | data | npz | npz-images
    images: Iterable | None = None  # paths, PIL images or uint8 arrays
    count: int | None = None  # known before reading (None: streaming data set)
    stats: FidStats | None = None  # pool_3 statistics read from a file
    spatial: FidStats | None = None  # spatial (sFID) statistics read from a file
    info: dict[str, Any] = field(default_factory=dict)
    identity: str | None = None  # content identity of an npz batch for the feature cache
    files: list[Path] | None = None  # the chosen image files (their identity is computed only when caching)
    image_size: str | None = None  # "HxW" of the first image, when known before the pass
    feats: SetFeatures | None = None  # what the Inception pass (or the cache) gave

    def provides(self, part: str) -> bool:
        """Whether this set can give `part` (stats / spatial / pool / logits) from a file or by a pass."""
        if self.images is not None or self.kind == "reconstruction":
            return True
        return (part == "stats" and self.stats is not None) or (part == "spatial" and self.spatial is not None)

    def from_file(self, part: str) -> bool:
        return (part == "stats" and self.stats is not None) or (part == "spatial" and self.spatial is not None)


class _Reiterable:
    """An iterable that restarts a generator function on each `iter()` (an npz batch streamed more than once)."""

    def __init__(self, make) -> None:
        self.make = make

    def __iter__(self):
        return iter(self.make())


# --- resolving the inputs ---------------------------------------------------------------------------------------


def resolve_input(spec: str, role: str, cfg: EvalFidConfig) -> ImageSet:
    """Turn one `A`/`B` argument into an `ImageSet` (see the module docstring for the order of the rules)."""
    p = Path(spec).expanduser()
    if spec == "-":
        return _from_paths(expand_paths(["-"], IMAGE_SUFFIXES, what="image"), spec, role, "stdin", cfg)
    if spec.lower().endswith(".npz"):
        if not p.is_file():
            raise VimtoolError(f"{role}: statistics file {p} does not exist; write it with --save-stats first")
        return _from_npz(p, spec, role, cfg)
    if spec.startswith("data:"):
        return _from_data(spec[len("data:") :], role, cfg)
    if p.is_dir():
        return _from_paths(expand_paths([spec], IMAGE_SUFFIXES, what="image"), spec, role, "folder", cfg, p)
    if p.is_file() and p.suffix.lower() in (".txt", ".lst"):
        return _from_paths(_read_list(p), spec, role, "list", cfg)
    if p.is_file() or any(ch in spec for ch in "*?["):
        return _from_paths(expand_paths([spec], IMAGE_SUFFIXES, what="image"), spec, role, "files", cfg)
    return _from_data(spec, role, cfg)


def _from_npz(p: Path, spec: str, role: str, cfg: EvalFidConfig) -> ImageSet:
    """Statistics (mu/sigma, mu_s/sigma_s) and/or an ADM image batch (arr_0, streamed, never loaded whole)."""
    batch = open_npz(p)
    sha = sha256_file(p)
    use_stats = not (cfg.prefer_npz_images and batch.has_images)
    stats, spatial = (batch.stats, batch.spatial) if use_stats else (None, None)
    info: dict[str, Any] = {"sha256": sha}
    if not batch.has_images:
        count = stats.count if stats is not None else (spatial.count if spatial is not None else None)
        return ImageSet(role, spec, "npz", stats=stats, spatial=spatial, count=count, info=info)
    chosen = _subset(list(range(batch.image_count)), cfg)
    indices = None if len(chosen) == batch.image_count else chosen
    info["selection"] = _selection_note(batch.image_count, len(chosen), cfg)
    kind = "npz-images" if stats is None and spatial is None else "npz-reference"
    if kind == "npz-reference":
        info["statistics"] = "FID/sFID from the file's " + ", ".join(
            k for k, v in (("mu/sigma", stats), ("mu_s/sigma_s", spatial)) if v is not None
        )
    return ImageSet(
        role,
        spec,
        kind,
        images=_Reiterable(lambda: batch.iter_images(indices)),
        count=len(chosen),
        stats=stats,
        spatial=spatial,
        info=info,
        identity=npz_identity(sha, indices),
        image_size=batch.image_size,
    )


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
    return ImageSet(role, spec, kind, images=chosen, count=len(chosen), info=info, files=chosen)


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

PART_OF = {"fid": "stats", "sfid": "spatial", "precision": "pool", "recall": "pool", "kid": "pool"}


@dataclass
class Pair:
    """One comparison: `test` (generated / reconstructed) against `ref` (the reference), scores under `key`."""

    test: str
    ref: str
    key: str
    label: str  # FID | rFID


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
        img = open_image(img)
        if isinstance(img, np.ndarray):
            img = Image.fromarray(image_to_uint8(img))
        yield resize_center_crop(img.convert("RGB"), size)


def _pairs(cfg: EvalFidConfig, n_inputs: int) -> list[Pair]:
    if cfg.tokenizer:
        ref = "B" if n_inputs == 2 else "A"
        return [Pair("A-recon", ref, f"A-recon vs {ref}", "rFID")]
    return [Pair("B", "A", "A vs B", "FID")] if n_inputs == 2 else []


def _choose_metrics(
    requested: tuple[str, ...] | None, sets: dict[str, ImageSet], pairs: list[Pair], is_sets: list[str]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The metrics to compute, and why any of the default ones are left out.

    Asked for explicitly (`--metrics`), a metric the inputs cannot give is a one-line error; by default it is
    left out and the card says why.
    """
    chosen, skipped = [], {}
    for m in requested or ALL_METRICS:
        reason = None
        if m == "is":
            if not is_sets:
                reason = "no set of images to score (statistics files hold no logits)"
        elif not pairs:
            reason = "one set only: pair metrics need A and B (or --tokenizer)"
        else:
            for pair in pairs:
                for role in (pair.test, pair.ref):
                    if not sets[role].provides(PART_OF[m]):
                        s = sets[role]
                        what = "Inception features of both sets" if PART_OF[m] == "pool" else f"{m} statistics"
                        reason = f"{m} needs {what}, but {role} ({s.spec}) holds " + (
                            "only mu/sigma" if s.stats is not None else "no such statistics"
                        )
        if reason is None:
            chosen.append(m)
        elif requested is not None:
            raise VimtoolError(f"{reason}; give images (a folder or an arr_0 .npz) or leave {m} out of --metrics")
        else:
            skipped[m] = reason
    return tuple(chosen), skipped


def _needs(
    cfg: EvalFidConfig, metrics: tuple[str, ...], sets: dict[str, ImageSet], pairs: list[Pair], is_sets: list[str]
) -> dict[str, Needs]:
    needs = {role: Needs() for role in sets}
    for m in metrics:
        if m == "is":
            for role in is_sets:
                needs[role].logits = True
            continue
        part = PART_OF[m]
        for pair in pairs:
            for role in (pair.test, pair.ref):
                if not sets[role].from_file(part):
                    setattr(needs[role], part, True)
    if cfg.save_stats:
        needs["A"].stats = needs["A"].spatial = True
    return needs


def _first_size(s: ImageSet) -> str | None:
    """ "HxW" of a set's first image, read before the pass (a data stream is peeked and restored)."""
    if s.image_size is not None or s.images is None:
        return s.image_size
    if s.files is not None:
        with Image.open(s.files[0]) as im:
            w, h = im.size
        return f"{h}x{w}"
    it = iter(s.images)
    try:
        first = next(it)
    except StopIteration:
        return None
    s.images = itertools.chain([first], it)
    a = np.asarray(first) if not isinstance(first, (str, Path)) else np.asarray(open_image(first))
    return f"{a.shape[0]}x{a.shape[1]}"


def _check_resolutions(cfg: EvalFidConfig, sets: dict[str, ImageSet], pairs: list[Pair], tok_size: int | None) -> None:
    """Refuse to compare sets of different resolution unless the resize was chosen explicitly."""
    for s in sets.values():
        if s.kind == "reconstruction":
            s.image_size = f"{tok_size}x{tok_size}"
        elif s.role == "A" and tok_size is not None:
            s.image_size = f"{tok_size}x{tok_size}"  # A is cropped to the tokenizer's size
        else:
            s.image_size = _first_size(s)
    if cfg.resize is not None:
        return
    for pair in pairs:
        a, b = sets[pair.ref], sets[pair.test]
        if a.image_size and b.image_size and a.image_size != b.image_size:
            raise VimtoolError(
                f"{pair.ref} is {a.image_size} but {pair.test} is {b.image_size}: the resize to 299x299 is part of "
                "the metric; pass --resize torch-bilinear (pytorch-fid) or --resize pil-bicubic (clean-fid)"
            )


def _save_batch(cfg: EvalFidConfig, a: ImageSet) -> Path:
    if a.images is None or a.count is None:
        raise VimtoolError(f"--save-batch needs A to be images of known count (files or an .npz), not {a.kind}")
    return write_image_batch(cfg.save_batch, (image_to_uint8(open_image(x)) for x in a.images), a.count)


def _run(
    cfg: EvalFidConfig,
    sets: dict[str, ImageSet],
    needs: dict[str, Needs],
    device: torch.device,
    resize: str,
    transform=None,
    tok_size: int | None = None,
) -> Path | None:
    """One Inception pass per image set that needs one (A + its reconstructions share A's pass)."""
    tok_pass = "A-recon" in sets and needs["A-recon"].any()
    run_roles = [r for r, s in sets.items() if s.images is not None and needs[r].any() and not (tok_pass and r == "A")]
    if not run_roles and not tok_pass:
        return None
    model, weights = load_inception(cfg.inception_weights, device=device, fuse=cfg.fuse)
    if tok_pass:
        # One pass over A: its reconstructions, and (without B) the same cropped real images to compare with.
        sinks = {"A-recon": (transform, SetAccumulator(needs["A-recon"]))}
        if needs["A"].any():
            sinks["A"] = (None, SetAccumulator(needs["A"]))
        a = sets["A"]
        sizes = inception_pass(
            _crop_images(a.images, tok_size), model, sinks, cfg.batch_size, a.count, cfg.workers, "A + recon", resize
        )
        for name, (_, acc) in sinks.items():
            sets[name].feats = acc.result(sizes)
    weights_sha = sha256_file(weights) if cfg.feature_cache else ""
    for role in run_roles:
        s = sets[role]
        key = _cache_key(cfg, s, weights_sha, resize)
        if key is not None:
            s.info["feature_cache_key"] = key
            cached = feature_cache.load(cfg.feature_cache, key)
            if cached is not None:
                s.feats, s.info["from_feature_cache"] = cached, True
                continue
        # A cached set keeps everything (the cache entry must serve any later choice of metrics).
        acc = SetAccumulator(Needs.everything() if key else needs[role])
        sizes = inception_pass(s.images, model, {role: (None, acc)}, cfg.batch_size, s.count, cfg.workers, role, resize)
        s.feats = acc.result(sizes)
        if key is not None:
            feature_cache.save(cfg.feature_cache, key, s.feats)
    return weights


def _cache_key(cfg: EvalFidConfig, s: ImageSet, weights_sha: str, resize: str) -> str | None:
    if not cfg.feature_cache or cfg.tokenizer:
        return None  # reconstructions (and the crops they come from) are not cached
    identity = s.identity or (files_identity(s.files) if s.files is not None else None)
    return None if identity is None else feature_cache.cache_key(identity, weights_sha, resize, cfg.fuse)


def _part(s: ImageSet, part: str):
    """A set's `part`, from its file first (as ADM's evaluator uses a reference batch's stored statistics)."""
    if part == "stats" and s.stats is not None:
        return s.stats
    if part == "spatial" and s.spatial is not None:
        return s.spatial
    return getattr(s.feats, part)


def _score(cfg, metrics, sets, pairs, is_sets, device) -> dict[str, Any]:
    scores: dict[str, Any] = {m: {} for m in ("fid", "sfid", "precision", "recall", "kid") if m in metrics}
    scores["inception_score"] = {}
    scores["reference"] = {p.key: p.ref for p in pairs}
    for pair in pairs:
        scores["metric"] = pair.label
        test, ref = sets[pair.test], sets[pair.ref]
        if "fid" in metrics:
            scores["fid"][pair.key] = frechet_distance(_part(ref, "stats"), _part(test, "stats"))
        if "sfid" in metrics:
            scores["sfid"][pair.key] = frechet_distance(_part(ref, "spatial"), _part(test, "spatial"))
        if "precision" in metrics or "recall" in metrics:
            precision, recall = precision_recall(ref.feats.pool, test.feats.pool, cfg.pr_k, device)
            if "precision" in metrics:
                scores["precision"][pair.key] = precision
            if "recall" in metrics:
                scores["recall"][pair.key] = recall
        if "kid" in metrics:
            kid = kernel_inception_distance(
                test.feats.pool, ref.feats.pool, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed
            )
            if kid.clamped:
                log.warning(
                    "KID: subset size %d clamped to %d (the smaller set's size)", cfg.kid_subset_size, kid.subset_size
                )
            scores["kid"][pair.key] = asdict(kid)
    if "is" in metrics:
        for role in is_sets:
            logits = sets[role].feats.logits
            if len(logits) >= cfg.is_splits:
                mean, std = inception_score(logits, cfg.is_splits)
                scores["inception_score"][role] = {"mean": mean, "std": std, "splits": cfg.is_splits}
            else:
                log.warning("IS of %s skipped: %d images, fewer than %d splits", role, len(logits), cfg.is_splits)
    return scores


def evaluate_fid(cfg: EvalFidConfig) -> list[Path]:
    """Run `eval-fid`; returns the written paths (scores, protocol card, saved stats / batch)."""
    if not 1 <= len(cfg.inputs) <= 2:
        raise VimtoolError(f"eval-fid takes one or two image sets (A [B]), got {len(cfg.inputs)}")
    if cfg.n is not None and cfg.n < 2:
        raise VimtoolError(f"--n must be at least 2 (a covariance needs 2 images), got {cfg.n}")
    requested = parse_metrics(cfg.metrics)
    resize = check_resize_mode(cfg.resize) if cfg.resize is not None else DEFAULT_RESIZE
    single_ok = cfg.tokenizer or cfg.save_stats or cfg.save_batch or (requested is not None and "is" in requested)
    if len(cfg.inputs) == 1 and not single_ok:
        raise VimtoolError("give two image sets (A B), or one with --tokenizer (rFID), --save-stats or --metrics is")
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    sets = {role: resolve_input(s, role, cfg) for s, role in zip(cfg.inputs, ("A", "B"))}
    a = sets["A"]
    if cfg.save_stats and a.images is None:
        raise VimtoolError(f"--save-stats: A ({cfg.inputs[0]}) is already statistics; give images for A")
    if cfg.save_stats and cfg.tokenizer and len(sets) == 2:
        raise VimtoolError("--save-stats with --tokenizer saves the cropped real set's stats: give A alone")
    if cfg.tokenizer and a.images is None:
        raise VimtoolError(f"--tokenizer needs real images as A, not statistics ({cfg.inputs[0]})")

    written = []
    if cfg.save_batch:
        written.append(_save_batch(cfg, a))
        if not isinstance(a.images, (list, _Reiterable)):  # a data stream was consumed: open it again
            sets["A"] = a = resolve_input(cfg.inputs[0], "A", cfg)

    transform = tok_info = tok_size = None
    if cfg.tokenizer:
        tok, tok_size, transform = _tokenizer_transform(cfg, device)
        tok_info = {"checkpoint": cfg.tokenizer, "image_size": tok_size, "model_type": getattr(tok, "model_type", None)}
        a.info["crop"] = f"resize + center crop to {tok_size}x{tok_size} (the tokenizer's input)"
        if len(sets) == 2:
            a.info["used_as"] = "source of the reconstructions only"
        sets["A-recon"] = ImageSet("A-recon", f"{a.spec} -> {cfg.tokenizer}", "reconstruction", count=a.count)
    pairs = _pairs(cfg, len(cfg.inputs))
    # IS: of the set under test (B, the reconstructions, or a lone A), and of any other set run anyway.
    test_roles = [p.test for p in pairs] or ["A"]
    is_sets = [r for r in test_roles if sets[r].provides("logits")] or [
        r for r, s in sets.items() if s.images is not None and not s.info.get("used_as")
    ]
    metrics, skipped = _choose_metrics(requested, sets, pairs, is_sets)
    needs = _needs(cfg, metrics, sets, pairs, is_sets)
    if "is" in metrics:  # sets that are run for another metric get their IS too
        for role, s in sets.items():
            if role not in is_sets and needs[role].any() and not s.info.get("used_as"):
                is_sets.append(role)
                needs[role].logits = True
    _check_resolutions(cfg, sets, pairs, tok_size)
    weights = _run(cfg, sets, needs, device, resize, transform, tok_size)

    for s in sets.values():
        if s.feats is not None:
            s.count = s.feats.count
            s.info["image_sizes"] = s.feats.sizes
            if s.count < 2048 and ("fid" in metrics or "sfid" in metrics):
                log.warning(
                    "%s has %d images: fewer than 2048 gives a rank-deficient covariance and a biased FID "
                    "(papers use 50k / 30k)",
                    s.role,
                    s.count,
                )
    scores = _score(cfg, metrics, sets, pairs, is_sets, device)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.save_stats:
        written.append(save_npz(a.feats.stats, cfg.save_stats, spatial=a.feats.spatial))
    card = protocol_card(cfg, list(sets.values()), weights, device, tok_info, scores, metrics, skipped, resize)
    counts = {s.role: s.count for s in sets.values()}
    written.append(write_json(out / "scores.json", {"scores": scores, "counts": counts}))
    written.append(write_json(out / "protocol.json", card))
    print_table(list(sets.values()), scores)
    return written
