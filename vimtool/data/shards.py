"""Token shards: Parquet files of tokenized images, one row per image (docs/ARCHITECTURE.md).

Columns: `tokens` list<uint16> (the grid's ids in raster order), `label` int32 (null if none), `caption`
string (null if none), `source_id` string, `tokenizer` string (the identity JSON, the same on every row). File
metadata key `vimtool` holds JSON `{"format": 1, "identity": {name, sha256, codebook_size, grid: [h, w],
image_size}, "vocab_size", "grid", "rows"}`. Any Parquet tool reads them; `datasets.load_dataset("parquet",
data_files=...)` gives `tokens` as a sequence of uint16. `datasets` drops the file metadata when it writes
(`to_parquet`, `save_to_disk`, `push_to_hub`); the `tokenizer` column survives, and readers fall back to it. So
the readers below take Parquet files, the Arrow files of `save_to_disk` folders (a DatasetDict's `train` split),
and Hub dataset ids `user/name[:split]` (`vimtool.data.hub.resolve_shard_spec`).

- `TokenizerIdentity(name, sha256, codebook_size, grid, image_size)`: `.to_dict()`, `.from_dict(d)`.
- `ShardWriter(folder, identity, rows_per_shard=10_000, prefix="shard", rank=0, extra_metadata=None)`: `.add(tokens, label=None,
  caption=None, source_id="")`, `.add_batch(tokens (B, T), labels, captions, source_ids)`, `.close() ->
  list[Path]` (also a context manager). Files are `{prefix}-r{rank:03d}-{k:05d}.parquet`, each written to a
  temporary name and renamed, so a crash never leaves a half-written shard under a real name.
  To resume an interrupted run: `finished_shards(folder, identity, prefix, rank)` lists the complete shards
  already there (and their rows); skip that many input rows and pass `start_shard=len(finished)`.
- `read_shard_metadata(path) -> dict` (`identity` as a TokenizerIdentity, `vocab_size`, `grid`, `rows`, and the
  writer's `extra_metadata` keys: tokenize-dataset adds `class_names` when the source names its labels).
- `load_token_table(paths) -> (tokens LongTensor (N, T), labels LongTensor (N,) with -1 for none,
  captions list[str | None], identity)`: everything in memory, for small/medium sets.
- `read_source_ids(paths) -> list[str]`: the `source_id` column of every row, in `load_token_table`'s order.
- `held_out_rows(source_ids, fraction) -> BoolTensor (N,)`: THE train/validation split of every command that
  holds rows out (train-lm, train-t2i, probe): a row is held out when a stable hash of its source id falls below
  `fraction` (see the function for why and for the details).
- `tokenizer_record(identity, path=None) -> dict`: how a stage-2 checkpoint records the tokenizer of its shards.
- `TokenShardReader(paths, rank=0, world_size=1, shuffle_buffer=0, seed=0, start=0)`: streams rows as dicts
  `{tokens: LongTensor (T,), label: int (-1 if none), caption: str | None, source_id: str}`. Rows are numbered
  globally in path order; rank r takes rows r, r + world_size, ... (no overlap, no loss). A shuffle buffer
  of size B mixes the rank's stream deterministically (seed). `.position` counts the rows this reader's
  stream has produced (including `start`); `TokenShardReader(..., start=reader.position)` continues
  exactly where it stopped, with the same order.

Errors (VimtoolError naming the file): truncated or non-Parquet file; Parquet without our metadata ("not a
vimtool token shard"); shards from two different tokenizers in one list; an empty list. Checked when a shard is
read, before anything is sized from it: token ids below the tokenizer's codebook size, labels in [0, MAX_CLASSES)
or null, codebook size and grid in range.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimtool.atomic import atomic_path
from vimtool.errors import VimtoolError

META_KEY = b"vimtool"
FORMAT_VERSION = 1
# The identity again as a column, the same JSON on every row: `datasets` drops Parquet schema metadata in
# `to_parquet`, `save_to_disk` and `push_to_hub` (and keeps no feature ids or description through them all), while a
# column survives every round trip, `map` and `filter` included. Parquet dictionary-encodes it: a few bytes per file.
IDENTITY_COLUMN = "tokenizer"
# Files a shard set may consist of: our Parquet shards, or the Arrow files of `Dataset.save_to_disk` / the datasets cache.
SHARD_SUFFIXES = (".parquet", ".arrow")

# Labels are class ids (ImageNet-21k has 21,843). A larger one is a corrupt shard, and believing it would size a
# class-embedding table of that many rows (label 2,000,000,000: a 256 GB table) before anything else failed.
MAX_CLASSES = 1 << 20


@dataclass(frozen=True)
class TokenizerIdentity:
    """Which tokenizer made the tokens; stage-2 models store it and refuse any other (ARCHITECTURE.md)."""

    name: str
    sha256: str
    codebook_size: int
    grid: tuple[int, int]
    image_size: int

    @property
    def num_tokens(self) -> int:
        return int(self.grid[0]) * int(self.grid[1])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "codebook_size": int(self.codebook_size),
            "grid": [int(self.grid[0]), int(self.grid[1])],
            "image_size": int(self.image_size),
        }

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerIdentity:
        try:
            return cls(
                str(d["name"]),
                str(d["sha256"]),
                int(d["codebook_size"]),
                (int(d["grid"][0]), int(d["grid"][1])),
                int(d["image_size"]),
            )
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise VimtoolError(
                f"tokenizer identity {d!r} is incomplete ({e}); it needs name, sha256, "
                "codebook_size, grid [h, w] and image_size"
            ) from None


def identity_json(identity: TokenizerIdentity) -> str:
    """The identity as the compact JSON string stored in the `tokenizer` column (keys sorted: one spelling)."""
    return json.dumps(identity.to_dict(), sort_keys=True, separators=(",", ":"))


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("tokens", pa.list_(pa.uint16())),
            ("label", pa.int32()),
            ("caption", pa.string()),
            ("source_id", pa.string()),
            (IDENTITY_COLUMN, pa.string()),
        ]
    )


class ShardWriter:
    """Buffers rows and writes a Parquet shard every `rows_per_shard` rows (see the module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        identity: TokenizerIdentity,
        rows_per_shard: int = 10_000,
        prefix: str = "shard",
        rank: int = 0,
        start_shard: int = 0,
        extra_metadata: dict | None = None,
    ):
        if identity.codebook_size > 65536:
            raise VimtoolError(f"codebook size {identity.codebook_size} does not fit uint16 tokens (max 65536)")
        if rows_per_shard < 1:
            raise VimtoolError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.rows_per_shard = int(rows_per_shard)
        self.prefix, self.rank = prefix, int(rank)
        self.T = identity.num_tokens
        self.written: list[Path] = []
        self.start_shard = int(start_shard)
        self.extra_metadata = dict(extra_metadata or {})  # e.g. the source's class_names, kept beside our keys
        self._rows_written = 0
        self._tokens: list[np.ndarray] = []
        self._labels: list[int | None] = []
        self._captions: list[str | None] = []
        self._ids: list[str] = []
        self._closed = False

    def path_for(self, k: int) -> Path:
        return self.folder / f"{self.prefix}-r{self.rank:03d}-{k:05d}.parquet"

    @property
    def rows_written(self) -> int:
        """Rows in finished shards of this writer (buffered rows not included)."""
        return self._rows_written

    def _check(self, t: np.ndarray) -> np.ndarray:
        if t.shape[-1] != self.T:
            raise VimtoolError(
                f"token rows have {t.shape[-1]} ids but the tokenizer grid {self.identity.grid} needs {self.T}"
            )
        if t.size and (t.min() < 0 or t.max() >= self.identity.codebook_size):
            raise VimtoolError(f"token ids must lie in [0, {self.identity.codebook_size}); got {t.min()}..{t.max()}")
        return t.astype(np.uint16)

    def add(self, tokens, label: int | None = None, caption: str | None = None, source_id: str = "") -> None:
        t = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        self.add_batch(t.reshape(1, -1), [label], [caption], [source_id])

    def add_batch(
        self,
        tokens,
        labels: Sequence[int | None] | None = None,
        captions: Sequence[str | None] | None = None,
        source_ids: Sequence[str] | None = None,
    ) -> None:
        """Add B rows at once: tokens (B, T) or (B, h, w); labels/captions/ids lists of length B (or None)."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        t = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        t = self._check(t.reshape(t.shape[0], -1))  # (B, T)
        b = t.shape[0]
        labels = list(labels) if labels is not None else [None] * b
        captions = list(captions) if captions is not None else [None] * b
        source_ids = list(source_ids) if source_ids is not None else [""] * b
        if not len(labels) == len(captions) == len(source_ids) == b:
            raise ValueError("add_batch: tokens, labels, captions and source_ids need the same length")
        for i in range(b):
            self._tokens.append(t[i])
            self._labels.append(None if labels[i] is None or int(labels[i]) < 0 else int(labels[i]))
            self._captions.append(captions[i])
            self._ids.append(str(source_ids[i]))
            if len(self._tokens) >= self.rows_per_shard:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(self._tokens)
        if n == 0:
            return
        flat = np.stack(self._tokens).reshape(-1)  # (n * T,)
        offsets = np.arange(0, (n + 1) * self.T, self.T, dtype=np.int32)
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.uint16()))
        table = pa.Table.from_arrays(
            [
                tokens,
                pa.array(self._labels, type=pa.int32()),
                pa.array(self._captions, type=pa.string()),
                pa.array(self._ids, type=pa.string()),
                pa.array([identity_json(self.identity)] * n, type=pa.string()),
            ],
            schema=_schema(),
        )
        meta = {
            **self.extra_metadata,
            "format": FORMAT_VERSION,
            "identity": self.identity.to_dict(),
            "vocab_size": int(self.identity.codebook_size),
            "grid": list(self.identity.grid),
            "rows": n,
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
        path = self.path_for(self.start_shard + len(self.written))
        with atomic_path(path) as tmp:  # readers never see a partial shard under its real name
            pq.write_table(table, tmp, compression="zstd")
        self.written.append(path)
        self._rows_written += n
        self._tokens, self._labels, self._captions, self._ids = [], [], [], []

    def close(self) -> list[Path]:
        """Write the last (partial) shard; return every shard path written, in order."""
        if not self._closed:
            self._flush()
            self._closed = True
        return list(self.written)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # an error mid-run: keep the finished shards, drop the buffer (never a half shard)
            self._closed = True


# --- reading -------------------------------------------------------------------------------------------------------


class _ShardFile:
    """One shard file, Parquet or Arrow stream (what `datasets` writes), behind one small reading interface."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not path.is_file():
            raise VimtoolError(f"token shard {path} does not exist")
        self.path = path
        self._parquet = path.suffix.lower() != ".arrow"
        try:
            if self._parquet:
                self._pf = pq.ParquetFile(path)
                self.schema, self.num_rows = self._pf.schema_arrow, self._pf.metadata.num_rows
            else:
                with pa.memory_map(str(path)) as source:
                    self.schema = pa.ipc.open_stream(source).schema
                self.num_rows = sum(b.num_rows for b in self.iter_batches(1 << 16, [self.schema.names[0]]))
        except Exception as e:
            kind = "Parquet" if self._parquet else "Arrow"
            raise VimtoolError(
                f"{path} is not a readable {kind} file (truncated or not {kind}: "
                f"{' '.join(str(e).split())[:120]}); re-create it"
            ) from None

    def read(self, columns: list[str]):
        import pyarrow as pa

        if self._parquet:
            return self._pf.read(columns=columns)
        batches = list(self.iter_batches(1 << 16, columns))
        return pa.Table.from_batches(batches) if batches else self.schema.empty_table().select(columns)

    def iter_batches(self, batch_size: int, columns: list[str]):
        import pyarrow as pa

        if self._parquet:
            yield from self._pf.iter_batches(batch_size=batch_size, columns=columns)
            return
        with pa.memory_map(str(self.path)) as source:
            for batch in pa.ipc.open_stream(source):
                yield batch.select(columns)

    def column_values(self, name: str) -> set:
        """The distinct values of a column; from Parquet statistics when every row group has min == max."""
        if self._parquet:
            md = self._pf.metadata
            leaves = [md.schema.column(k).path for k in range(md.num_columns)]  # Parquet numbers leaf columns
            j = leaves.index(name) if name in leaves else None
            stats = [md.row_group(i).column(j).statistics for i in range(md.num_row_groups)] if j is not None else []
            if stats and all(st is not None and st.has_min_max and st.min == st.max for st in stats):
                return {st.min for st in stats}
        return set(self.read([name]).column(0).unique().to_pylist())


