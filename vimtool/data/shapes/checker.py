"""The `shapes` checker: does an image show what its caption says?

`check(image, caption_or_scene) -> CheckResult` detects objects by colour (each pixel is explained as a mix
of the background and one palette colour; its mixing weight is the coverage), takes connected components,
and classifies each: triangle by how far its area centroid sits below its box centre (h/6 for an upright
triangle, 0 otherwise), square vs circle by fill ratio of its sub-pixel bounding box (1.0 vs pi/4), size by
the extent its covered area implies (area is what blur preserves), position by the cell of its box
centre. It reports colour, shape, size, position, relation and count separately; `ok` is all of them.
Measured (tests/test_shapes.py): 100% on the set's own images at 32 and 64 px, < 1% with a wrong caption,
>= 95% after blur + noise + a 0.75x down/up-sampling. `score(images, captions)` is the pass rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vimtool.data.shapes.grammar import parse_caption
from vimtool.data.shapes.scene import COLOURS, POSITIONS, SIZES, Scene
from vimtool.data.transforms import to_pil
from vimtool.errors import VimtoolError


@dataclass
class DetectedObject:
    colour: str
    shape: str
    size: str
    position: str
    center: tuple[float, float]  # (x, y) in pixels
    extent: tuple[float, float]  # (width, height) in pixels, sub-pixel
    area: float  # covered pixels (soft)
    fill: float  # area / (width * height)
    drop: float  # (area centroid y - box centre y) / height: 1/6 for an upright triangle, 0 for circle/square


@dataclass
class CheckResult:
    ok: bool
    colour: bool
    shape: bool
    size: bool
    position: bool
    relation: bool
    count: bool
    detail: str
    detected: list[DetectedObject] = field(default_factory=list)


_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
_COLOUR_NAMES = list(COLOURS)


def _as_image(image) -> Image.Image:
    """PIL (any mode), a (3, H, W) tensor in [-1, 1] (model side), or an (H, W, 3) uint8 array -> RGB PIL."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")

    return to_pil(image)


def detect_objects(
    image: Image.Image, min_area_cells: float = 0.08, max_residual: float = 90.0
) -> list[DetectedObject]:
    """Find the coloured objects of a shapes-style image (any size), largest first."""
    # deferred on purpose: scipy (~0.2 s) only when an image is checked, not for every `--data shapes` run
    from scipy import ndimage

    a = np.asarray(_as_image(image), dtype=np.float32)  # (H, W, 3)
    H, W, _ = a.shape
    bg = np.median(a.reshape(-1, 3), axis=0)  # objects cover < 20% of the image, so the median is background
    d = _PALETTE - bg  # (K, 3) direction from background to each colour
    dn = np.maximum((d * d).sum(1), 1e-6)  # (K,)
    x = a - bg  # (H, W, 3)
    t = np.clip(np.einsum("hwc,kc->hwk", x, d) / dn, 0.0, 1.0)  # (H, W, K) mixing weight of each colour
    resid = np.linalg.norm(x[:, :, None, :] - t[..., None] * d, axis=-1)  # (H, W, K) what the mix leaves out
    k_best = resid.argmin(-1)  # (H, W)
    cover = np.take_along_axis(t, k_best[..., None], -1)[..., 0]  # (H, W)
    good = np.take_along_axis(resid, k_best[..., None], -1)[..., 0] < max_residual
    cell_w, cell_h = W / 3, H / 3
    min_area = min_area_cells * cell_w * cell_h
    out = []
    for k, name in enumerate(_COLOUR_NAMES):
        soft = np.where((k_best == k) & good, cover, 0.0)  # (H, W)
        core = soft > 0.5
        if not core.any():
            continue
        labels, n = ndimage.label(core, structure=np.ones((3, 3)))
        for comp in range(1, n + 1):
            region = ndimage.binary_dilation(labels == comp, structure=np.ones((3, 3)))  # include the soft rim
            s = np.where(region, soft, 0.0)
            area = float(s.sum())
            if area < min_area:
                continue
            col_prof, row_prof = s.max(0), s.max(1)  # (W,), (H,): sub-pixel extent = sum of per-line maxima
            width, height = float(col_prof.sum()), float(row_prof.sum())
            cx = float((col_prof * (np.arange(W) + 0.5)).sum() / width)
            cy = float((row_prof * (np.arange(H) + 0.5)).sum() / height)
            fill = area / max(width * height, 1e-6)
            # an upright triangle's area centroid sits h/6 below its box centre (circle, square: 0); its sharp
            # corners make the box (and so the fill ratio) slightly small at 32 px, so the offset decides
            ys = np.arange(H)[:, None] + 0.5
            drop = (float((s * ys).sum()) / area - cy) / max(height, 1e-6)
            # fill ratio of the box tells square (1) from circle (pi/4 = 0.785). Blur (generated or
            # reconstructed images) rounds corners and fades tips. The triangle cut sits below its halfway point
            # (0.083): on renders blurred by a 0.75x down/up-sampling, triangles keep drop > 0.075, circles
            # < 0.01. The square cut sits ABOVE its halfway point (0.89), because the same blur raises a small
            # circle's fill (val renders: up to 0.81 sharp, 0.88 blurred) and keeps a square's at >= 0.987
            shape = "triangle" if drop > 0.045 else ("square" if fill > 0.92 else "circle")
            # size from the covered area, which blur preserves (a box's extent shrinks with blur):
            # extent^2 * ideal fill = area
            ideal = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}[shape]
            extent = math.sqrt(area / ideal) / math.sqrt(cell_w * cell_h)
            size = "large" if extent > (SIZES["small"] + SIZES["large"]) / 2 else "small"
            row, col = min(int(cy / cell_h), 2), min(int(cx / cell_w), 2)
            out.append(
                DetectedObject(name, shape, size, POSITIONS[row * 3 + col], (cx, cy), (width, height), area, fill, drop)
            )
    out.sort(key=lambda o: -o.area)
    return out


