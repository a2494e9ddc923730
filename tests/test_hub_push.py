"""`--push-to-hub REPO_ID --hub-private` on a real (tiny) training run through the command line."""

import shutil
from pathlib import Path

import huggingface_hub
from huggingface_hub.utils import filter_repo_objects
from typer.testing import CliRunner
from vim_fixtures import make_shards, make_tokenizer

from vimtool.commands import app


def _local_hub(monkeypatch, root: Path) -> dict:
    """Replace the two Hub calls `checkpoint.push_to_hub` makes with a stand-in that copies into `root/<repo_id>`.

    The live Hub cannot be reached here (no network; conftest sets HF_HUB_OFFLINE), so this is as far as an upload
    can be followed: the arguments of create_repo, and the files upload_folder would send (its own ignore-pattern
    filter decides which)."""
    calls: dict = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        calls["upload_folder"] = {"repo_id": repo_id, "folder_path": folder_path, **kwargs}
        folder = Path(folder_path)
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, ignore_patterns=ignore_patterns):
            (root / repo_id / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, root / repo_id / name)
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_train_lm_pushes_its_final_checkpoint_to_a_private_repo(tmp_path, monkeypatch):
    calls = _local_hub(monkeypatch, tmp_path / "hub")
    tok = make_tokenizer(tmp_path / "tok")
    shards = make_shards(tmp_path / "shards", tok, n=32, rows_per_shard=32)
    res = CliRunner().invoke(
        app,
        [
            "train-lm", "--shards", str(shards[0]), "--size", "micro", "--steps", "2", "--batch-size", "8",
            "--out-dir", str(tmp_path / "run"), "--set", "val_fraction=0", "--set", "train.progress=false",
            "--push-to-hub", "user/repo", "--hub-private",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    final = Path(res.stdout.strip())
    assert calls["create_repo"]["repo_id"] == "user/repo" and calls["create_repo"]["private"] is True
    assert Path(calls["upload_folder"]["folder_path"]) == final
    pushed = tmp_path / "hub" / "user" / "repo"
    # the checkpoint carries its image tokenizer (tokenizer/), so the pushed repo samples on its own
    assert sorted(p.name for p in pushed.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer"]
    for name in (
        "config.json",
        "model.safetensors",
        "README.md",
        "tokenizer/config.json",
        "tokenizer/model.safetensors",
    ):
        assert (pushed / name).read_bytes() == (final / name).read_bytes()
    assert (pushed / "tokenizer" / "model.safetensors").read_bytes() == (tok / "model.safetensors").read_bytes()


def test_without_hub_private_the_account_default_decides(tmp_path, monkeypatch):
    # train-tokenizer this time: every training command reaches the same upload
    calls = _local_hub(monkeypatch, tmp_path / "hub")
    res = CliRunner().invoke(
        app,
        [
            "train-tokenizer", "--data", "shapes:size=16,n=16", "--size", "micro", "--steps", "1", "--batch-size", "4",
            "--out-dir", str(tmp_path / "run"), "--set", "loss.perceptual=0", "--set", "loss.adversarial=0",
            "--set", "eval_images=4", "--set", "train.progress=false", "--set", "train.save_every=0",
            "--push-to-hub", "user/tok",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert calls["create_repo"]["repo_id"] == "user/tok" and calls["create_repo"]["private"] is None
    assert (tmp_path / "hub" / "user" / "tok" / "model.safetensors").is_file()