def read_shard_metadata(path: str | Path) -> dict:
    """The metadata of one shard: {identity: TokenizerIdentity, vocab_size, grid, rows, format}.

    From the file's `vimtool` metadata when present (shards as tokenize-dataset wrote them), else from the
    `tokenizer` column (shards that went through `datasets`: to_parquet, save_to_disk, push_to_hub)."""
    path = Path(path)
    sf = _ShardFile(path)
    raw = (sf.schema.metadata or {}).get(META_KEY)
    if raw is not None:
        try:
            meta = json.loads(raw)
        except ValueError:
            raise VimtoolError(f"{path}: its vimtool metadata is not JSON; re-create the shard") from None
        meta["identity"] = TokenizerIdentity.from_dict(meta.get("identity") or {})
    elif IDENTITY_COLUMN in sf.schema.names:
        values = sf.column_values(IDENTITY_COLUMN) - {None}
        if len(values) != 1:
            raise VimtoolError(
                f"{path}: its '{IDENTITY_COLUMN}' column names {len(values)} tokenizers; a shard set holds the "
                "tokens of exactly one tokenizer"
            )
        try:
            identity = TokenizerIdentity.from_dict(json.loads(values.pop()))
        except (ValueError, AttributeError):
            raise VimtoolError(f"{path}: its '{IDENTITY_COLUMN}' column is not identity JSON; re-create it") from None
        meta = {"format": FORMAT_VERSION, "identity": identity, "vocab_size": identity.codebook_size,
                "grid": list(identity.grid)}  # fmt: skip
    else:
        raise VimtoolError(
            f"{path} is not a vimtool token shard (no 'vimtool' metadata or '{IDENTITY_COLUMN}' column); make "
            "shards with vimtool tokenize-dataset"
        )
    ident = meta["identity"]
    if not 2 <= ident.codebook_size <= 65536 or min(ident.grid) < 1:
        raise VimtoolError(
            f"{path}: its metadata says {ident.codebook_size} codes and grid {ident.grid}; uint16 shards hold 2..65536 "
            "codes on a grid of at least 1x1: the shard is corrupt, re-create it"
        )
    meta["rows"] = sf.num_rows
    return meta


