"""`vimtool tokenize-dataset`: images -> Parquet token shards for stage 2 (ViT-VQGAN -> VIM / Parti).

    tokenize_dataset(TokenizeConfig(tokenizer=CKPT, data=SPEC, out=DIR, split="train", flip=False,
                                    rows_per_shard=10_000, batch_size=64)) -> [shard paths of this process]

Each image is center-cropped/resized to the tokenizer's image size (the eval transform), encoded to its
h*w token ids, and written with its label, caption and source id through `vimtool.data.shards.ShardWriter`
(tokenizer identity in the file metadata). ``flip`` adds a horizontally flipped copy of every image (row
``source_id + "#flip"``) -- VIM trains on flipped copies as augmentation; captions of flipped copies have the
words left/right swapped so that "a circle on the left" stays true. ``shifts=K`` adds K copies moved by whole
pixels (at most ``max_shift`` per axis, never (0, 0), K distinct offsets per image drawn from its source id, so
every rerun and process count writes the same rows; row ``source_id + "#shift+1-2"`` = 1 right, 2 up), for
digits where a flip changes the class. A small data set then gives the LM more sequences than it can memorise:
on 4,000 MNIST digits, 4 copies of +-2 px raised VIM's linear probe (docs/RESULTS.md). `row_image` maps a row's
source id back to its pixels; `probe` fits on the original rows only.

Multi-process (`accelerate launch ... vimtool tokenize-dataset ...`): rank r of W reads every W-th example
from r (disjoint slices, `open_source(rank=, world_size=)`) and writes its own shards
``{prefix}-r{rank:03d}-{k:05d}.parquet``; together they hold each example exactly once.

In pieces (a cluster array job: ``--num-shards N --shard-index I``, one job per I): piece I takes examples
I, I + N, I + 2N, ... of the split (then its W ranks share them as above: rank r reads every (N*W)-th example
from I + N*r), and names its files ``{prefix}-p{I:05d}of{N:05d}-r{rank:03d}-{k:05d}.parquet``. Pieces are
disjoint, their union is the whole split, and their files never collide, so all N jobs can write one folder.

Resumable: shard k of a rank always covers the same examples (``rows_per_shard / copies`` consecutive ones of
the rank's slice), every shard is written to a temporary name and renamed, so a shard file exists only when
complete. A rerun skips the shards that exist without decoding their images, and writes the rest: never a
duplicate, never a half shard. ``tokenize.json`` in the folder records the settings; rerunning into it with
different settings (another tokenizer, data, flip, shard size, process count or piece count) is an error
instead of a silent mix.

Decoding (with JPEG draft mode, `draft`) runs in `workers` threads (default min(4, cores - 1)), a batch ahead of
the encoder; the rows are the same for every thread count.

A corrupt image is skipped, never replaced: its shard simply holds one row fewer. The skips are logged with
their causes (``skipped 3 corrupt image(s): 2 empty file, 1 truncated``) and recorded in tokenize.json under
``"skipped"``: ``{"total": {cause: n}, "shards": {shard file: {cause: n}}}`` (causes: SKIP_CAUSES in
vimtool/data/examples.py), kept across reruns. When the source names its labels (class sub-folders, a
`ClassLabel`), the names are in every shard's metadata as ``class_names``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import random
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vimtool.atomic import clean_leftovers, write_json
from vimtool.checkpoint import load_model, tokenizer_identity
from vimtool.data import Example, open_source
from vimtool.data.loading import decode_ahead, default_workers
from vimtool.data.shards import ShardWriter, TokenizerIdentity
from vimtool.data.transforms import resize_center_crop, to_tensor, translate
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

MANIFEST = "tokenize.json"
SKIPPED = "skipped"  # tokenize.json's record of skipped images: not a setting, so not compared on resume
_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass
class TokenizeConfig:
    """Settings of `tokenize-dataset`."""

    tokenizer: str = ""  # checkpoint folder or Hub repo id
    data: str = ""  # --data spec
    out: str = ""  # output folder for the shards
    split: str = "train"
    flip: bool = False  # also write a horizontally flipped copy of every image
    shifts: int = 0  # also write this many copies of every image moved by whole pixels (augmentation)
    max_shift: int = 2  # the most pixels (at the tokenizer's image size) a shifted copy moves along each axis
    rows_per_shard: int = 10_000
    batch_size: int = 64
    limit: int | None = None  # only the first N examples of the split
    num_shards: int = 1  # cut the split into this many disjoint pieces (a cluster array job) ...
    shard_index: int = 0  # ... and tokenize piece number I (0 .. num_shards - 1)
    draft: bool = True  # decode JPEGs at a reduced scale that still covers the tokenizer's image size (faster)
    workers: int | None = None  # decode threads; None: min(4, cores - 1) (the rows do not depend on it)
    prefix: str = "shard"
    cpu: bool = False  # force CPU even when a GPU is present
    progress: bool = True


def flip_caption(caption: str | None) -> str | None:
    """Swap the words left/right (keeping case) so a caption stays true for the mirrored image."""
    if not caption:
        return caption

    def swap(m: re.Match) -> str:
        w = m.group(0)
        new = "right" if w.lower() == "left" else "left"
        return new.capitalize() if w[0].isupper() else new

    return _LEFT_RIGHT.sub(swap, caption)


_SHIFT = re.compile(r"#shift([+-]\d+)([+-]\d+)$")


def shift_offsets(source_id: str, shifts: int, max_shift: int) -> list[tuple[int, int]]:
    """The (dx, dy) of an image's `shifts` translated copies: distinct, never (0, 0), drawn from a generator
    seeded by the source id (a str seed hashes the same in every process), so reruns agree row for row."""
    grid = [(dx, dy) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1) if dx or dy]
    return random.Random(f"shift:{source_id}").sample(grid, shifts)


def shift_suffix(dx: int, dy: int) -> str:
    return f"#shift{dx:+d}{dy:+d}"


def original_source_id(source_id: str) -> str:
    """The source id of the image a row was made from (its augmentation suffix removed)."""
    return _SHIFT.sub("", source_id).removesuffix("#flip")


def is_augmented(source_id: str | None) -> bool:
    """Whether a row is a flipped or shifted copy rather than the image as the data holds it."""
    return bool(source_id) and (source_id.endswith("#flip") or _SHIFT.search(source_id) is not None)


def row_image(original: torch.Tensor, source_id: str) -> torch.Tensor:
    """The (3, S, S) pixels a row was encoded from, given its original image: flipped or shifted as its id says."""
    if source_id.endswith("#flip"):
        return torch.flip(original, dims=[2])
    m = _SHIFT.search(source_id)
    return translate(original, int(m.group(1)), int(m.group(2))) if m else original


def _pieces(loaders: Iterator, n: int) -> Iterator[list]:
    """Consecutive lists of n loaders (the last may be shorter)."""
    while chunk := list(itertools.islice(loaders, n)):
        yield chunk


class _OffsetWriter:
    """Builds one `ShardWriter` per shard whose file is the rank's shard number k (fixed by the examples)."""

    def __init__(self, folder: Path, identity, rows: int, prefix: str, rank: int, extra_metadata: dict) -> None:
        class _At(ShardWriter):
            def __init__(self, k: int) -> None:
                super().__init__(folder, identity, rows + 1, prefix=prefix, rank=rank, extra_metadata=extra_metadata)
                self.k = k

            def path_for(self, _: int) -> Path:  # every row of this writer belongs to shard k
                return super().path_for(self.k)

        self.make = _At

    def path(self, k: int) -> Path:
        return self.make(k).path_for(0)


