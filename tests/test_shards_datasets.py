"""Token shards keep their tokenizer identity through Hugging Face `datasets` and the Hub.

`datasets` drops Parquet schema metadata (and feature ids, and the description) in `to_parquet`, `save_to_disk` and
`push_to_hub`; the identity also travels as a `tokenizer` column, which survives them all. `--shards` takes the
results: Parquet files, `save_to_disk` folders (a DatasetDict's `train` split) and Hub dataset ids, read from a
local Hub-cache layout here (the live Hub cannot be reached: conftest sets HF_HUB_OFFLINE). `tokenize-dataset
--push-to-hub` is followed through a stand-in for huggingface_hub's upload calls, for the same reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import huggingface_hub
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub.utils import filter_repo_objects
from typer.testing import CliRunner
from vim_fixtures import lm_config, make_shards, make_tokenizer

from vimtool.commands import app
from vimtool.data.shards import load_token_table, read_shard_metadata
from vimtool.errors import VimtoolError
from vimtool.sampling import SampleConfig
from vimtool.sampling.command import sample
from vimtool.train.lm import train_lm


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsworld")
    tok, other = make_tokenizer(root / "tok"), make_tokenizer(root / "tok_other", seed=1)
    shards = make_shards(root / "shards", tok, n=64, rows_per_shard=32)
    other_shards = make_shards(root / "other_shards", other, n=16)
    return {"root": root, "tok": tok, "other": other, "shards": shards, "other_shards": other_shards}


def _dataset(paths) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_files=[str(p) for p in paths], split="train")


def test_the_identity_survives_to_parquet_save_to_disk_map_and_filter(world, tmp_path):
    want = read_shard_metadata(world["shards"][0])["identity"]
    ds = _dataset(world["shards"])
    ds.to_parquet(str(tmp_path / "rt" / "data.parquet"))
    assert b"vimtool" not in (pq.read_schema(tmp_path / "rt" / "data.parquet").metadata or {})  # metadata is gone
    assert read_shard_metadata(tmp_path / "rt" / "data.parquet")["identity"] == want  # the column kept it

    ds.filter(lambda r: r["label"] != 1).map(lambda r: {"tokens": r["tokens"]}).save_to_disk(str(tmp_path / "saved"))
    again = datasets.load_from_disk(str(tmp_path / "saved"))
    again.save_to_disk(str(tmp_path / "saved2"))
    tokens, labels, _, identity = load_token_table([str(tmp_path / "saved2")])
    assert identity == want and len(tokens) == again.num_rows and 1 not in labels.tolist()

    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(tmp_path / "dd"))
    assert load_token_table([str(tmp_path / "dd")])[0].shape == (64, 16)  # the train split only

    # Shards of another tokenizer are still refused next to round-tripped ones.
    _dataset(world["other_shards"]).to_parquet(str(tmp_path / "other.parquet"))
    with pytest.raises(VimtoolError, match="two different tokenizers"):
        load_token_table([str(tmp_path / "rt"), str(tmp_path / "other.parquet")])


def test_a_dataset_mixing_two_tokenizers_is_refused(world, tmp_path):
    mixed = datasets.concatenate_datasets([_dataset(world["shards"]), _dataset(world["other_shards"])])
    mixed.to_parquet(str(tmp_path / "mixed.parquet"))
    with pytest.raises(VimtoolError, match="names 2 tokenizers"):
        load_token_table([str(tmp_path / "mixed.parquet")])


@pytest.mark.slow
def test_round_tripped_shards_train_and_sample_with_the_pairing_guard(world, tmp_path):
    ds = _dataset(world["shards"])
    ds.to_parquet(str(tmp_path / "pq" / "data.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for name in ("pq", "saved"):
        ckpt = train_lm(lm_config([str(tmp_path / name)], tmp_path / f"run_{name}", steps=3))
        written = sample(SampleConfig(checkpoint=str(ckpt), classes=[0], num_samples=1, out=str(tmp_path / f"s_{name}"),
                                      device="cpu", use_cache=False))  # fmt: skip
        assert written and all(Path(p).is_file() for p in written)
        with pytest.raises(VimtoolError, match="tokenizer mismatch"):
            sample(SampleConfig(checkpoint=str(ckpt), classes=[0], num_samples=1, out=str(tmp_path / "x"),
                                tokenizer=str(world["other"]), device="cpu"))  # fmt: skip


def _hub_cache(root: Path, repo_id: str, files: dict[str, Path]) -> None:
    """The layout huggingface_hub's cache gives a downloaded dataset repo (refs/main -> snapshots/<commit>/...)."""
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, src in files.items():
        dst = repo / "snapshots" / commit / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def test_shards_accept_hub_dataset_ids_from_the_local_hub_cache(world, tmp_path, monkeypatch):
    ds = _dataset(world["shards"])
    ds.to_parquet(str(tmp_path / "train.parquet"))
    ds.select(range(4)).to_parquet(str(tmp_path / "test.parquet"))
    cache = tmp_path / "hub"
    _hub_cache(cache, "someone/tokens", {"data/train-00000-of-00001.parquet": tmp_path / "train.parquet",
                                         "data/test-00000-of-00001.parquet": tmp_path / "test.parquet"})  # fmt: skip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    want = read_shard_metadata(world["shards"][0])["identity"]
    tokens, _, _, identity = load_token_table(["someone/tokens"])
    assert identity == want and tokens.shape == (64, 16)  # the train split by default
    assert load_token_table(["someone/tokens:test"])[0].shape == (4, 16)
    with pytest.raises(VimtoolError, match="could not be read"):
        load_token_table(["someone/absent"])


