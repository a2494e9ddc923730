"""The built-in `shapes` set: procedural captioned scenes, a caption parser, and a checker that scores images.

Scenes: 1 or 2 objects; shapes circle / square / triangle (upright); 6 colours (red, yellow, green, cyan,
blue, purple, chosen far apart in RGB so a colour can be told apart even in blurry generated images);
2 sizes (small = 0.6, large = 0.9 of a grid cell); positions on a 3x3 grid named
"top left", "top center", "top right", "middle left", "center", "middle right", "bottom left",
"bottom center", "bottom right". Two objects always have different colours and cells; their relation
(left of / right of / above / below, object 0 relative to object 1) is one that the cells make true.
The class label is shape x colour of the first object: `label = shape_index * 6 + colour_index` (18 classes,
`CLASS_NAMES[label]` = "red circle", ...).

Rendering (`render(scene, size)`) works at any resolution: shapes are drawn at 4x (2x above 128 px) and
box-filtered down, so edges are anti-aliased and the covered area is exact to 1/16 pixel. Objects fill most
of their cell (a cell is 10.7 px at 32x32, so a small object is ~6.4 px and a large one ~9.6 px).

Captions come from several templates, e.g. "a small red circle in the top left", "a red circle in the top
left", "a blue square above a yellow triangle", "a blue square in the top left and a red circle in the
center". `parse_caption(text) -> Scene` reads any of them (and close variants: "big", "centre",
"to the left of", "top") back into a scene whose unspecified attributes are None.

`check(image, caption_or_scene) -> CheckResult` detects objects by colour (each pixel is explained as a mix
of the background and one palette colour; its mixing weight is the coverage), takes connected components,
and classifies each: triangle by how far its area centroid sits below its box centre (h/6 for an upright
triangle, 0 otherwise), square vs circle by fill ratio of its sub-pixel bounding box (1.0 vs pi/4), size by
the extent its covered area implies (area is what blur preserves), position by the cell of its box
centre. It reports colour, shape, size, position, relation and count separately; `ok` is all of them.
Measured (tests/test_shapes.py): 100% on the set's own images at 32 and 64 px, < 1% with a wrong caption,
>= 95% after blur + noise + a 0.75x down/up-sampling. `score(images, captions)` is the pass rate.

Hold-out (compositional tests): `holdout="red+triangle;blue+circle"` (combinations of colour / shape / size /
position values, `+` within one, `;` between) removes every scene with a matching object from `train` and
`val`; split `holdout` yields only scenes containing one, for evaluation. `captions(n, split, seed,
objects, holdout)` lists prompts (e.g. the held-out ones) without rendering.

Spec options (`shapes:size=32,objects=2,n=5000,holdout=red+triangle`): `size` (pixels, default 64), `objects`
(`1`, `2` or `1-2`, default `1-2`), `n` (examples per split; default 20000 train, 2000 val/holdout; `0` or
`inf` = endless stream), `holdout`, and the `seed` of `open_source`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from vimtool.data.examples import Example, MapSource, StreamSource
from vimtool.errors import VimtoolError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (240, 210, 20),
    "green": (30, 170, 50),
    "cyan": (20, 200, 220),
    "blue": (30, 60, 220),
    "purple": (150, 40, 190),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.6, "large": 0.9}  # object extent as a fraction of a grid cell
POSITIONS = (
    "top left",
    "top center",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom center",
    "bottom right",
)  # row-major on the 3x3 grid
RELATIONS = ("left of", "right of", "above", "below")
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
BACKGROUND = (245, 245, 245)
CLASS_NAMES = [f"{c} {s}" for s in SHAPES for c in COLOURS]
NUM_CLASSES = len(CLASS_NAMES)

ONE_OBJECT_TEMPLATES = (
    "a {size} {colour} {shape} in the {position}",
    "a {colour} {shape} in the {position}",
    "there is a {size} {colour} {shape} in the {position}",
    "{size} {colour} {shape}, {position}",
)
TWO_OBJECT_TEMPLATES = (
    "a {colour0} {shape0} {relation} a {colour1} {shape1}",
    "a {size0} {colour0} {shape0} {relation} a {size1} {colour1} {shape1}",
    "there is a {colour0} {shape0} {relation} a {colour1} {shape1}",
    "a {colour0} {shape0} in the {position0} and a {colour1} {shape1} in the {position1}",
)


@dataclass(frozen=True)
class ShapeObject:
    """One object. In parsed captions, attributes the text does not name are None (= not constrained).
    `dx`, `dy` shift it inside its cell (fractions of a cell); they are rendering detail, not compared."""

    shape: str
    colour: str
    size: str | None = None
    position: str | None = None
    dx: float = field(default=0.0, compare=False)
    dy: float = field(default=0.0, compare=False)

    @property
    def cell(self) -> tuple[int, int]:
        """(row, col) on the 3x3 grid."""
        return divmod(POSITIONS.index(self.position), 3)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    relation: str | None = None  # objects[0] relative to objects[1]
    template: int = field(default=0, compare=False)

    @property
    def label(self) -> int:
        o = self.objects[0]
        return SHAPES.index(o.shape) * len(COLOURS) + list(COLOURS).index(o.colour)

    @property
    def caption(self) -> str:
        return caption_for(self, self.template)

    def to_dict(self) -> dict:
        return {
            "objects": [
                {"shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position} for o in self.objects
            ],
            "relation": self.relation,
        }


def caption_for(scene: Scene, template: int = 0) -> str:
    """The caption of `scene` with template number `template` (modulo the number of templates)."""
    objs = scene.objects
    if len(objs) == 1:
        o = objs[0]
        t = ONE_OBJECT_TEMPLATES[template % len(ONE_OBJECT_TEMPLATES)]
        return t.format(size=o.size, colour=o.colour, shape=o.shape, position=o.position)
    a, b = objs[0], objs[1]
    t = TWO_OBJECT_TEMPLATES[template % len(TWO_OBJECT_TEMPLATES)]
    return t.format(
        colour0=a.colour,
        shape0=a.shape,
        size0=a.size,
        position0=a.position,
        colour1=b.colour,
        shape1=b.shape,
        size1=b.size,
        position1=b.position,
        relation=RELATION_WORDS.get(scene.relation or "", ""),
    )


# --- hold-out combinations ----------------------------------------------------------------------------------------

_ATTRIBUTE_OF = {
    **{c: "colour" for c in COLOURS},
    **{s: "shape" for s in SHAPES},
    **{s: "size" for s in SIZES},
    **{p: "position" for p in POSITIONS},
}


def parse_holdout(text: str | Sequence[str] | None) -> list[dict[str, str]]:
    """`"red+triangle;small+center"` (or a list of such combos) -> [{"colour": "red", "shape": "triangle"}, ...]."""
    if not text:
        return []
    combos = text if not isinstance(text, str) else re.split(r"[;|]", text)
    out = []
    for combo in combos:
        combo = combo.strip()
        if not combo:
            continue
        attrs: dict[str, str] = {}
        for raw in combo.split("+"):
            value = " ".join(raw.replace("-", " ").replace("_", " ").lower().split())
            value = {"centre": "center", "big": "large"}.get(value, value)
            kind = _ATTRIBUTE_OF.get(value)
            if kind is None:
                raise VimtoolError(
                    f"holdout {combo!r}: {raw!r} is not a colour, shape, size or position; use e.g. "
                    "holdout=red+triangle;blue+circle (positions like top-left)"
                )
            if kind in attrs:
                raise VimtoolError(f"holdout {combo!r} names two {kind}s; one combination holds one value of each")
            attrs[kind] = value
        out.append(attrs)
    return out


def _matches(obj: ShapeObject, combo: dict[str, str]) -> bool:
    return all(getattr(obj, k) == v for k, v in combo.items())


def is_held_out(scene: Scene, holdout: list[dict[str, str]]) -> bool:
    return any(_matches(o, c) for o in scene.objects for c in holdout)


# --- generation ---------------------------------------------------------------------------------------------------


def _random_object(rng: random.Random, fixed: dict[str, str], taken_colours: set, taken_cells: set) -> ShapeObject:
    colours = [c for c in COLOURS if c not in taken_colours]
    positions = [p for p in POSITIONS if divmod(POSITIONS.index(p), 3) not in taken_cells]
    colour = fixed.get("colour") or rng.choice(colours)
    position = fixed.get("position") or rng.choice(positions)
    shape = fixed.get("shape") or rng.choice(SHAPES)
    size = fixed.get("size") or rng.choice(list(SIZES))
    room = (1.0 - SIZES[size]) / 2 * 0.8  # keep the whole object inside its cell, with a margin
    return ShapeObject(shape, colour, size, position, dx=rng.uniform(-room, room), dy=rng.uniform(-room, room))


def random_scene(
    rng: random.Random, n_objects: int, fixed: dict[str, str] | None = None, fixed_index: int = 0
) -> Scene:
    """One scene with `n_objects` (1 or 2); object `fixed_index` takes the attribute values in `fixed`."""
    for _ in range(100):
        objs: list[ShapeObject] = []
        for i in range(n_objects):
            f = (fixed or {}) if i == fixed_index else {}
            objs.append(_random_object(rng, f, {o.colour for o in objs}, {o.cell for o in objs}))
        if len({o.colour for o in objs}) == len(objs) and len({o.cell for o in objs}) == len(objs):
            break
    else:  # pragma: no cover - only reachable with contradictory fixed attributes
        raise VimtoolError(f"cannot place a scene with {fixed}; check the holdout combination")
    relation = None
    if n_objects == 2:
        (r0, c0), (r1, c1) = objs[0].cell, objs[1].cell
        options = ([("left of" if c0 < c1 else "right of")] if c0 != c1 else []) + (
            [("above" if r0 < r1 else "below")] if r0 != r1 else []
        )
        relation = rng.choice(options)
    n_templates = len(ONE_OBJECT_TEMPLATES if n_objects == 1 else TWO_OBJECT_TEMPLATES)
    return Scene(tuple(objs), relation, template=rng.randrange(n_templates))


def scene_at(
    seed: int, split: str, index: int, objects: tuple[int, ...] = (1, 2), holdout: list[dict[str, str]] | None = None
) -> Scene:
    """The scene number `index` of `split`: a pure function of its arguments (no state, any order).

    train/val exclude held-out combinations (resampling); `holdout` contains one in every scene.
    """
    rng = random.Random(f"shapes|{seed}|{split}|{index}")  # str seeds hash with sha512: stable everywhere
    n_objects = rng.choice(objects)
    if split == "holdout":
        if not holdout:
            raise VimtoolError("split 'holdout' needs held-out combinations: shapes:holdout=red+triangle;...")
        combo = rng.choice(holdout)
        return random_scene(rng, n_objects, combo, fixed_index=rng.randrange(n_objects))
    for _ in range(1000):
        scene = random_scene(rng, n_objects)
        if not holdout or not is_held_out(scene, holdout):
            return scene
    raise VimtoolError(f"holdout {holdout} excludes (nearly) every scene; hold out fewer combinations")


# --- rendering ----------------------------------------------------------------------------------------------------


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw `scene` as an RGB image of `size x size` (anti-aliased by supersampling)."""
    if size < 12:
        raise VimtoolError(f"shapes size {size} is too small to draw 3x3 positions; use 16 or more (32, 64)")
    ss = 4 if size <= 128 else 2
    big = size * ss
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = big / 3
    for o in scene.objects:
        row, col = o.cell
        cx, cy = (col + 0.5 + o.dx) * cell, (row + 0.5 + o.dy) * cell
        h = SIZES[o.size or "large"] * cell / 2
        x0, y0, x1, y1 = cx - h, cy - h, cx + h, cy + h
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif o.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:  # upright isosceles triangle: base = height = extent, so it fills half its box
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    return img.reduce(ss)  # box filter: each pixel's colour mixes in proportion to the area covered