def _check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / MANIFEST
    if path.is_file():
        old = _read_manifest(path)
        settings = {k: v for k, v in (old or {}).items() if k != SKIPPED}
        if old is None or settings != manifest:
            diff = sorted(k for k in set(manifest) | set(settings) if settings.get(k) != manifest.get(k))
            raise VimtoolError(
                f"{folder} holds shards written with other settings ({', '.join(diff)} differ); "
                "rerun with the same settings to resume, or choose a new --out folder"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest, sort_keys=True)  # every rank writes the same content: the race is harmless


def _read_manifest(path: Path) -> dict | None:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def _record_skips(folder: Path, by_shard: dict[str, dict[str, int]]) -> None:
    """Merge this run's skip counts per shard into tokenize.json (earlier runs' shards keep theirs). Pieces of an
    array job finishing at the same instant could race here; the shards themselves never do."""
    path = folder / MANIFEST
    manifest = _read_manifest(path) or {}
    shards = {**manifest.get(SKIPPED, {}).get("shards", {}), **by_shard}
    total: Counter = Counter()
    for counts in shards.values():
        total.update(counts)
    manifest[SKIPPED] = {"total": dict(sorted(total.items())), "shards": dict(sorted(shards.items()))}
    write_json(path, manifest, sort_keys=True)


