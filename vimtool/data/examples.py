"""What every image source hands out (`Example`) and the two kinds of source: map-style and streaming.

- `Example(image, label, caption, source_id)`: `image` is an RGB `PIL.Image`, `label` an int class id or None,
  `caption` a str or None, `source_id` a stable string naming where the example came from
  (`shapes/train/17`, `mnist5k/4031`, `cats/001.png`, `data.parquet#12`, `hub:ylecun/mnist/train/5`).
- `MapSource`: `len(src)`, `src[i] -> Example`, iterable. Subclasses give the number of raw items and
  `_load(raw_index)`; the base class selects the split, applies `limit` (the first N of the split) and then
  gives rank `r` of `world_size` the items `r, r + world_size, ...` of that selection (disjoint, and
  together complete).
- `StreamSource`: iterable only (Hub streaming, endless `shapes`), same `limit` then rank slicing.

Corrupt or truncated images raise `CorruptImageError` inside `_load`; the source then skips the item and
counts it in `.skipped` (iteration logs one warning with the count at its end), or raises a `VimtoolError`
at once when opened with `strict=True`. `src[i]` on a corrupt item returns the next decodable item instead,
so a torch `Dataset` built on a source never sees a hole.

Every source has `.spec`, `.num_classes` (int | None), `.class_names` (list | None), `.has_captions`,
`.streaming`, `.skipped`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vimtool.data.transforms import to_rgb
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

# Splits a source without its own splits is cut into, deterministically (hash of a stable key per item).
SPLITS = ("train", "val", "all")


@dataclass
class Example:
    image: Image.Image
    label: int | None
    caption: str | None
    source_id: str


class CorruptImageError(Exception):
    """An image that cannot be decoded (truncated, not an image, bad bytes). Internal: sources turn it into a
    skip (counted) or, with strict=True, a VimtoolError."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def decode_image(data: bytes | str | Path, where: str) -> Image.Image:
    """Decode a file path or encoded bytes fully (so truncation shows now, not later) into RGB."""
    try:
        fp = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        with Image.open(fp) as im:
            im.load()
            upright = ImageOps.exif_transpose(im)  # phone photos store their rotation in EXIF
            return to_rgb(upright).copy() if upright.mode == "RGB" else to_rgb(upright)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        raise CorruptImageError(where, f"{type(e).__name__}: {e}") from None


