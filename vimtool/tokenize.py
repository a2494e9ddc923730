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

Resumable: shard k of a rank always holds the same examples (``rows_per_shard / copies`` consecutive ones of
the rank's slice), every shard is written to a temporary name and renamed, so a shard file exists only when
complete. A rerun skips the shards that exist and writes the rest: never a duplicate, never a half shard.
``tokenize.json`` in the folder records the settings; rerunning into it with different settings (another
tokenizer, data, flip, shard size or process count) is an error instead of a silent mix.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vimtool.atomic import clean_leftovers, write_json
from vimtool.checkpoint import load_model, tokenizer_identity
from vimtool.data import open_source
from vimtool.data.shards import ShardWriter, TokenizerIdentity
from vimtool.data.transforms import resize_center_crop, to_tensor, translate
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

MANIFEST = "tokenize.json"
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


def _chunks_of_stream(source, per_shard: int) -> Iterator[tuple[int, list]]:
    chunk: list = []
    k = 0
    for ex in source:
        chunk.append(ex)
        if len(chunk) == per_shard:
            yield k, chunk
            k, chunk = k + 1, []
    if chunk:
        yield k, chunk


class _OffsetWriter:
    """Builds one `ShardWriter` per shard whose file is the rank's shard number k (fixed by the examples)."""

    def __init__(self, folder: Path, identity, rows: int, prefix: str, rank: int) -> None:
        class _At(ShardWriter):
            def __init__(self, k: int) -> None:
                super().__init__(folder, identity, rows_per_shard=rows + 1, prefix=prefix, rank=rank)
                self.k = k

            def path_for(self, _: int) -> Path:  # every row of this writer belongs to shard k
                return super().path_for(self.k)

        self.make = _At

    def path(self, k: int) -> Path:
        return self.make(k).path_for(0)


def _check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != manifest:
            diff = sorted(k for k in set(manifest) | set(old or {}) if (old or {}).get(k) != manifest.get(k))
            raise VimtoolError(
                f"{folder} holds shards written with other settings ({', '.join(diff)} differ); "
                "rerun with the same settings to resume, or choose a new --out folder"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest, sort_keys=True)  # every rank writes the same content: the race is harmless


def tokenize_dataset(cfg: TokenizeConfig) -> list[Path]:
    """Tokenize ``cfg.data`` into shards in ``cfg.out``; returns this process's shard paths (finished earlier
    ones included), in order."""
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
    if cfg.shifts:  # only then, so folders written before shifts existed still resume
        manifest.update(shifts=cfg.shifts, max_shift=cfg.max_shift)
        if cfg.max_shift >= size:
            raise VimtoolError(f"--max-shift {cfg.max_shift} would move {size}x{size} images out of their frame")
    _check_manifest(folder, manifest)
    # A shard a killed run was writing is a temp file (atomic.py); only rank r writes rank r's shards, so each rank
    # clears its own (a rank still writing on another host is never touched).
    clean_leftovers(folder, pattern=f"{cfg.prefix}-r{rank:03d}-*")

    source = open_source(cfg.data, split=cfg.split, limit=cfg.limit, rank=rank, world_size=world)
    per_shard = cfg.rows_per_shard // copies  # examples per shard
    writer = _OffsetWriter(folder, identity, per_shard * copies, cfg.prefix, rank)
    total = len(source) if hasattr(source, "__len__") and not getattr(source, "streaming", False) else None
    if total is not None:
        n_shards = (total + per_shard - 1) // per_shard
        chunks: Iterator[tuple[int, Any]] = (
            (k, range(k * per_shard, min(total, (k + 1) * per_shard))) for k in range(n_shards)
        )
    else:
        chunks = _chunks_of_stream(source, per_shard)

    bar = tqdm(total=total, desc=f"tokenize r{rank}" if world > 1 else "tokenize", unit="img", file=sys.stderr,
               dynamic_ncols=True, disable=not cfg.progress or not state.is_local_main_process)  # fmt: skip
    paths: list[Path] = []
    skipped = 0
    for k, chunk in chunks:
        target = writer.path(k)
        if target.is_file():  # finished by an earlier run (files appear only complete)
            paths.append(target)
            skipped += 1
            bar.update(len(chunk))
            continue
        w = writer.make(k)
        examples = (source[i] for i in chunk) if isinstance(chunk, range) else iter(chunk)
        while True:
            batch = [ex for _, ex in zip(range(cfg.batch_size), examples)]
            if not batch:
                break
            x = torch.stack([to_tensor(resize_center_crop(ex.image, size)) for ex in batch]).to(device)  # (B, 3, S, S)
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
            bar.update(len(batch))
        written = w.close()
        paths.extend(written)
    bar.close()
    if skipped:
        log.info(
            "rank %d: %d finished shard(s) kept from an earlier run, %d written now",
            rank,
            skipped,
            len(paths) - skipped,
        )
    if getattr(source, "skipped", 0):
        log.warning("rank %d: skipped %d corrupt image(s)", rank, source.skipped)
    return paths