def tokenize_dataset(cfg: TokenizeConfig) -> list[Path]:
    """Tokenize ``cfg.data`` into shards in ``cfg.out``; returns the shard paths (finished earlier ones included),
    in order: every rank's, rank by rank, when several processes run."""
    # deferred on purpose: accelerate takes ~1 s to import, and importing this module for its configs needs none of it
    from accelerate import PartialState

    if not cfg.tokenizer or not cfg.data or not cfg.out:
        raise VimtoolError("tokenize-dataset needs --tokenizer CKPT, --data SPEC and --out DIR")
    copies = 1 + int(cfg.flip) + cfg.shifts
    if cfg.shifts < 0 or (cfg.shifts and not 0 < cfg.max_shift):
        raise VimtoolError(f"--shifts must be >= 0 and --max-shift >= 1, got {cfg.shifts} and {cfg.max_shift}")
    if cfg.shifts > (2 * cfg.max_shift + 1) ** 2 - 1:
        raise VimtoolError(f"--shifts {cfg.shifts}: +-{cfg.max_shift} px allows only {(2 * cfg.max_shift + 1) ** 2 - 1} "
                           "distinct shifted copies; raise --max-shift or lower --shifts")  # fmt: skip
    if cfg.rows_per_shard < copies:
        raise VimtoolError(
            f"--rows-per-shard must be >= {copies} (each image gives {copies} row(s)), got {cfg.rows_per_shard}"
        )
    if cfg.batch_size < 1:
        raise VimtoolError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.num_shards < 1 or not 0 <= cfg.shard_index < cfg.num_shards:
        raise VimtoolError(
            f"--shard-index must lie in 0 .. --num-shards - 1, got {cfg.shard_index} of {cfg.num_shards}"
        )
    # cpu=True when no GPU exists: under `accelerate launch --multi_gpu` the processes then form a gloo group.
    state = PartialState(cpu=cfg.cpu or not torch.cuda.is_available())
    rank, world = state.process_index, state.num_processes
    device = state.device

    model = load_model(cfg.tokenizer)
    if getattr(model, "model_type", None) != "vitvqgan":
        raise VimtoolError(
            f"{cfg.tokenizer} is a {getattr(model, 'model_type', '?')} checkpoint, not a tokenizer (vitvqgan)"
        )
    model = model.to(device).eval()
    identity = TokenizerIdentity.from_dict(tokenizer_identity(cfg.tokenizer))
    size = model.config.image_size

    folder = Path(cfg.out)
    manifest = {
        "tokenizer_sha256": identity.sha256, "data": cfg.data, "split": cfg.split, "flip": cfg.flip,
        "rows_per_shard": cfg.rows_per_shard, "limit": cfg.limit, "world_size": world, "prefix": cfg.prefix,
    }  # fmt: skip
    if cfg.num_shards > 1:  # only then (as below), so folders written before these settings existed still resume
        manifest["num_shards"] = cfg.num_shards
    if cfg.draft:  # JPEG pixels differ slightly with draft decoding: shards of both kinds must not mix
        manifest["draft"] = True
    if cfg.shifts:  # only then, so folders written before shifts existed still resume
        manifest.update(shifts=cfg.shifts, max_shift=cfg.max_shift)
        if cfg.max_shift >= size:
            raise VimtoolError(f"--max-shift {cfg.max_shift} would move {size}x{size} images out of their frame")
    _check_manifest(folder, manifest)
    # A shard a killed run was writing is a temp file (atomic.py); only rank r writes rank r's shards, so each rank
    # clears its own (a rank still writing on another host is never touched).
    clean_leftovers(folder, pattern=f"{cfg.prefix}-r{rank:03d}-*")

    # piece I of N, then rank r of W inside it: every (N*W)-th example from I + N*r (see the module docstring)
    source = open_source(
        cfg.data,
        split=cfg.split,
        limit=cfg.limit,
        rank=cfg.shard_index + cfg.num_shards * rank,
        world_size=cfg.num_shards * world,
    )
    if cfg.draft:
        source.draft_size = size
    per_shard = cfg.rows_per_shard // copies  # examples per shard
    workers = default_workers() if cfg.workers is None else cfg.workers
    prefix = cfg.prefix if cfg.num_shards == 1 else f"{cfg.prefix}-p{cfg.shard_index:05d}of{cfg.num_shards:05d}"
    names = {"class_names": list(source.class_names)} if source.class_names else {}
    writer = _OffsetWriter(folder, identity, per_shard * copies, prefix, rank, names)
    total = None if source.streaming else len(source)

    bar = tqdm(total=total, desc=f"tokenize r{rank}" if world > 1 else "tokenize", unit="img", file=sys.stderr,
               dynamic_ncols=True, disable=not cfg.progress or not state.is_local_main_process)  # fmt: skip
    paths: list[Path] = []
    kept = 0
    skips: dict[str, dict[str, int]] = {}  # shard file -> {cause: count} of this run
    for k, chunk in enumerate(_pieces(source.lazy(), per_shard)):
        target = writer.path(k)
        if target.is_file():  # finished by an earlier run (files appear only complete): not even decoded
            paths.append(target)
            kept += 1
            bar.update(len(chunk))
            continue
        before = Counter(source.skipped_by_cause)
        w = writer.make(k)
        jobs = (functools.partial(_prepare, load, size) for load in chunk)
        # a corrupt image gives None: skipped, never replaced; the next batch decodes while this one encodes
        items = filter(None, decode_ahead(jobs, workers, window=2 * cfg.batch_size))
        while batch := list(itertools.islice(items, cfg.batch_size)):
            _encode_batch(model, batch, w, cfg, device)
            bar.update(len(batch))
        paths.extend(w.close())
        if new := source.skipped_by_cause - before:
            skips[target.name] = dict(new)
            bar.update(sum(new.values()))
    bar.close()
    if kept:
        log.info(
            "rank %d: %d finished shard(s) kept from an earlier run, %d written now", rank, kept, len(paths) - kept
        )
    if source.skipped:
        log.warning("rank %d: skipped %d corrupt image(s): %s", rank, source.skipped, source.skipped_summary())
    _gather_skips(folder, skips, state)  # every rank, before any may stop: it is a collective
    if not paths:
        raise VimtoolError(
            f"data {cfg.data!r}: no shard written (this selection is empty, or every image in it is corrupt)"
        )
    if world > 1:  # every rank gets every rank's shards, so the main process alone can print (and push) them all
        from accelerate.utils import gather_object

        paths = [Path(p) for p in gather_object([str(p) for p in paths])]
    return paths


