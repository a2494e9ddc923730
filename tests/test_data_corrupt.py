"""Corrupt and unusual images: every good image tokenized exactly once, bad ones skipped (never replaced by
another image) and counted by cause; file names that are not UTF-8 never crash a command."""

import json
import logging
import os

import pyarrow.parquet as pq
import pytest
from data_fixtures import BAD_CAUSES, GOOD_IDS, NON_UTF8_NAME, corrupt_folder, png_bytes, save_micro_tokenizer
from PIL import Image
from typer.testing import CliRunner

from vimtool.commands import app
from vimtool.data import ImageDataset, open_source
from vimtool.data.examples import CorruptImageError, decode_image
from vimtool.errors import VimtoolError
from vimtool.tokenize import TokenizeConfig, tokenize_dataset


@pytest.fixture(scope="module")
def micro_tokenizer(tmp_path_factory):
    return save_micro_tokenizer(tmp_path_factory.mktemp("tok") / "micro")


def _ids(paths):
    return [s for p in paths for s in pq.read_table(p).column("source_id").to_pylist()]


def test_a_corrupt_image_is_skipped_not_replaced_by_another(micro_tokenizer, tmp_path):
    """The reported case: a, b, c and a 0-byte z.png gave the rows a, b, c, a."""
    root = tmp_path / "abc"
    root.mkdir()
    for name in "abc":
        (root / f"{name}.png").write_bytes(png_bytes(Image.new("RGB", (16, 16), (ord(name), 0, 0))))
    (root / "z.png").write_bytes(b"")
    cfg = TokenizeConfig(tokenizer=str(micro_tokenizer), data=str(root), split="all", out=str(tmp_path / "s"),
                         rows_per_shard=4, batch_size=4, progress=False)  # fmt: skip
    assert _ids(tokenize_dataset(cfg)) == ["a.png", "b.png", "c.png"]
    src = open_source(str(root), "all")
    assert [src.get(i) is None for i in range(4)] == [False, False, False, True]


def test_every_good_image_once_and_bad_ones_counted_by_cause(micro_tokenizer, tmp_path, caplog):
    root = corrupt_folder(tmp_path / "mixed")
    out = tmp_path / "shards"
    cfg = TokenizeConfig(tokenizer=str(micro_tokenizer), data=str(root), split="all", out=str(out),
                         rows_per_shard=5, batch_size=3, progress=False)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        paths = tokenize_dataset(cfg)
    ids = _ids(paths)
    assert sorted(ids) == sorted(GOOD_IDS) and len(ids) == len(set(ids))  # each good image exactly once
    line = next(r.getMessage() for r in caplog.records if "skipped 4 corrupt image(s)" in r.getMessage())
    for words in ("1 empty file", "1 truncated", "1 not an image", "1 too many pixels"):
        assert words in line
    record = json.loads((out / "tokenize.json").read_text())["skipped"]
    assert record["total"] == BAD_CAUSES
    assert sum(sum(c.values()) for c in record["shards"].values()) == 4
    # keyed by the shard each image belonged to (a shard of only bad images has no file: nothing to write)
    assert set(record["shards"]) <= {f"shard-r000-{k:05d}.parquet" for k in range(3)}

    again = tokenize_dataset(cfg)  # a rerun keeps the finished shards and the record
    assert again == paths and json.loads((out / "tokenize.json").read_text())["skipped"] == record


def test_unusual_modes_decode_to_rgb_and_bad_files_name_their_cause(tmp_path):
    root = corrupt_folder(tmp_path / "mixed")
    for name in ("deep16.png", "cmyk.jpg", "palette_alpha.png", "tiny.png"):
        img = decode_image(root / name, name)
        assert img.mode == "RGB"
    assert decode_image(root / "deep16.png", "x").getpixel((0, 0)) == (156, 156, 156)  # 40000 / 257
    palette = decode_image(root / "palette_alpha.png", "x")
    assert palette.getpixel((0, 0)) == (255, 255, 255) and palette.getpixel((15, 0)) == (200, 30, 30)  # on white
    causes = {}
    for name in ("trunc.jpg", "z.png", "text.png", "bomb.png"):
        with pytest.raises(CorruptImageError) as e:
            decode_image(root / name, name)
        causes[name] = e.value.cause
    assert causes == {"trunc.jpg": "truncated", "z.png": "empty", "text.png": "not_an_image", "bomb.png": "too_large"}
    with pytest.raises(VimtoolError, match="corrupt image"):
        list(open_source(str(root), "all", strict=True))


def test_non_utf8_file_names_work_in_preview_and_training_data(tmp_path):
    root = tmp_path / "names"
    root.mkdir()
    for raw in (NON_UTF8_NAME, b"plain.png"):
        with open(os.path.join(os.fsencode(root), raw), "wb") as f:
            f.write(png_bytes(Image.new("RGB", (20, 20), (10, 20, 30))))
    src = open_source(str(root), "all")
    assert sorted(ex.source_id for ex in src) == ["caf\\xe9.png", "plain.png"]
    assert ImageDataset(src, 16, train=True)[0]["image"].shape == (3, 16, 16)  # what train-tokenizer reads
    res = CliRunner().invoke(app, ["data", "preview", "--data", str(root), "--n", "2", "--size", "16",
                                   "--out", str(tmp_path / "p.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "p.png") as grid:
        assert grid.format == "PNG"


def test_training_data_serves_the_next_good_image_for_a_corrupt_one(tmp_path):
    root = corrupt_folder(tmp_path / "mixed")
    src = open_source(str(root), "all")
    ds = ImageDataset(src, 16, train=False)
    bad = [i for i in range(len(src)) if src.get(i) is None]
    assert len(bad) == 4
    assert all(ds[i]["image"].shape == (3, 16, 16) for i in bad)  # a batch never has a hole


def test_decode_threads_write_the_same_rows_and_counts(micro_tokenizer, tmp_path):
    root = corrupt_folder(tmp_path / "mixed")
    tables = []
    for workers in (0, 3):
        out = tmp_path / f"w{workers}"
        cfg = TokenizeConfig(tokenizer=str(micro_tokenizer), data=str(root), split="all", out=str(out),
                             rows_per_shard=5, batch_size=2, workers=workers, progress=False)  # fmt: skip
        paths = tokenize_dataset(cfg)
        tables.append(([pq.read_table(p).to_pydict() for p in paths], json.loads((out / "tokenize.json").read_text())))
    assert tables[0] == tables[1]
