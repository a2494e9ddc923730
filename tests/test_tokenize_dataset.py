"""tokenize-dataset: shards that read back with the tokenizer identity, flips, resume without duplicates."""

import os
from pathlib import Path

import pytest
import torch
from launch import launch_two_processes
from typer.testing import CliRunner

from vimtool.checkpoint import save_model, tokenizer_identity
from vimtool.commands import app
from vimtool.data import open_source
from vimtool.data.shards import load_token_table, read_shard_metadata
from vimtool.data.transforms import resize_center_crop, to_tensor, translate
from vimtool.errors import VimtoolError
from vimtool.models.vitvqgan import ViTVQGAN, size_config
from vimtool.tokenize import (
    TokenizeConfig,
    flip_caption,
    original_source_id,
    row_image,
    shift_offsets,
    tokenize_dataset,
)

DATA = "shapes:size=16,n=20"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tok") / "micro"
    save_model(ViTVQGAN(size_config("micro")), folder)
    return folder


def _cfg(tokenizer, out, **kw):
    return TokenizeConfig(
        tokenizer=str(tokenizer), data=DATA, out=str(out), rows_per_shard=6, batch_size=4, progress=False, **kw
    )


def test_shards_read_back_with_identity_labels_captions_and_tokens(tokenizer, tmp_path):
    paths = tokenize_dataset(_cfg(tokenizer, tmp_path / "s"))
    assert [p.name for p in paths] == [f"shard-r000-{k:05d}.parquet" for k in range(4)]  # 20 rows, 6 per shard
    tokens, labels, captions, identity = load_token_table(paths)
    ident = tokenizer_identity(tokenizer)
    assert identity.sha256 == ident["sha256"] and identity.codebook_size == 64 and tuple(identity.grid) == (4, 4)
    assert read_shard_metadata(paths[0])["vocab_size"] == 64
    src = open_source(DATA, "train")
    assert tokens.shape == (20, 16)
    assert labels.tolist() == [src[i].label for i in range(20)]
    assert captions == [src[i].caption for i in range(20)]
    # The stored tokens are exactly what the tokenizer gives for those images.
    from vimtool.checkpoint import load_model

    model = load_model(tokenizer)
    x = torch.stack([to_tensor(resize_center_crop(src[i].image, 16)) for i in range(20)])
    assert torch.equal(tokens, model.encode(x))


def test_flip_copies_have_mirrored_tokens_and_captions(tokenizer, tmp_path):
    paths = tokenize_dataset(_cfg(tokenizer, tmp_path / "f", flip=True, limit=5))
    tokens, _, captions, _ = load_token_table(paths)
    assert tokens.shape[0] == 10  # 5 images x 2 copies
    import pyarrow.parquet as pq

    ids = [s for p in paths for s in pq.read_table(p).column("source_id").to_pylist()]
    assert sum(s.endswith("#flip") for s in ids) == 5 and len(set(ids)) == 10
    row = {s: i for i, s in enumerate(ids)}
    from vimtool.checkpoint import load_model

    model = load_model(tokenizer)
    src = open_source(DATA, "train")
    for i in range(5):
        a, b = row[src[i].source_id], row[src[i].source_id + "#flip"]
        assert captions[b] == flip_caption(captions[a])
        x = to_tensor(resize_center_crop(src[i].image, 16))[None]
        assert torch.equal(tokens[b], model.encode(torch.flip(x, dims=[3]))[0])  # tokens of the mirrored image
    assert (
        flip_caption("a red circle in the top left, right of a Left square")
        == "a red circle in the top right, left of a Right square"
    )