def _prepare(load, size: int) -> tuple[Example, torch.Tensor] | None:
    """Decode one example and make its (3, S, S) tensor (in a decode thread); None for a corrupt image."""
    ex = load()
    return None if ex is None else (ex, to_tensor(resize_center_crop(ex.image, size)))


def _encode_batch(model, prepared: list, w, cfg: TokenizeConfig, device) -> None:
    """Encode a batch of (example, tensor) pairs (and flipped / shifted copies); add the rows to the shard writer."""
    batch = [ex for ex, _ in prepared]
    x = torch.stack([t for _, t in prepared]).to(device)  # (B, 3, S, S)
    with torch.inference_mode():
        ids = model.encode(x).cpu()  # (B, h*w)
        flipped = model.encode(torch.flip(x, dims=[3])).cpu() if cfg.flip else None
    labels = [ex.label for ex in batch]
    captions = [ex.caption for ex in batch]
    sids = [ex.source_id for ex in batch]
    w.add_batch(ids, labels, captions, sids)
    if flipped is not None:
        w.add_batch(flipped, labels, [flip_caption(c) for c in captions], [f"{s}#flip" for s in sids])
    offsets = [shift_offsets(s, cfg.shifts, cfg.max_shift) for s in sids] if cfg.shifts else []  # (dx, dy) each
    for k in range(cfg.shifts):
        moved = torch.stack([translate(xi, *off[k]) for xi, off in zip(x, offsets)])
        with torch.inference_mode():
            ids_k = model.encode(moved).cpu()
        w.add_batch(ids_k, labels, captions, [s + shift_suffix(*off[k]) for s, off in zip(sids, offsets)])


def _gather_skips(folder: Path, skips: dict[str, dict[str, int]], state) -> None:
    """Every rank's skip counts -> the main process, which records them in tokenize.json."""
    # deferred on purpose: accelerate takes ~1 s to import (see tokenize_dataset)
    from accelerate.utils import gather_object

    merged: dict[str, dict[str, int]] = {}
    for part in gather_object([skips]) if state.num_processes > 1 else [skips]:
        merged.update(part)
    if state.is_main_process and merged:
        _record_skips(folder, merged)
