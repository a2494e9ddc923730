"""What every image source hands out (`Example`) and the two kinds of source: map-style and streaming.

- `Example(image, label, caption, source_id)`: `image` is an RGB `PIL.Image`, `label` an int class id or None,
  `caption` a str or None, `source_id` a stable string naming where the example came from
  (`shapes/train/17`, `mnist5k/4031`, `cats/001.png`, `data.parquet#12`, `hub:ylecun/mnist/train/5`).
- `MapSource`: `len(src)`, `src[i] -> Example`, iterable. Subclasses give the number of raw items and
  `_load(raw_index)`; the base class selects the split, applies `limit` (the first N of the split) and then
  gives rank `r` of `world_size` the items `r, r + world_size, ...` of that selection (disjoint, and
  together complete).
- `StreamSource`: iterable only (Hub streaming, endless `shapes`), same `limit` then rank slicing.

Corrupt or truncated images raise `CorruptImageError` (with a `cause`: one of `SKIP_CAUSES`) inside `_load`;
the source skips the item and counts it in `.skipped` and `.skipped_by_cause` (iteration logs one warning with
the counts at its end), or raises a `VimtoolError` at once when opened with `strict=True`. A skipped image is
never replaced by another: `src[i]` (= `src.get(i)`) on a corrupt item returns None, iteration leaves it out,
and `src.lazy()` yields one loader per selected item (loader() -> Example | None) so a consumer can cut the
selection into fixed pieces (token shards) and leave a piece it already has undecoded.

`draft_size` (an attribute, None by default): when set to S, JPEGs are decoded in PIL's draft mode at the
smallest 1/1, 1/2, 1/4 or 1/8 scale that keeps both sides >= S (libjpeg scales in the DCT, several times
faster than decoding full size and then shrinking; a consumer that will shrink to S anyway sets it).

Every source has `.spec`, `.num_classes` (int | None), `.class_names` (list | None), `.has_captions`,
`.streaming`, `.skipped`, `.skipped_by_cause`, `.draft_size`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vimtool.data.transforms import to_rgb
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

_COUNT_LOCK = threading.Lock()  # guards the skip counts (a rare path: one lock for every source will do)

# Splits a source without its own splits is cut into, deterministically (hash of a stable key per item).
SPLITS = ("train", "val", "all")


@dataclass
class Example:
    image: Image.Image
    label: int | None
    caption: str | None
    source_id: str


# Why an image was skipped: the keys of `.skipped_by_cause` and of tokenize.json's "skipped" record.
SKIP_CAUSES = {
    "empty": "empty file",
    "truncated": "truncated",
    "not_an_image": "not an image",
    "too_large": "too many pixels (decompression bomb guard)",
    "unreadable": "unreadable file",
    "undecodable": "undecodable",
}


class CorruptImageError(Exception):
    """An image that cannot be decoded (truncated, not an image, bad bytes). Internal: sources turn it into a
    skip (counted by `cause`, a key of SKIP_CAUSES) or, with strict=True, a VimtoolError."""

    def __init__(self, where: str, why: str, cause: str = "undecodable"):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why
        self.cause = cause


def _cause_of(err: BaseException) -> str:
    if isinstance(err, Image.DecompressionBombError):
        return "too_large"
    if isinstance(err, UnidentifiedImageError):
        return "not_an_image"
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return "truncated"
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return "unreadable"
    return "undecodable"


def decode_image(data: bytes | str | Path, where: str, draft_size: int | None = None) -> Image.Image:
    """Decode a file path or encoded bytes fully (so truncation shows now, not later) into RGB. With
    `draft_size`, a JPEG is decoded at a reduced scale that keeps both sides >= draft_size (see the module
    docstring)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        empty = len(data) == 0
        fp = io.BytesIO(data)
    else:
        fp = data
        try:
            empty = Path(data).stat().st_size == 0
        except OSError as e:
            raise CorruptImageError(where, f"{type(e).__name__}: {e}", "unreadable") from None
    if empty:
        raise CorruptImageError(where, "empty file (0 bytes)", "empty")
    im = None
    try:
        im = Image.open(fp)
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (draft_size, draft_size))
        im.load()  # no `with`: closing would free the pixels; load() closes a file it opened itself
        ImageOps.exif_transpose(im, in_place=True)  # phone photos store their rotation in EXIF
        return to_rgb(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        if im is not None:
            im.close()
        raise CorruptImageError(where, f"{type(e).__name__}: {e}", _cause_of(e)) from None


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
        draft_size: int | None = None,
    ):
        self.spec = spec
        self.num_classes = num_classes
        self.class_names = class_names
        self.has_captions = has_captions
        self.strict = strict
        self.draft_size = draft_size
        self.skipped_by_cause: Counter = Counter()
        self._bad: set = set()

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_cause.values())

    def _decode(self, data, where: str) -> Image.Image:
        return decode_image(data, where, self.draft_size)

    def _corrupt(self, key, err: CorruptImageError) -> None:
        if self.strict:
            raise VimtoolError(f"corrupt image {err.where} ({err.why}); remove it, or drop --strict to skip such files")
        with _COUNT_LOCK:  # decode threads may skip at the same moment
            if key in self._bad:
                return
            self._bad.add(key)
            first = not self.skipped_by_cause
            self.skipped_by_cause[err.cause] += 1
        if first:  # say it once now (training may never reach "the end"); the count comes later
            log.warning("skipping corrupt image %s (%s); further ones are counted", err.where, err.why)
        else:
            log.debug("skipping corrupt image %s (%s)", err.where, err.why)

    def skipped_summary(self) -> str:
        """`2 empty file, 1 truncated`: the skip counts by cause, most frequent first ("" if none)."""
        return ", ".join(f"{n} {SKIP_CAUSES.get(c, c)}" for c, n in self.skipped_by_cause.most_common())

    def report_skipped(self) -> None:
        """Log one warning with the number of corrupt images skipped so far, by cause (nothing if none)."""
        if self.skipped:
            log.warning(
                "%s: skipped %d corrupt image(s) (%s); use --strict to stop at the first one",
                self.spec,
                self.skipped,
                self.skipped_summary(),
            )

    def lazy(self) -> Iterator[Callable[[], Example | None]]:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def __iter__(self) -> Iterator[Example]:
        good = 0
        for load in self.lazy():
            ex = load()
            if ex is not None:
                good += 1
                yield ex
        self.report_skipped()
        if good == 0:
            raise VimtoolError(f"data {self.spec!r} yielded no examples (empty, or every image corrupt); check it")

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

    def get(self, i: int) -> Example | None:
        """Example `i` of the selection, or None when its image is corrupt (skipped and counted, never replaced)."""
        n = len(self.indices)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} examples")
        raw = int(self.indices[i])
        try:
            return self._load(raw)
        except CorruptImageError as e:
            self._corrupt(raw, e)
            return None

    __getitem__ = get

    def lazy(self) -> Iterator[Callable[[], Example | None]]:
        return (functools.partial(self.get, i) for i in range(len(self.indices)))


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

    def _guarded(self, key, loader: Callable[[], Example]) -> Example | None:
        try:
            return loader()
        except CorruptImageError as e:
            self._corrupt(key, e)
            return None

    def lazy(self) -> Iterator[Callable[[], Example | None]]:
        it = self._make_iter()
        if self.limit is not None:
            it = itertools.islice(it, self.limit)
        for item in itertools.islice(it, self.rank, None, self.world_size):
            if isinstance(item, Example):
                yield lambda item=item: item
            else:
                yield functools.partial(self._guarded, *item)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec!r}, streaming, classes={self.num_classes}, captions={self.has_captions})"
        )