def test_shift_copies_are_the_tokens_of_moved_images_and_rerun_identically(tokenizer, tmp_path):
    import pyarrow.parquet as pq

    from vimtool.checkpoint import load_model

    paths = tokenize_dataset(_cfg(tokenizer, tmp_path / "s", shifts=3, max_shift=2, limit=5))
    tokens, labels, captions, _ = load_token_table(paths)
    ids = [s for p in paths for s in pq.read_table(p).column("source_id").to_pylist()]
    assert tokens.shape[0] == 20 and len(set(ids)) == 20  # 5 images x (original + 3 shifted copies)
    model, src = load_model(tokenizer), open_source(DATA, "train")
    row = {s: i for i, s in enumerate(ids)}
    for i in range(5):
        sid = src[i].source_id
        offsets = shift_offsets(sid, 3, 2)
        assert len(set(offsets)) == 3 and (0, 0) not in offsets and all(max(map(abs, o)) <= 2 for o in offsets)
        x = to_tensor(resize_center_crop(src[i].image, 16))
        copies = [s for s in ids if s != sid and original_source_id(s) == sid]
        assert len(copies) == 3
        for s in copies:
            assert labels[row[s]] == src[i].label and captions[row[s]] == src[i].caption
            moved = row_image(x, s)
            assert not torch.equal(moved, x) and torch.equal(tokens[row[s]], model.encode(moved[None])[0])
        dx, dy = offsets[0]
        assert torch.equal(row_image(x, f"{sid}#shift{dx:+d}{dy:+d}"), translate(x, dx, dy))
    again = tokenize_dataset(_cfg(tokenizer, tmp_path / "again", shifts=3, max_shift=2, limit=5))
    assert torch.equal(load_token_table(again)[0], tokens)  # offsets come from the source ids, not a global RNG
    with pytest.raises(VimtoolError, match="shifts"):  # resuming into the folder with other settings
        tokenize_dataset(_cfg(tokenizer, tmp_path / "s", shifts=2, max_shift=2, limit=5))
    with pytest.raises(VimtoolError, match="distinct"):
        tokenize_dataset(_cfg(tokenizer, tmp_path / "t", shifts=9, max_shift=1, limit=5))


def test_interrupted_run_resumes_without_duplicates(tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "r"
    calls = {"n": 0}
    real_encode = ViTVQGAN.encode

    def flaky_encode(self, images):
        calls["n"] += 1
        if calls["n"] == 4:  # dies inside the 3rd shard (batches of 4, 6 rows per shard)
            raise KeyboardInterrupt
        return real_encode(self, images)

    monkeypatch.setattr(ViTVQGAN, "encode", flaky_encode)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(_cfg(tokenizer, out))
    first = sorted(out.glob("*.parquet"))
    assert 0 < len(first) < 4
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # never a half-written shard
    stamps = {p.name: p.stat().st_mtime_ns for p in first}
    monkeypatch.setattr(ViTVQGAN, "encode", real_encode)
    paths = tokenize_dataset(_cfg(tokenizer, out))
    assert len(paths) == 4 and {p.name: p.stat().st_mtime_ns for p in paths if p.name in stamps} == stamps
    import pyarrow.parquet as pq

    ids = [s for p in paths for s in pq.read_table(p).column("source_id").to_pylist()]
    assert len(ids) == 20 and len(set(ids)) == 20  # every image exactly once
    with pytest.raises(VimtoolError, match="other settings"):
        tokenize_dataset(_cfg(tokenizer, out, flip=True))


def test_cli_prints_shard_paths_only(tokenizer, tmp_path):
    res = CliRunner().invoke(app, [
        "tokenize-dataset", "--tokenizer", str(tokenizer), "--data", DATA, "--out", str(tmp_path / "c"),
        "--rows-per-shard", "8", "--limit", "12", "--set", "progress=false",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert [Path(p).name for p in lines] == ["shard-r000-00000.parquet", "shard-r000-00001.parquet"]
    assert all(Path(p).is_file() for p in lines)


def test_missing_options_are_user_errors(tmp_path):
    with pytest.raises(VimtoolError, match="--tokenizer"):
        tokenize_dataset(TokenizeConfig(data=DATA, out=str(tmp_path)))


@pytest.mark.slow
def test_two_processes_write_disjoint_shards_covering_every_image(tokenizer, tmp_path):
    out = tmp_path / "mp"
    args = ("-m", "vimtool", "tokenize-dataset", "--tokenizer", str(tokenizer), "--data", DATA, "--out", str(out),
            "--rows-per-shard", "4", "--set", "progress=false")  # fmt: skip
    res = launch_two_processes(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    printed = sorted(Path(p).name for p in res.stdout.split())
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert printed == files and {f.split("-")[1] for f in files} == {"r000", "r001"}  # each rank its own shards
    import pyarrow.parquet as pq

    ids = [s for f in out.glob("*.parquet") for s in pq.read_table(f).column("source_id").to_pylist()]
    assert len(ids) == 20 and len(set(ids)) == 20
    # rerun under accelerate: every rank finds its shards complete, keeps them and prints the same paths
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    (out / files[-1]).unlink()  # one rank's last shard lost: only that one is written again
    again = launch_two_processes(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(Path(p).name for p in again.stdout.split()) == files
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert {n for n in now if now[n] != stamps[n]} == {files[-1]}
    assert "finished shard(s) kept from an earlier run" in again.stderr