# --- caption parsing ----------------------------------------------------------------------------------------------

_COLOUR_RE = "|".join(COLOURS)
_OBJECT_RE = re.compile(rf"\b(?:(small|large|big|little|tiny)\s+)?({_COLOUR_RE})\s+(circle|square|triangle)s?\b")
_RELATION_RE = re.compile(r"\b(?:(?:to|on) the\s+)?(left|right) of\b|\b(above|over|below|under|beneath)\b")
_ROW = {"top": 0, "upper": 0, "middle": 1, "center": 1, "bottom": 2, "lower": 2}
_COL = {"left": 0, "center": 1, "middle": 1, "right": 2}
_POSITION_RE = re.compile(
    r"\b(top|upper|middle|center|bottom|lower)\s+(left|center|middle|right)\b"
    r"|\b(top|bottom|left|right|center|middle|upper|lower)\b"
)


def _position_from(text: str) -> str | None:
    m = _POSITION_RE.search(text)
    if not m:
        return None
    if m.group(1):
        return POSITIONS[_ROW[m.group(1)] * 3 + _COL[m.group(2)]]
    word = m.group(3)
    row, col = _ROW.get(word, 1), _COL.get(word, 1)
    if word in ("left", "right"):
        row = 1
    return POSITIONS[row * 3 + col]


