"""`datasets` layouts as --data: imagefolder metadata.csv captions, ClassLabel names, save_to_disk folders; all
reach the token shards (captions in rows, label names in the shards' metadata) and `data preview`."""

import datasets
import pyarrow.parquet as pq
import pytest
from data_fixtures import SYNSETS, imagenet_dataset, png_bytes, save_micro_tokenizer
from PIL import Image
from typer.testing import CliRunner

from vimtool.commands import app
from vimtool.data import open_source
from vimtool.data.preview import PreviewConfig, preview
from vimtool.data.shards import load_token_table, read_shard_metadata
from vimtool.errors import VimtoolError
from vimtool.tokenize import TokenizeConfig, tokenize_dataset


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_micro_tokenizer(tmp_path_factory.mktemp("tok") / "micro")


def _tokenize(tokenizer, data, out, split="all"):
    return tokenize_dataset(TokenizeConfig(tokenizer=str(tokenizer), data=str(data), split=split, out=str(out),
                                           rows_per_shard=8, progress=False))  # fmt: skip


def test_metadata_csv_captions_and_class_names_reach_the_shards(tokenizer, tmp_path):
    root = tmp_path / "pets"
    rows = ["file_name,text"]
    for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i}.png").write_bytes(png_bytes(Image.new("RGB", (16, 16), colour)))
            rows.append(f'{cls}/{i}.png,"a {cls}, number {i}"')
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    src = open_source(str(root), "all")
    assert src.has_captions and src.class_names == ["cat", "dog"]
    paths = _tokenize(tokenizer, root, tmp_path / "s")
    _, labels, captions, _ = load_token_table(paths)
    ids = pq.read_table(paths[0]).column("source_id").to_pylist()
    assert dict(zip(ids, captions))["dog/1.png"] == "a dog, number 1" and None not in captions
    assert labels.tolist() == [0, 0, 1, 1]
    assert read_shard_metadata(paths[0])["class_names"] == ["cat", "dog"]


def test_metadata_csv_without_file_name_is_a_one_line_error(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(Image.new("RGB", (8, 8))))
    (tmp_path / "metadata.csv").write_text("name,text\na.png,hello\n")
    with pytest.raises(VimtoolError, match=r"metadata.csv:2: each row needs a file_name"):
        open_source(str(tmp_path), "all")


def test_save_to_disk_folder_tokenizes_with_class_label_names(tokenizer, tmp_path):
    folder = tmp_path / "saved"
    imagenet_dataset(per_class=2).save_to_disk(str(folder))
    src = open_source(str(folder), "all")
    assert len(src) == 6 and src.class_names == SYNSETS and [ex.label for ex in src] == [0, 0, 1, 1, 2, 2]
    paths = _tokenize(tokenizer, folder, tmp_path / "s")
    _, labels, _, _ = load_token_table(paths)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert read_shard_metadata(paths[0])["class_names"] == SYNSETS
    assert pq.read_table(paths[0]).column("source_id").to_pylist()[0] == "saved/0"


def test_save_to_disk_dataset_dict_uses_its_splits(tmp_path):
    ds = imagenet_dataset(per_class=2)
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": ds.select(range(4)), "validation": ds.select(range(4, 6))}).save_to_disk(str(folder))
    assert len(open_source(str(folder), "train")) == 4
    assert [ex.label for ex in open_source(str(folder), "val")] == [2, 2]
    with pytest.raises(VimtoolError, match="has splits train, validation"):
        open_source(str(folder), "test")


def test_preview_shows_class_label_names(tmp_path, monkeypatch):
    folder = tmp_path / "saved"
    imagenet_dataset(per_class=1).save_to_disk(str(folder))
    drawn = {}
    import vimtool.data.preview as preview_module

    real = preview_module.make_grid
    monkeypatch.setattr(
        preview_module, "make_grid", lambda imgs, ncol, caps: drawn.update(caps=caps) or real(imgs, ncol, caps)
    )
    preview(PreviewConfig(data=str(folder), out=str(tmp_path / "p.png"), n=3, size=16, split="all"))
    assert sorted(drawn["caps"]) == [f"class {i}: {name}" for i, name in enumerate(SYNSETS)]
    res = CliRunner().invoke(app, ["data", "preview", "--data", str(folder), "--n", "2", "--size", "16",
                                   "--out", str(tmp_path / "q.png")])  # fmt: skip
    assert res.exit_code == 0, res.output
