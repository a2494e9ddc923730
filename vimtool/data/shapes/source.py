"""The `shapes` data source behind `--data shapes:...`: scenes generated on the fly, rendered on access.

Spec options (`shapes:size=32,objects=2,n=5000,holdout=red+triangle`): `size` (pixels, default 64), `objects`
(`1`, `2` or `1-2`, default `1-2`), `n` (examples per split; default 20000 train, 2000 val/holdout; `0` or
`inf` = endless stream), `holdout`, and the `seed` of `open_source`. `captions(n, split, seed, objects,
holdout)` lists prompts (e.g. the held-out ones) without rendering.
"""

from __future__ import annotations

from vimtool.data.examples import Example, MapSource, StreamSource
from vimtool.data.shapes.render import render
from vimtool.data.shapes.scene import CLASS_NAMES, NUM_CLASSES, Scene, parse_holdout, scene_at
from vimtool.errors import VimtoolError

DEFAULT_N = {"train": 20000, "val": 2000, "holdout": 2000}


def parse_objects(value) -> tuple[int, ...]:
    v = str(value).strip().replace(" ", "")
    table = {"1": (1,), "2": (2,), "1-2": (1, 2), "1,2": (1, 2), "12": (1, 2), "mixed": (1, 2)}
    if v not in table:
        raise VimtoolError(f"shapes objects={value!r}: use 1, 2 or 1-2")
    return table[v]


def _whole(key: str, value, spec: str) -> int:
    """A spec option that must be a whole number (`size=abc` is a one-line error, not a ValueError)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise VimtoolError(f"--data {spec!r}: {key} must be a whole number, got {value!r}") from None


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
        self.split, self.size, self.seed = split, _whole("size", size, spec), int(seed)
        self.objects = parse_objects(objects) if not isinstance(objects, tuple) else objects
        self.holdout = parse_holdout(holdout)
        if split == "holdout" and not self.holdout:
            raise VimtoolError("shapes split 'holdout' needs held-out combinations: shapes:holdout=red+triangle;...")
        n = DEFAULT_N[split] if n is None else _whole("n", n, spec)
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