def parse_caption(text: str) -> Scene:
    """Caption -> Scene (attributes the caption leaves out are None). VimtoolError if it names no object."""
    t = " ".join(re.sub(r"[^a-z ]", " ", str(text).lower().replace("centre", "center")).split())
    found = list(_OBJECT_RE.finditer(t))
    if not found:
        raise VimtoolError(
            f"cannot read a shapes scene from {text!r}; expected e.g. 'a small red circle in the "
            "top left' or 'a blue square above a yellow triangle'"
        )
    objs, relation = [], None
    for i, m in enumerate(found):
        tail = t[m.end() : found[i + 1].start() if i + 1 < len(found) else len(t)]
        r = _RELATION_RE.search(tail)
        if r:
            if i == 0 and len(found) > 1:
                word = r.group(1) or r.group(2)
                relation = {
                    "left": "left of",
                    "right": "right of",
                    "above": "above",
                    "over": "above",
                    "below": "below",
                    "under": "below",
                    "beneath": "below",
                }[word]
            tail = tail[: r.start()] + " " + tail[r.end() :]
        size = {"big": "large", "little": "small", "tiny": "small"}.get(m.group(1), m.group(1))
        objs.append(ShapeObject(m.group(3), m.group(2), size, _position_from(tail)))
    return Scene(tuple(objs), relation)