def test_tokenize_dataset_pushes_shards_with_a_dataset_card(world, tmp_path, monkeypatch):
    """huggingface_hub's create_repo / upload_folder are replaced by a stand-in copying into a local folder: the live
    Hub cannot be reached here. What comes back from that folder is read as `--shards` would read the repo."""
    calls: dict = {}
    remote = tmp_path / "remote"

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):
        calls["upload_folder"] = {"repo_id": repo_id, **kwargs}
        folder = Path(folder_path)
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        for name in filter_repo_objects(names, allow_patterns=allow_patterns):
            (remote / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, remote / name)
        return f"https://huggingface.co/datasets/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "shards"
    res = CliRunner().invoke(app, [
        "tokenize-dataset", "--tokenizer", str(world["tok"]), "--data", "shapes:size=16", "--out", str(out),
        "--limit", "6", "--rows-per-shard", "4", "--set", "progress=false", "--push-to-hub", "me/shape-tokens",
        "--hub-private",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(res.stdout.split()) == 2  # the paths, and nothing else, on stdout
    assert calls["create_repo"] == {"repo_id": "me/shape-tokens", "repo_type": "dataset", "private": True,
                                    "exist_ok": True}  # fmt: skip
    assert calls["upload_folder"]["repo_type"] == "dataset"
    assert sorted(p.name for p in remote.iterdir()) == [
        "README.md", "shard-r000-00000.parquet", "shard-r000-00001.parquet", "tokenize.json",
    ]  # fmt: skip
    card = (remote / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    identity = read_shard_metadata(out / "shard-r000-00000.parquet")["identity"]
    assert meta["vimtool"]["tokenizer"] == identity.to_dict() and meta["vimtool"]["rows"] == 6
    assert meta["vimtool"]["grid"] == list(identity.grid) and meta["vimtool"]["codebook_size"] == identity.codebook_size
    assert meta["vimtool"]["source"]["data"] == "shapes:size=16"
    assert meta["configs"][0]["data_files"][0] == {"split": "train", "path": "*.parquet"}
    assert "vimtool train-lm --shards me/shape-tokens" in card and 'load_dataset("me/shape-tokens"' in card
    # the pushed repo loads with datasets and keeps the identity
    ds = datasets.load_dataset("parquet", data_files=str(remote / "*.parquet"), split="train")
    assert ds.num_rows == 6 and json.loads(ds[0]["tokenizer"]) == identity.to_dict()
