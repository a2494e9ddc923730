"""ImageNet-scale data, offline: an ImageNet-layout folder and Parquet set (JPEGs of varied sizes), the
`imagenet` alias streamed through `datasets` (its loader pointed at generated Parquet), JPEG draft decoding,
loader settings, and tokenize-dataset in resumable shards and in disjoint --num-shards pieces."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from data_fixtures import SYNSETS, imagenet_folder, imagenet_items, imagenet_parquet, save_micro_tokenizer

import vimtool.data.examples as examples
from vimtool.data import ImageDataset, open_source
from vimtool.data.loading import DataLoading, default_workers, loader_kwargs
from vimtool.data.shards import read_shard_metadata
from vimtool.errors import VimtoolError
from vimtool.models.vitvqgan import ViTVQGAN
from vimtool.tokenize import TokenizeConfig, tokenize_dataset

N = 3 * 4  # imagenet_items(): 3 classes x 4 images


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_micro_tokenizer(tmp_path_factory.mktemp("tok") / "micro")


@pytest.fixture
def hub_imagenet(tmp_path, monkeypatch):
    """`--data imagenet` offline: datasets.load_dataset for ILSVRC/imagenet-1k streams generated Parquet."""
    import datasets

    path = imagenet_parquet(tmp_path / "imagenet-train.parquet")
    real = datasets.load_dataset

    def fake(name, split=None, streaming=False, **kw):
        assert name == "ILSVRC/imagenet-1k"
        if split != "train":
            raise ValueError(f"Unknown split {split!r}")
        return real("parquet", data_files=str(path), split="train", streaming=streaming)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return path


def _ids(paths):
    return [s for p in paths for s in pq.read_table(p).column("source_id").to_pylist()]


def test_imagenet_folder_gives_synset_labels_and_draft_decodes_jpegs_smaller(tmp_path):
    root = imagenet_folder(tmp_path / "ilsvrc")
    src = open_source(str(root), "train", val_fraction=0.0)
    assert len(src) == N and src.class_names == SYNSETS
    full = {ex.source_id: ex for ex in src}
    assert all(full[f"train/{name}"].label == label for name, label, _ in imagenet_items())
    src.draft_size = 16
    drafted = {ex.source_id: ex.image.size for ex in src}
    shrunk = 0
    for sid, ex in full.items():
        (w, h), (dw, dh) = ex.image.size, drafted[sid]
        assert min(dw, dh) >= 16 and dw <= w and dh <= h  # never below the size it will be resized to
        shrunk += (dw, dh) != (w, h)
    assert shrunk >= N // 2  # most of these 40-100 px JPEGs decode at 1/2 or 1/4 scale


def test_image_dataset_preprocessing_is_shorter_side_then_center_or_random_crop(tmp_path):
    src = open_source(str(imagenet_folder(tmp_path / "ilsvrc")), "train", val_fraction=0.0)
    center = ImageDataset(src, 16, train=True, crop="center", draft=False)
    random_ = ImageDataset(src, 16, train=True, crop="random", draft=False)
    evaluation = ImageDataset(src, 16, train=False, draft=False)
    assert torch.equal(center[1]["image"], evaluation[1]["image"])  # center crop is the eval transform
    assert any(not torch.equal(random_[i]["image"], center[i]["image"]) for i in range(N))
    assert center[0]["image"].shape == (3, 16, 16) and center[0]["label"] == 0
    with pytest.raises(VimtoolError, match="data.crop"):
        ImageDataset(src, 16, train=True, crop="corner")


def test_loader_settings_default_to_a_few_workers_with_prefetch():
    assert 0 <= default_workers() <= 4
    assert loader_kwargs(DataLoading(workers=2, prefetch=3)) == {
        "num_workers": 2,
        "prefetch_factor": 3,
        "pin_memory": False,
    }
    assert loader_kwargs(DataLoading(workers=0), "cuda") == {"num_workers": 0, "pin_memory": True}
    assert loader_kwargs()["num_workers"] == default_workers()
    with pytest.raises(VimtoolError, match="data.workers"):
        DataLoading(workers=-1)


def test_parquet_set_keeps_class_label_names_and_reads_row_groups_on_demand(tmp_path):
    path = imagenet_parquet(tmp_path / "train.parquet")
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    src = open_source(str(path), "all", cache_row_groups=1)
    assert len(src) == N and src.class_names == SYNSETS and src.num_classes == 3
    assert [ex.label for ex in src] == [label for _, label, _ in imagenet_items()]
    assert len(src._cache) == 1  # only the last row group stays in memory


def test_imagenet_alias_streams_through_datasets_without_materialising(hub_imagenet):
    src = open_source("imagenet", "train")
    assert src.streaming and src.class_names == SYNSETS and not hasattr(src, "__len__")
    got = [(ex.label, ex.image.size) for ex in src]
    want = [label for _, label, _ in imagenet_items()]
    assert [label for label, _ in got] == want  # the Hub set has its own validation split: nothing cut from train
    calls = []
    real = examples.decode_image
    head = open_source("imagenet", "train", limit=3)
    head._decode = lambda data, where: calls.append(where) or real(data, where)
    assert len(list(head)) == 3 and len(calls) == 3  # a limit decodes only what it yields


def test_tokenize_streamed_imagenet_reruns_only_unfinished_shards(tokenizer, hub_imagenet, tmp_path, monkeypatch):
    out = tmp_path / "tok"
    cfg = TokenizeConfig(tokenizer=str(tokenizer), data="imagenet", out=str(out), rows_per_shard=4, batch_size=2,
                         progress=False)  # fmt: skip
    real_encode = ViTVQGAN.encode
    calls = {"n": 0}

    def dies_in_shard_2(self, x):
        calls["n"] += 1
        if calls["n"] == 5:  # batches of 2, shards of 4: the 5th batch is the first of shard 2
            raise KeyboardInterrupt
        return real_encode(self, x)

    monkeypatch.setattr(ViTVQGAN, "encode", dies_in_shard_2)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(cfg)
    finished = sorted(p.name for p in out.glob("*.parquet"))
    assert finished == ["shard-r000-00000.parquet", "shard-r000-00001.parquet"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}

    monkeypatch.setattr(ViTVQGAN, "encode", real_encode)
    decoded = []
    real_decode = examples.decode_image
    monkeypatch.setattr(examples, "decode_image", lambda d, w, s=None: decoded.append(w) or real_decode(d, w, s))
    paths = tokenize_dataset(cfg)
    assert len(decoded) == N - 8  # the two finished shards were passed over undecoded
    assert [p.name for p in paths] == finished + ["shard-r000-00002.parquet"]
    assert {p.name: p.stat().st_mtime_ns for p in paths if p.name in stamps} == stamps
    ids = _ids(paths)
    assert len(ids) == N and len(set(ids)) == N
    assert read_shard_metadata(paths[0])["class_names"] == SYNSETS
    assert json.loads((out / "tokenize.json").read_text())["draft"] is True


@pytest.mark.parametrize("kind", ["folder", "stream"])
def test_pieces_are_disjoint_cover_the_set_and_never_collide(tokenizer, hub_imagenet, tmp_path, kind):
    data = str(imagenet_folder(tmp_path / "ilsvrc")) if kind == "folder" else "imagenet"
    split = "all" if kind == "folder" else "train"
    out = tmp_path / "pieces"

    def run(index, num_shards=3, folder=out):
        return tokenize_dataset(TokenizeConfig(tokenizer=str(tokenizer), data=data, split=split, out=str(folder),
                                               rows_per_shard=2, num_shards=num_shards, shard_index=index,
                                               progress=False))  # fmt: skip

    pieces = [_ids(run(i)) for i in range(3)]
    whole = _ids(run(0, num_shards=1, folder=tmp_path / "whole"))
    assert all(pieces) and sum(map(len, pieces)) == N
    assert set().union(*map(set, pieces)) == set(whole) and len(set(whole)) == N  # disjoint, and the whole set
    names = sorted(p.name for p in out.glob("*.parquet"))
    assert len(names) == len(set(names)) and {n.split("-r000")[0] for n in names} == {
        f"shard-p{i:05d}of00003" for i in range(3)
    }
    assert _ids(run(1)) == pieces[1]  # a piece reruns into the shared folder: its shards are kept
    with pytest.raises(VimtoolError, match="num_shards"):
        run(0, num_shards=4)  # another cut of the set into the same folder would mix
    with pytest.raises(VimtoolError, match="--shard-index"):
        run(3)
