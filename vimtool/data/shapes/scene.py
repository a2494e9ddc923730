"""Scenes of the `shapes` set: the vocabulary, the scene types, their captions, hold-out, and the generator.

Scenes: 1 or 2 objects; shapes circle / square / triangle (upright); 6 colours (red, yellow, green, cyan,
blue, purple, chosen far apart in RGB so a colour can be told apart even in blurry generated images);
2 sizes (small = 0.6, large = 0.9 of a grid cell); positions on a 3x3 grid named
"top left", "top center", "top right", "middle left", "center", "middle right", "bottom left",
"bottom center", "bottom right". Two objects always have different colours and cells; their relation
(left of / right of / above / below, object 0 relative to object 1) is one that the cells make true.
The class label is shape x colour of the first object: `label = shape_index * 6 + colour_index` (18 classes,
`CLASS_NAMES[label]` = "red circle", ...).

Captions come from several templates (`caption_for`), e.g. "a small red circle in the top left", "a red circle
in the top left", "a blue square above a yellow triangle", "a blue square in the top left and a red circle in
the center"; grammar.py reads them back.

Hold-out (compositional tests): `holdout="red+triangle;blue+circle"` (combinations of colour / shape / size /
position values, `+` within one, `;` between) removes every scene with a matching object from `train` and
`val`; split `holdout` yields only scenes containing one, for evaluation. `scene_at(seed, split, index, ...)`
is a pure function of its arguments.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

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


# --- hold-out combinations --------------------------------------------------------------------------------------------

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


# --- generation -------------------------------------------------------------------------------------------------------


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