def _resolve(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise VimtoolError("no token shards given; pass shard files, a folder, a glob or '-' (paths on stdin)")
    from vimtool.data.hub import resolve_shard_spec
    from vimtool.pipes import expand_paths

    # a Hub dataset id or a `save_to_disk` DatasetDict folder becomes the files it stands for
    return expand_paths([str(p) for p in paths], SHARD_SUFFIXES, "token shard", resolve=resolve_shard_spec)


def _common_identity(files: list[Path]) -> tuple[TokenizerIdentity, list[int]]:
    first, rows = None, []
    for f in files:
        meta = read_shard_metadata(f)
        if first is None:
            first = (f, meta["identity"])
        elif meta["identity"] != first[1]:
            a, b = first[1], meta["identity"]
            raise VimtoolError(
                f"shards from two different tokenizers: {first[0]} ({a.name}, {a.sha256[:12]}) and "
                f"{f} ({b.name}, {b.sha256[:12]}); use shards of one tokenizer per run"
            )
        rows.append(int(meta["rows"]))
    return first[1], rows


def _tokens_of(column, n: int, T: int, where: Path) -> np.ndarray:
    """A list<uint16> column of n rows -> (n, T) uint16, checking every row has T ids."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    if n and not np.all(np.diff(offsets) == T):
        raise VimtoolError(f"{where}: token rows of unequal length (expected {T} per row); re-create the shard")
    values = arr.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[0] + n * T]
    return values.reshape(n, T)  # (n, T)


def _checked_tokens(tokens: np.ndarray, identity: TokenizerIdentity, where: Path) -> np.ndarray:
    """Refuse ids the tokenizer does not have: caught here, not as an index error mid-training."""
    if tokens.size and int(tokens.max()) >= identity.codebook_size:
        raise VimtoolError(
            f"{where}: token id {int(tokens.max())} is out of range for the tokenizer's {identity.codebook_size} codes; "
            "the shard is corrupt or its metadata wrong: re-create it with tokenize-dataset"
        )
    return tokens


def _checked_labels(column, where: Path) -> np.ndarray:
    """A label column -> int64 with -1 for none, refusing negative ids (which would train as "no label" silently)
    and ids of MAX_CLASSES or more."""
    raw = column.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN
    present = ~np.isnan(raw)
    if present.any():
        lo, hi = raw[present].min(), raw[present].max()
        if lo < 0 or hi >= MAX_CLASSES:
            raise VimtoolError(
                f"{where}: label {int(lo if lo < 0 else hi)} is out of range: labels are class ids in "
                f"[0, {MAX_CLASSES}), null for none; re-create the shard"
            )
    return np.where(present, raw, -1).astype(np.int64)


def load_token_table(paths) -> tuple[torch.Tensor, torch.Tensor, list[str | None], TokenizerIdentity]:
    """Every row of the shards in memory: (tokens (N, T) int64, labels (N,) int64 with -1 = none, captions,
    identity)."""
    files = _resolve(paths)
    identity, rows = _common_identity(files)
    T = identity.num_tokens
    toks, labels, captions = [], [], []
    for f, n in zip(files, rows):
        try:
            table = _ShardFile(f).read(["tokens", "label", "caption"])
        except Exception as e:
            raise VimtoolError(f"{f}: cannot read token columns ({' '.join(str(e).split())[:120]})") from None
        toks.append(_checked_tokens(_tokens_of(table.column("tokens"), n, T, f), identity, f))
        labels.append(_checked_labels(table.column("label"), f))
        captions.extend(table.column("caption").to_pylist())
    tokens = torch.from_numpy(np.concatenate(toks).astype(np.int64))  # (N, T)
    label_t = torch.from_numpy(np.concatenate(labels).astype(np.int64))  # (N,)
    if tokens.shape[0] == 0:
        raise VimtoolError(f"the token shards hold no rows: {', '.join(map(str, files[:3]))}")
    return tokens, label_t, captions, identity


def _buffer_order(n: int, buffer: int, rng: random.Random) -> list[int]:
    """The output order of a shuffle buffer over items 0..n-1 (it depends on counts only, not on the data)."""
    if buffer <= 1:
        return list(range(n))
    out, buf = [], []
    for i in range(n):
        if len(buf) < buffer:
            buf.append(i)
            continue
        j = rng.randrange(buffer)
        out.append(buf[j])
        buf[j] = i
    rng.shuffle(buf)
    out.extend(buf)
    return out


class TokenShardReader:
    """Streams shard rows for one rank, optionally buffer-shuffled, resumable at an exact position."""

    def __init__(
        self,
        paths,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 0,
        seed: int = 0,
        start: int = 0,
        batch_rows: int = 4096,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise VimtoolError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")
        self.files = _resolve(paths)
        self.identity, self.rows = _common_identity(self.files)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle_buffer, self.seed = int(shuffle_buffer), int(seed)
        self.start = int(start)
        self.batch_rows = int(batch_rows)
        self.total = sum(self.rows)
        if self.total == 0:
            raise VimtoolError(f"the token shards hold no rows: {', '.join(map(str, self.files[:3]))}")
        self._n_local = len(range(self.rank, self.total, self.world_size))
        if not 0 <= self.start <= self._n_local:
            raise VimtoolError(f"start {self.start} is outside this rank's {self._n_local} rows")
        self.position = self.start

    def __len__(self) -> int:
        """Rows this rank's stream has in all (including those before `start`)."""
        return self._n_local

    def __iter__(self) -> Iterator[dict]:
        order = _buffer_order(self._n_local, self.shuffle_buffer, random.Random(f"shards|{self.seed}|{self.rank}"))
        out_pos = np.empty(self._n_local, dtype=np.int64)
        out_pos[np.asarray(order, dtype=np.int64)] = np.arange(self._n_local)  # local row -> output slot
        wanted = order[self.start :]  # local rows still to produce, in output order
        if not wanted:
            return
        T = self.identity.num_tokens
        pending: dict[int, dict] = {}
        emit = 0  # index into `wanted`
        offset = 0  # global index of the first row of the current file
        for f, n in zip(self.files, self.rows):
            # local rows of this rank inside the file: global g = offset + r with g % world_size == rank
            first_g = offset + ((self.rank - offset) % self.world_size)
            local_lo = (first_g - self.rank) // self.world_size
            local_rows = range(local_lo, local_lo + len(range(first_g, offset + n, self.world_size)))
            offset += n
            if not len(local_rows) or out_pos[local_rows.start : local_rows.stop].max() < self.start:
                continue  # everything this file gives us was produced before `start`
            g = offset - n
            for batch in _ShardFile(f).iter_batches(self.batch_rows, ["tokens", "label", "caption", "source_id"]):
                b = batch.num_rows
                gs = np.arange(g, g + b)
                g += b
                mine = np.flatnonzero(gs % self.world_size == self.rank)
                if not len(mine):
                    continue
                locs = (gs[mine] - self.rank) // self.world_size
                keep = out_pos[locs] >= self.start
                if not keep.any():
                    continue
                toks = _checked_tokens(_tokens_of(batch.column(0), b, T, f), self.identity, f)
                labels = _checked_labels(batch.column(1), f)
                caps = batch.column(2).to_pylist()
                ids = batch.column(3).to_pylist()
                for r, loc, k in zip(mine, locs, keep):
                    if k:
                        pending[int(loc)] = {
                            "tokens": torch.from_numpy(toks[r].astype(np.int64)),
                            "label": int(labels[r]),
                            "caption": caps[r],
                            "source_id": ids[r],
                        }
                while emit < len(wanted) and wanted[emit] in pending:
                    self.position += 1
                    yield pending.pop(wanted[emit])
                    emit += 1
        while emit < len(wanted):  # pragma: no cover - every wanted row was read above
            self.position += 1
            yield pending.pop(wanted[emit])
            emit += 1


def finished_shards(
    folder: str | Path, identity: TokenizerIdentity, prefix: str = "shard", rank: int = 0
) -> tuple[list[Path], int]:
    """Complete shards a previous run of `ShardWriter(folder, identity, prefix=prefix, rank=rank)` left, in
    order and without gaps, and their total rows. A shard of another tokenizer there is an error."""
    folder = Path(folder)
    found, rows = [], 0
    k = 0
    while True:
        path = folder / f"{prefix}-r{rank:03d}-{k:05d}.parquet"
        if not path.is_file():
            break
        meta = read_shard_metadata(path)
        if meta["identity"] != identity:
            raise VimtoolError(
                f"{path} was made by another tokenizer ({meta['identity'].name}, "
                f"{meta['identity'].sha256[:12]}); write to an empty folder"
            )
        found.append(path)
        rows += int(meta["rows"])
        k += 1
    return found, rows


def shard_paths_of(paths: Iterable) -> list[Path]:
    """Resolve paths / globs / folders / '-' / Hub dataset ids to the shard files (sorted, de-duplicated)."""
    return _resolve(list(paths))


# --- the one train/validation split ---------------------------------------------------------------------------------
def read_source_ids(paths) -> list[str]:
    """The `source_id` of every row of the shards, in the order `load_token_table` reads them."""
    return [s for f in _resolve(paths) for s in _ShardFile(f).read(["source_id"]).column(0).to_pylist()]


def _split_key(source_id: str | None, row: int) -> str:
    # tokenize-dataset names augmented copies `<id>#flip` / `<id>#shift+1-2`: everything from the first '#' is a
    # variant of one image, so copies share their original's side and a held-out image is never trained on as a copy
    base = (source_id or "").split("#", 1)[0]
    return base if base else f"#row{row}"  # no source id (shards from other tools): the row's position


def _unit_hash(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone: the same in every process, Python version and machine."""
    return int.from_bytes(hashlib.sha256(f"vimtool-split:{key}".encode()).digest()[:8], "big") / 2.0**64


def held_out_rows(source_ids: Sequence[str | None], fraction: float) -> torch.Tensor:
    """(N,) bool, True = held out for validation: the ONE split of train-lm, train-t2i and probe.

    A row is held out when the hash of its source id (augmentation suffix removed, see `_split_key`) falls below
    `fraction`. Why a hash of the id rather than a seeded permutation: a row's side depends on that row alone --
    not on the other rows, their order, the shard layout or the command -- so train-lm, train-t2i and probe agree
    on which images are held out (probe's held-out rows are ones the LM did not train on when both use the same
    fraction; a smaller fraction's held-out set lies inside a larger one's), adding data never moves an old row
    across, and flipped / shifted copies stay with their original. The count is about `fraction * N` rather than
    exact; at least one image is held out (the lowest hash) so tiny sets still validate. `fraction` 0 holds out
    nothing. An error when nothing would be left to train on."""
    if not 0.0 <= fraction < 1.0:
        raise VimtoolError(f"val_fraction must be in [0, 1), got {fraction}")
    n = len(source_ids)
    if fraction == 0 or n == 0:
        return torch.zeros(n, dtype=torch.bool)
    keys = [_split_key(s, i) for i, s in enumerate(source_ids)]
    u = torch.tensor([_unit_hash(k) for k in keys], dtype=torch.float64)  # (N,)
    held = u < fraction
    if not bool(held.any()):
        held = u == u.min()  # the lowest-hashing image (with its copies)
    if bool(held.all()):
        raise VimtoolError(
            f"only {n} rows: too few to hold out {fraction:.0%} and keep rows to train on; add data or pass --val-shards"
        )
    return held


def tokenizer_record(identity: TokenizerIdentity, path: str | None = None) -> dict:
    """What a stage-2 checkpoint records of its image tokenizer: {"tokenizer": identity, "tokenizer_path": where}.

    `path` (default: the name the shards give it, i.e. what tokenize-dataset was given) is stored ABSOLUTE when it is
    a local path: a relative one would only work from the training run's working directory, and `sample` / `probe`
    are run from anywhere. A Hub id (no such local path) stays as is. The identity's sha256 guards either way."""
    where = str(path or identity.name)
    local = Path(where).expanduser()
    return {"tokenizer": identity.to_dict(), "tokenizer_path": str(local.resolve()) if local.exists() else where}