def hash_fraction(key: str, salt: str = "vimtool-split") -> float:
    """A stable number in [0, 1) for `key` (md5, so it is the same on every machine and Python run)."""
    h = hashlib.md5(f"{salt}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0**64


def val_interval(val_fraction: float, fold: int = 0) -> tuple[float, float]:
    """The hash range [lo, hi) of fold `fold`'s `val` items: [fold * val_fraction, (fold + 1) * val_fraction).

    Folds 0 .. floor(1 / val_fraction) - 1 are disjoint, so k-fold cross-validation (val_fraction = 1/k) holds
    every item out exactly once. Fold 0 is [0, val_fraction): bit for bit the split of every earlier version."""
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        if not (isinstance(fold, float) and fold.is_integer()):
            raise VimtoolError(f"fold must be a whole number, got {fold!r}; use 0 .. {_last_fold(val_fraction)}")
        fold = int(fold)
    if fold == 0:
        return 0.0, val_fraction
    if not 0 < val_fraction <= 1:
        raise VimtoolError(f"fold {fold} needs a val_fraction in (0, 1], got {val_fraction}")
    if fold < 0 or (fold + 1) * val_fraction > 1 + 1e-9:
        raise VimtoolError(
            f"fold {fold} does not exist at val_fraction {val_fraction}; use 0 .. {_last_fold(val_fraction)}"
        )
    hi = (fold + 1) * val_fraction
    # the last fold of 1/k reaches 1 exactly, so rounding (3 * 0.3333... < 1) leaves no item out of every fold
    return fold * val_fraction, 1.0 if hi > 1 - 1e-9 else hi


def _last_fold(val_fraction: float) -> int:
    return max(0, math.floor(1 / val_fraction + 1e-9) - 1) if val_fraction > 0 else 0


def split_mask(keys: list[str], split: str, val_fraction: float, fold: int = 0) -> np.ndarray:
    """Bool mask over items for `split` in train/val/all, by hash of each item's stable key: `val` is fold
    `fold` of width `val_fraction` (see `val_interval`), `train` the rest, `all` everything."""
    lo, hi = val_interval(val_fraction, fold)  # checked for every split: a bad fold is an error, not ignored
    if split == "all":
        return np.ones(len(keys), dtype=bool)
    if split not in ("train", "val"):
        raise VimtoolError(f"split {split!r} does not exist here; use train, val or all")
    h = np.array([hash_fraction(k) for k in keys], dtype=np.float64)
    is_val = (h >= lo) & (h < hi)
    return is_val if split == "val" else ~is_val


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise VimtoolError(f"rank {rank} / world_size {world_size}: need world_size >= 1 and 0 <= rank < world_size")


class ImageSource:
    """Common attributes; see the module docstring."""

    streaming = False

    def __init__(
        self,
        spec: str,
        *,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        has_captions: bool = False,
        strict: bool = False,
    ):
        self.spec = spec
        self.num_classes = num_classes
        self.class_names = class_names
        self.has_captions = has_captions
        self.strict = strict
        self.skipped = 0
        self._bad: set = set()

    def _corrupt(self, key, err: CorruptImageError) -> None:
        if self.strict:
            raise VimtoolError(f"corrupt image {err.where} ({err.why}); remove it, or drop --strict to skip such files")
        if key not in self._bad:
            self._bad.add(key)
            self.skipped += 1
            if self.skipped == 1:  # say it once now (training may never reach "the end"); the count comes later
                log.warning("skipping corrupt image %s (%s); further ones are counted", err.where, err.why)
            else:
                log.debug("skipping corrupt image %s (%s)", err.where, err.why)

    def report_skipped(self) -> None:
        """Log one warning with the number of corrupt images skipped so far (nothing if none)."""
        if self.skipped:
            log.warning(
                "%s: skipped %d corrupt or truncated image(s); use --strict to stop at the first one",
                self.spec,
                self.skipped,
            )

    def __iter__(self) -> Iterator[Example]:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = "streaming" if self.streaming else f"{len(self)} examples"  # type: ignore[arg-type]
        return f"{type(self).__name__}({self.spec!r}, {kind}, classes={self.num_classes}, captions={self.has_captions})"


class MapSource(ImageSource):
    """Random-access source over raw items `0 .. n-1` of which `indices` are selected (split, limit, rank)."""

    def __init__(
        self,
        spec: str,
        indices: np.ndarray | range,
        *,
        limit: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        **kw,
    ):
        super().__init__(spec, **kw)
        check_rank(rank, world_size)
        idx = np.asarray(indices, dtype=np.int64)
        if limit is not None:
            if limit < 0:
                raise VimtoolError(f"limit must be >= 0, got {limit}")
            idx = idx[:limit]
        self.indices = idx[rank::world_size]
        if len(self.indices) == 0:
            raise VimtoolError(
                f"data {spec!r} is empty (after split/limit/rank selection); check the spec, the split and --n"
            )

    def _load(self, raw_index: int) -> Example:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Example:
        n = len(self.indices)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} examples")
        i %= n
        for step in range(n):
            raw = int(self.indices[(i + step) % n])
            try:
                return self._load(raw)
            except CorruptImageError as e:
                self._corrupt(raw, e)
        raise VimtoolError(f"data {self.spec!r}: every image is corrupt or unreadable; check the files")

    def __iter__(self) -> Iterator[Example]:
        good = 0
        for raw in self.indices:
            try:
                ex = self._load(int(raw))
            except CorruptImageError as e:
                self._corrupt(int(raw), e)
                continue
            good += 1
            yield ex
        self.report_skipped()
        if good == 0:
            raise VimtoolError(f"data {self.spec!r}: every image is corrupt or unreadable; check the files")


class StreamSource(ImageSource):
    """Iterable-only source. `make_iter()` yields `(key, loader)` pairs (loader() -> Example, may raise
    CorruptImageError) or plain Examples; the first `limit` are taken, then every `world_size`-th from `rank`."""

    streaming = True

    def __init__(
        self,
        spec: str,
        make_iter: Callable[[], Iterator],
        *,
        limit: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        **kw,
    ):
        super().__init__(spec, **kw)
        check_rank(rank, world_size)
        self._make_iter = make_iter
        self.limit = limit
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[Example]:
        it = self._make_iter()
        if self.limit is not None:
            it = itertools.islice(it, self.limit)
        it = itertools.islice(it, self.rank, None, self.world_size)
        good = 0
        for item in it:
            if isinstance(item, Example):
                good += 1
                yield item
                continue
            key, loader = item
            try:
                ex = loader()
            except CorruptImageError as e:
                self._corrupt(key, e)
                continue
            good += 1
            yield ex
        self.report_skipped()
        if good == 0:
            raise VimtoolError(f"data {self.spec!r} yielded no examples (empty, or every image corrupt); check it")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec!r}, streaming, classes={self.num_classes}, captions={self.has_captions})"
        )
