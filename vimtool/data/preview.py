"""`vimtool data preview`: a grid PNG of a source's first examples with their captions or labels.

Look before training: the grid shows what the model will see (after `resize_center_crop` to `size`), with
the caption under each image, or the class name / id when the source has labels but no captions.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

from vimtool.atomic import save_png
from vimtool.data.sources import open_source
from vimtool.data.transforms import make_grid, resize_center_crop
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)


@dataclass
class PreviewConfig:
    data: str = "shapes"  # any --data spec (vimtool/data/sources.py)
    out: str = "preview.png"
    n: int = 64  # images in the grid
    size: int = 64  # each image is resized + center-cropped to size x size
    split: str = "train"
    ncol: int = 0  # 0 = a near-square grid
    seed: int = 0
    strict: bool = False  # stop at the first corrupt image instead of skipping it


def _label_text(label, class_names) -> str:
    if label is None:
        return ""
    if class_names and 0 <= label < len(class_names) and class_names[label] != str(label):
        return f"class {label}: {class_names[label]}"
    return f"class {label}"  # a bare number under a picture reads as anything (a count, a score, an index)


def preview(cfg: PreviewConfig) -> list[Path]:
    """Write the grid PNG; returns [its path]."""
    if cfg.n < 1:
        raise VimtoolError(f"--n must be at least 1, got {cfg.n}")
    if cfg.size < 8:
        raise VimtoolError(f"--size must be at least 8 pixels, got {cfg.size}")
    out = Path(cfg.out)
    if out.suffix.lower() != ".png":
        raise VimtoolError(f"--out {out} should end in .png")
    source = open_source(cfg.data, cfg.split, seed=cfg.seed, strict=cfg.strict)
    source.draft_size = cfg.size  # JPEGs decode at a reduced scale that still covers the cell
    if source.streaming:
        examples = iter(source)
    else:  # a seeded sample, in source order: folders sorted by class would otherwise show one class only
        rng = random.Random(cfg.seed)
        picks = sorted(rng.sample(range(len(source)), min(cfg.n, len(source))))
        examples = (source.get(i) for i in picks)
    images, captions = [], []
    for ex in examples:
        if ex is None:  # a corrupt image: skipped (and counted), not replaced
            continue
        images.append(resize_center_crop(ex.image, cfg.size))
        captions.append(ex.caption if ex.caption is not None else _label_text(ex.label, source.class_names))
        if len(images) >= cfg.n:
            break
    source.report_skipped()
    if not images:
        raise VimtoolError(f"--data {cfg.data!r} gave no images for split {cfg.split!r}")
    show_text = any(captions)
    ncol = cfg.ncol or math.ceil(math.sqrt(len(images)))
    grid = make_grid(images, ncol, captions if show_text else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(grid, out)
    log.info("wrote %d images of %s (%s) to %s", len(images), cfg.data, cfg.split, out)
    return [out]