# --- the checker --------------------------------------------------------------------------------------------------


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
    from vimtool.data.transforms import to_pil

    return to_pil(image)


def detect_objects(
    image: Image.Image, min_area_cells: float = 0.08, max_residual: float = 90.0
) -> list[DetectedObject]:
    """Find the coloured objects of a shapes-style image (any size), largest first."""
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
            # fill ratio of the box tells square (1) from circle (pi/4 = 0.785). Both cuts sit below the
            # halfway points because blur (generated or reconstructed images) rounds corners and fades tips:
            # measured on renders blurred by a 0.75x down/up-sampling, triangles keep drop > 0.075, circles < 0.01
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


# --- the source ---------------------------------------------------------------------------------------------------

DEFAULT_N = {"train": 20000, "val": 2000, "holdout": 2000}


def parse_objects(value) -> tuple[int, ...]:
    v = str(value).strip().replace(" ", "")
    table = {"1": (1,), "2": (2,), "1-2": (1, 2), "1,2": (1, 2), "12": (1, 2), "mixed": (1, 2)}
    if v not in table:
        raise VimtoolError(f"shapes objects={value!r}: use 1, 2 or 1-2")
    return table[v]


class ShapesSource(MapSource):
    """`n` scenes of one split, generated on the fly from (seed, split, index): random access, no storage."""

    def __init__(
        self,
        split: str = "train",
        *,
        size: int = 64,
        objects=(1, 2),
        n: int | None = None,
        holdout=None,
        seed: int = 0,
        spec: str = "shapes",
        **kw,
    ):
        if split == "all":
            split = "train"
        if split not in DEFAULT_N:
            raise VimtoolError(f"shapes has splits train, val and holdout, not {split!r}")
        self.split, self.size, self.seed = split, int(size), int(seed)
        self.objects = parse_objects(objects) if not isinstance(objects, tuple) else objects
        self.holdout = parse_holdout(holdout)
        if split == "holdout" and not self.holdout:
            raise VimtoolError("shapes split 'holdout' needs held-out combinations: shapes:holdout=red+triangle;...")
        n = DEFAULT_N[split] if n is None else int(n)
        super().__init__(
            spec, range(n), num_classes=NUM_CLASSES, class_names=list(CLASS_NAMES), has_captions=True, **kw
        )

    def scene(self, raw_index: int) -> Scene:
        return scene_at(self.seed, self.split, raw_index, self.objects, self.holdout)

    def _load(self, raw_index: int) -> Example:
        s = self.scene(raw_index)
        return Example(render(s, self.size), s.label, s.caption, f"shapes/{self.split}/{raw_index}")


def endless_shapes(
    split: str = "train", *, size: int = 64, objects=(1, 2), holdout=None, seed: int = 0, spec: str = "shapes", **kw
) -> StreamSource:
    """The same scenes as `ShapesSource` (index 0, 1, 2, ...), never ending."""
    proto = ShapesSource(split, size=size, objects=objects, n=1, holdout=holdout, seed=seed, spec=spec)

    def gen():
        i = 0
        while True:
            yield proto._load(i)
            i += 1

    return StreamSource(spec, gen, num_classes=NUM_CLASSES, class_names=list(CLASS_NAMES), has_captions=True, **kw)


def captions(n: int, split: str = "val", seed: int = 0, objects=(1, 2), holdout=None) -> list[str]:
    """The captions of the first `n` scenes of a split: prompts for text-to-image evaluation (split
    `holdout` gives prompts made only of held-out combinations)."""
    objs = parse_objects(objects) if not isinstance(objects, tuple) else objects
    combos = parse_holdout(holdout) if not isinstance(holdout, list) else holdout
    return [scene_at(seed, split, i, objs, combos).caption for i in range(n)]