def _relation_holds(a: DetectedObject, b: DetectedObject, relation: str, cell: tuple[float, float]) -> bool:
    """Centre-based, with a margin of half a cell (scene objects in different cells are a full cell apart)."""
    (ax, ay), (bx, by) = a.center, b.center
    mx, my = cell[0] / 2, cell[1] / 2
    return {"left of": ax < bx - mx, "right of": ax > bx + mx, "above": ay < by - my, "below": ay > by + my}[relation]


def check(image, caption_or_scene: str | Scene) -> CheckResult:
    """Does `image` show what the caption (or scene) says? Checks colour, shape, size, position, relation and
    count; attributes the caption does not name are not checked. `image`: PIL, a (3, H, W) tensor in [-1, 1]
    or an (H, W, 3) uint8 array."""
    scene = parse_caption(caption_or_scene) if isinstance(caption_or_scene, str) else caption_or_scene
    image = _as_image(image)
    found = detect_objects(image)
    W, H = image.size
    unused = list(found)
    matched: list[DetectedObject | None] = []
    for o in scene.objects:
        hit = next((d for d in unused if d.colour == o.colour), None)
        if hit is not None:
            unused.remove(hit)
        matched.append(hit)
    pairs = list(zip(scene.objects, matched))
    colour = all(m is not None for m in matched)
    shape = colour and all(m.shape == o.shape for o, m in pairs)
    size = colour and all(o.size is None or m.size == o.size for o, m in pairs)
    position = colour and all(o.position is None or m.position == o.position for o, m in pairs)
    relation = True
    if scene.relation is not None and len(matched) >= 2:
        relation = (
            matched[0] is not None
            and matched[1] is not None
            and _relation_holds(matched[0], matched[1], scene.relation, (W / 3, H / 3))
        )
    count = len(found) == len(scene.objects)
    ok = colour and shape and size and position and relation and count
    seen = ", ".join(f"{d.size} {d.colour} {d.shape} ({d.position})" for d in found) or "nothing"
    want = "; ".join(f"{o.size or ''} {o.colour} {o.shape} ({o.position or 'anywhere'})".strip() for o in scene.objects)
    bad = [
        n
        for n, v in (
            ("colour", colour),
            ("shape", shape),
            ("size", size),
            ("position", position),
            ("relation", relation),
            ("count", count),
        )
        if not v
    ]
    detail = (
        f"{'ok' if ok else 'wrong ' + '/'.join(bad)}: want {want}"
        + (f" [{scene.relation}]" if scene.relation else "")
        + f"; found {seen}"
    )
    return CheckResult(ok, colour, shape, size, position, relation, count, detail, found)


def score(images: Iterable[Image.Image], captions: Iterable[str | Scene]) -> float:
    """Fraction of (image, caption) pairs that pass `check`."""
    results = [check(im, c).ok for im, c in zip(images, captions)]
    if not results:
        raise VimtoolError("score() got no images")
    return sum(results) / len(results)
