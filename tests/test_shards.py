"""Token shards: round trips through our reader and `datasets`, rank sharding, resume, and bad files."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vimtool.data.shards import ShardWriter, TokenizerIdentity, TokenShardReader, load_token_table, read_shard_metadata
from vimtool.errors import VimtoolError

IDENTITY = TokenizerIdentity("vitvqgan-tiny", "a" * 64, 1024, (4, 4), 32)


def _write(folder, n=23, rows_per_shard=7, identity=IDENTITY, seed=0, prefix="shard"):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, identity.codebook_size, (n, identity.num_tokens))
    with ShardWriter(folder, identity, rows_per_shard=rows_per_shard, prefix=prefix) as w:
        for i in range(n):
            w.add(
                torch.from_numpy(tokens[i]) if i % 2 else tokens[i].reshape(identity.grid),
                label=None if i % 5 == 0 else i % 3,
                caption=None if i % 4 == 0 else f"caption {i}",
                source_id=f"img{i}",
            )
    return w.written, tokens


def test_round_trip_through_load_token_table(tmp_path):
    paths, tokens = _write(tmp_path)
    assert [p.name for p in paths] == [f"shard-r000-{k:05d}.parquet" for k in range(4)]
    assert not list(tmp_path.glob(".*tmp*"))  # temp files renamed away
    got, labels, captions, identity = load_token_table(paths)
    assert got.dtype == torch.int64 and got.shape == (23, 16)
    assert torch.equal(got, torch.from_numpy(tokens))
    assert labels.tolist() == [-1 if i % 5 == 0 else i % 3 for i in range(23)]
    assert captions[:2] == [None, "caption 1"]
    assert identity == IDENTITY
    meta = read_shard_metadata(paths[0])
    assert meta["rows"] == 7 and meta["vocab_size"] == 1024 and meta["grid"] == [4, 4]
    assert load_token_table([str(tmp_path)])[0].shape == (23, 16)  # a folder works too


def test_shards_load_with_hugging_face_datasets(tmp_path):
    import datasets

    paths, tokens = _write(tmp_path)
    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in paths], split="train")
    assert ds.num_rows == 23 and ds.features["tokens"].feature.dtype == "uint16"
    assert ds[3]["tokens"] == tokens[3].tolist() and ds[3]["source_id"] == "img3"
    assert ds[0]["label"] is None and ds[1]["label"] == 1 and ds[0]["caption"] is None


def test_two_ranks_split_rows_without_overlap_or_loss(tmp_path):
    paths, tokens = _write(tmp_path)
    for buffer in (0, 5):
        parts = [list(TokenShardReader(paths, rank=r, world_size=2, shuffle_buffer=buffer, seed=1)) for r in range(2)]
        ids = [row["source_id"] for part in parts for row in part]
        assert sorted(ids) == sorted(f"img{i}" for i in range(23)) and len(ids) == 23
        assert abs(len(parts[0]) - len(parts[1])) <= 1
        for row in parts[1]:
            i = int(row["source_id"][3:])
            assert torch.equal(row["tokens"], torch.from_numpy(tokens[i]))


def test_shuffle_buffer_mixes_deterministically(tmp_path):
    paths, _ = _write(tmp_path)
    a = [r["source_id"] for r in TokenShardReader(paths, shuffle_buffer=8, seed=3)]
    b = [r["source_id"] for r in TokenShardReader(paths, shuffle_buffer=8, seed=3)]
    c = [r["source_id"] for r in TokenShardReader(paths, shuffle_buffer=8, seed=4)]
    plain = [r["source_id"] for r in TokenShardReader(paths)]
    assert a == b and a != c and a != plain and sorted(a) == sorted(plain)
    assert plain == [f"img{i}" for i in range(23)]


@pytest.mark.parametrize("buffer,stop", [(0, 10), (6, 9), (6, 0), (6, 11)])
def test_resume_at_position_continues_exactly(tmp_path, buffer, stop):
    paths, _ = _write(tmp_path)
    full = [r["source_id"] for r in TokenShardReader(paths, rank=1, world_size=2, shuffle_buffer=buffer, seed=2)]
    reader = TokenShardReader(paths, rank=1, world_size=2, shuffle_buffer=buffer, seed=2)
    it = iter(reader)
    head = [next(it)["source_id"] for _ in range(stop)]
    assert reader.position == stop
    rest = TokenShardReader(paths, rank=1, world_size=2, shuffle_buffer=buffer, seed=2, start=reader.position)
    assert head + [r["source_id"] for r in rest] == full
    assert len(rest) == len(full) == 11


def test_bad_shard_files_name_the_file(tmp_path):
    paths, _ = _write(tmp_path / "good")
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(paths[0].read_bytes()[:200])
    with pytest.raises(VimtoolError, match="trunc.parquet is not a readable Parquet file"):
        load_token_table([trunc])
    text = tmp_path / "notes.parquet"
    text.write_text("hello")
    with pytest.raises(VimtoolError, match="notes.parquet is not a readable Parquet"):
        TokenShardReader([text])
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"tokens": [[1, 2]]}), foreign)
    with pytest.raises(VimtoolError, match="foreign.parquet is not a vimtool token shard"):
        load_token_table([foreign])
    with pytest.raises(VimtoolError, match="no token shards"):
        load_token_table([])


def test_shards_of_two_tokenizers_do_not_mix(tmp_path):
    a, _ = _write(tmp_path / "a")
    other = TokenizerIdentity("vitvqgan-tiny", "b" * 64, 1024, (4, 4), 32)
    b, _ = _write(tmp_path / "b", identity=other)
    with pytest.raises(VimtoolError, match="two different tokenizers"):
        load_token_table(a + b)
    with pytest.raises(VimtoolError, match="two different tokenizers"):
        TokenShardReader([a[0], b[0]])


def test_writer_validates_tokens_and_keeps_no_half_shard_on_error(tmp_path):
    w = ShardWriter(tmp_path, IDENTITY, rows_per_shard=4)
    with pytest.raises(VimtoolError, match="needs 16"):
        w.add(np.zeros(15, dtype=np.int64))
    with pytest.raises(VimtoolError, match=r"\[0, 1024\)"):
        w.add(np.full(16, 1024))
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "crash", IDENTITY, rows_per_shard=4) as w2:
            w2.add_batch(np.zeros((6, 16), dtype=np.int64), [1] * 6, ["x"] * 6, [str(i) for i in range(6)])
            raise RuntimeError("killed mid-run")
    assert [p.name for p in (tmp_path / "crash").iterdir()] == ["shard-r000-00000.parquet"]  # 4 rows, no partial
    with pytest.raises(VimtoolError, match="uint16"):
        ShardWriter(tmp_path, TokenizerIdentity("big", "c" * 64, 70000, (2, 2), 16))


def test_identity_dict_round_trip():
    d = IDENTITY.to_dict()
    assert d == {"name": "vitvqgan-tiny", "sha256": "a" * 64, "codebook_size": 1024, "grid": [4, 4], "image_size": 32}
    assert TokenizerIdentity.from_dict(d) == IDENTITY
    with pytest.raises(VimtoolError, match="incomplete"):
        TokenizerIdentity.from_dict({"name": "x"})


def test_an_interrupted_writer_resumes_numbering_without_duplicates(tmp_path):
    from vimtool.data.shards import finished_shards

    rows = np.arange(10 * 16).reshape(10, 16) % 1024
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, IDENTITY, rows_per_shard=4) as w:
            for i in range(7):
                w.add(rows[i], source_id=str(i))
            raise KeyboardInterrupt  # 4 rows made it into shard 0, 3 were buffered and are lost
    done, n_done = finished_shards(tmp_path, IDENTITY)
    assert [p.name for p in done] == ["shard-r000-00000.parquet"] and n_done == 4
    with ShardWriter(tmp_path, IDENTITY, rows_per_shard=4, start_shard=len(done)) as w:
        for i in range(n_done, 10):
            w.add(rows[i], source_id=str(i))
    assert w.rows_written == 6
    ids = [r["source_id"] for r in TokenShardReader([tmp_path])]
    assert ids == [str(i) for i in range(10)]
    with pytest.raises(VimtoolError, match="another tokenizer"):
        finished_shards(tmp_path, TokenizerIdentity("other", "d" * 64, 1024, (4, 4), 32))


# --------------------------------------------------------------------------------------- the one split
def test_a_rows_side_of_the_split_depends_on_its_source_id_alone():
    from vimtool.data.shards import held_out_rows

    ids = [f"img{i}" for i in range(4000)]
    held = held_out_rows(ids, 0.1)
    assert 0.08 < held.float().mean() < 0.12  # about the fraction asked for
    # other rows, another order: every row keeps its side
    more = ids[::-1] + [f"new{i}" for i in range(500)]
    assert held_out_rows(more, 0.1)[:4000].flip(0).tolist() == held.tolist()
    # a smaller fraction holds out a subset of a larger one's rows
    assert not bool((held_out_rows(ids, 0.05) & ~held).any())
    # augmented copies go wherever their original goes
    copies = [f"{s}#flip" for s in ids[:200]] + [f"{s}#shift+1-2" for s in ids[:200]]
    both = held_out_rows(ids[:200] + copies, 0.1)
    assert both[200:400].tolist() == both[:200].tolist() == both[400:].tolist() == held[:200].tolist()
    assert not bool(held_out_rows(ids, 0.0).any())


def test_tiny_sets_still_validate_and_too_few_rows_is_a_clear_error():
    from vimtool.data.shards import held_out_rows

    assert int(held_out_rows(["a", "b", "c"], 0.01).sum()) == 1  # the lowest hash, even below the fraction
    assert int(held_out_rows(["", "", "", ""], 0.01).sum()) == 1  # no source ids: rows keyed by position
    with pytest.raises(VimtoolError, match="too few to hold out"):
        held_out_rows(["only"], 0.5)
    with pytest.raises(VimtoolError, match=r"val_fraction must be in \[0, 1\)"):
        held_out_rows(["a", "b"], 1.0)


def test_train_lm_train_t2i_and_probe_hold_out_the_same_rows(tmp_path):
    """One split for the three commands that hold rows out: same fraction, same rows (probe: the originals)."""
    from vimtool.probe import ProbeConfig, probe_rows
    from vimtool.train.engine import TrainConfig
    from vimtool.train.lm import LMRunConfig, load_lm_data
    from vimtool.train.t2i import T2IRunConfig, T2ITask

    rng = np.random.default_rng(0)
    n = 120
    tokens = rng.integers(0, IDENTITY.codebook_size, (n, IDENTITY.num_tokens))  # distinct rows (1024^16 choices)
    ids = [f"img{i}" if i < 90 else f"img{i - 90}#flip" for i in range(n)]  # the last 30: flipped copies
    with ShardWriter(tmp_path, IDENTITY, rows_per_shard=50) as w:
        w.add_batch(tokens, [i % 3 for i in range(n)], [f"caption {i % 7}" for i in range(n)], ids)
    shards, fraction = [str(tmp_path)], 0.25

    def rows(t: torch.Tensor) -> set[tuple[int, ...]]:
        return {tuple(r) for r in t.tolist()}

    _, lm_val, _, _ = load_lm_data(LMRunConfig(shards=shards, val_fraction=fraction))
    t2i = T2ITask(T2IRunConfig(shards=shards, size="micro", val_fraction=fraction, text_vocab_size=300,
                               train=TrainConfig(out_dir=str(tmp_path / "run"))))  # fmt: skip
    split = probe_rows(ProbeConfig(shards=shards, val_fraction=fraction))
    held = rows(lm_val.tokens)
    assert 10 < len(held) < 50
    assert rows(t2i.val_set.tokens) == held
    originals = rows(torch.from_numpy(tokens[:90]))
    assert rows(split.val[0]) == held & originals and not rows(split.train[0]) & held
    # a flipped copy is held out exactly when its original is
    assert all((tuple(tokens[i]) in held) == (tuple(tokens[i - 90]) in held) for i in range(90, n))


def test_a_stage2_checkpoint_records_an_absolute_tokenizer_path(tmp_path, monkeypatch):
    from vimtool.data.shards import tokenizer_record

    (tmp_path / "tok").mkdir()
    monkeypatch.chdir(tmp_path)
    ident = TokenizerIdentity("tok", "a" * 64, 1024, (4, 4), 32)
    record = tokenizer_record(ident)
    assert record["tokenizer_path"] == str(tmp_path.resolve() / "tok") and record["tokenizer"] == ident.to_dict()
    assert tokenizer_record(ident, "org/tokenizer")["tokenizer_path"] == "org/tokenizer"  # a Hub id: as given
