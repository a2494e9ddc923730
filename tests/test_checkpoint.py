"""Checkpoint folders: save -> load round trips (local, run folder, offline Hub cache), corrupt files, the
tokenizer-pairing guard, the registry, and --push-to-hub (only the live Hub calls are mocked)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from engine_tiny_task import TinyConfig, TinyMLP
from torch import nn
from vim_fixtures import hub_cache

from vimtool import checkpoint as ckpt
from vimtool.errors import VimtoolError
from vimtool.models import registry


@dataclass
class TiedConfig:
    vocab: int = 11
    dim: int = 6


@registry.register_model
class TiedLM(nn.Module):
    """Input embedding tied to the output projection: stored once in safetensors, tie restored on load."""

    model_type = "test_tied_lm"

    def __init__(self, config: TiedConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab, config.dim)
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        self.head.weight = self.emb.weight


@dataclass
class ToyTokConfig:
    image_size: int = 16
    patch_size: int = 4
    codebook_size: int = 32


@registry.register_model
class ToyTokenizer(nn.Module):
    model_type = "test_toy_tokenizer"

    def __init__(self, config: ToyTokConfig):
        super().__init__()
        self.config = config
        self.codebook = nn.Embedding(config.codebook_size, 4)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_then_load_local_folder_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TinyMLP(TinyConfig(hidden=12, dropout=0.2))
    folder = ckpt.save_model(
        model,
        tmp_path / "ck",
        card={"data": "org/some-set", "steps": 7, "metrics": {"val_loss": 0.25}},
        extra={"note": "x"},
    )
    meta = json.loads((folder / "config.json").read_text())
    assert meta["model_type"] == "tiny_mlp" and meta["config"]["hidden"] == 12 and meta["note"] == "x"
    assert meta["vimtool_version"]
    card = (folder / "README.md").read_text()
    assert (
        card.startswith("---\n")
        and "\nlibrary_name: vimtool\n" in card.split("---\n")[1]
        and "org/some-set" in card
        and "val_loss" in card
        and "| steps | 7 |" in card
    )
    loaded = ckpt.load_model(folder)
    assert isinstance(loaded, TinyMLP) and loaded.config == model.config and not loaded.training
    assert _same_weights(model, loaded)
    assert ckpt.read_config(folder)["config"]["dropout"] == 0.2


def test_saving_again_replaces_our_files_and_keeps_others(tmp_path):
    folder = ckpt.save_model(TinyMLP(TinyConfig()), tmp_path / "ck")
    (folder / "tokenizer.json").write_text("{}")
    torch.manual_seed(5)
    second = TinyMLP(TinyConfig())
    ckpt.save_model(second, folder)
    assert (folder / "tokenizer.json").exists()
    assert _same_weights(second, ckpt.load_model(folder))
    assert not list(tmp_path.glob(".tmp-*")), "temporary folders must not be left behind"


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    model = TiedLM(TiedConfig())
    folder = ckpt.save_model(model, tmp_path / "tied")
    loaded = ckpt.load_model(folder)
    assert loaded.head.weight.data_ptr() == loaded.emb.weight.data_ptr()
    assert torch.equal(loaded.emb.weight, model.emb.weight)


def test_run_folder_and_pointer_files_resolve_to_the_checkpoint(tmp_path):
    model = TinyMLP(TinyConfig())
    step = ckpt.save_model(model, tmp_path / "run" / "checkpoints" / "step_000010")
    ckpt.write_pointer(tmp_path / "run" / "latest", step)
    assert ckpt.resolve(tmp_path / "run") == step.resolve()
    (tmp_path / "pointer.txt").write_text("run/checkpoints/step_000010\n")  # the no-symlink fallback form
    assert _same_weights(model, ckpt.load_model(tmp_path / "pointer.txt"))


def test_repo_id_loads_offline_from_ahub_cache(tmp_path, monkeypatch):
    torch.manual_seed(3)
    model = TinyMLP(TinyConfig(hidden=10))
    src = ckpt.save_model(model, tmp_path / "src")
    commit = hub_cache(tmp_path / "hub", "someone/tiny-mlp", src)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no local folder named like the repo
    assert _same_weights(model, ckpt.load_model("someone/tiny-mlp"))
    assert _same_weights(model, ckpt.load_model("someone/tiny-mlp", revision=commit))
    with pytest.raises(VimtoolError, match="someone/absent.*HF_HUB_OFFLINE"):
        ckpt.load_model("someone/absent")


@pytest.mark.parametrize(
    "damage,named",
    [
        ("truncate_weights", "model.safetensors"),
        ("delete_weights", "model.safetensors"),
        ("delete_config", "config.json"),
        ("garble_config", "config.json"),
        ("wrong_shape", "model.safetensors"),
    ],
)
def test_corrupt_or_missing_file_is_a_clear_error_naming_it(tmp_path, damage, named):
    folder = ckpt.save_model(TinyMLP(TinyConfig()), tmp_path / "ck")
    w, c = folder / "model.safetensors", folder / "config.json"
    if damage == "truncate_weights":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "delete_weights":
        w.unlink()
    elif damage == "delete_config":
        c.unlink()
    elif damage == "garble_config":
        c.write_text('{"model_type": "tiny_mlp", "config": {')
    else:
        meta = json.loads(c.read_text())
        meta["config"]["hidden"] = 32
        c.write_text(json.dumps(meta))
    with pytest.raises(VimtoolError, match=named.replace(".", r"\.")):
        ckpt.load_model(folder)


def test_tokenizer_identity_and_pairing_guard(tmp_path):
    torch.manual_seed(0)
    tok_a = ckpt.save_model(ToyTokenizer(ToyTokConfig()), tmp_path / "tok_a")
    torch.manual_seed(1)
    tok_b = ckpt.save_model(ToyTokenizer(ToyTokConfig()), tmp_path / "tok_b")
    ident = ckpt.tokenizer_identity(tok_a, name="tok-a")
    assert ident == {
        "name": "tok-a",
        "sha256": hashlib.sha256((tok_a / "model.safetensors").read_bytes()).hexdigest(),
        "codebook_size": 32,
        "grid": [4, 4],
        "image_size": 16,
    }
    stage2 = ckpt.save_model(
        TinyMLP(TinyConfig()), tmp_path / "stage2", extra={"tokenizer": ident, "tokenizer_path": str(tok_a)}
    )
    cfg = ckpt.read_config(stage2)
    ckpt.check_pairing(cfg, ckpt.tokenizer_identity(tok_a))  # the same weights pair, whatever the name
    with pytest.raises(VimtoolError, match="tokenizer mismatch.*tok-a"):
        ckpt.check_pairing(cfg, ckpt.tokenizer_identity(tok_b))
    with pytest.raises(VimtoolError, match="does not look like a tokenizer"):
        ckpt.tokenizer_identity(stage2)


def test_push_to_hub_uploads_the_model_without_training_state(tmp_path, monkeypatch):
    import huggingface_hub

    folder = ckpt.save_model(TinyMLP(TinyConfig()), tmp_path / "ck")
    (folder / "state").mkdir()
    calls = {}
    # Only the live Hub calls are mocked (there is no network here).
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, **kw: calls.setdefault("upload", kw) and "https://hub/commit/1",
    )
    ckpt.push_to_hub(folder, "me/tiny")
    assert calls["create"][0] == "me/tiny" and calls["create"][1]["exist_ok"]
    up = calls["upload"]
    assert up["repo_id"] == "me/tiny" and Path(up["folder_path"]) == folder and "state/*" in up["ignore_patterns"]


def test_registry_errors_say_what_to_do(monkeypatch):
    with pytest.raises(VimtoolError, match="unknown model_type 'nope'.*known: .*vim"):
        registry.get_model_class("nope")
    monkeypatch.setitem(registry.BUILTIN_MODULES, "broken", "vimtool.models.no_such_module")
    with pytest.raises(VimtoolError, match="vimtool.models.no_such_module, which failed to import"):
        registry.get_model_class("broken")
    assert registry.get_config_class("tiny_mlp") is TinyConfig

    class NoType(nn.Module):
        def __init__(self, config: TinyConfig):
            super().__init__()

    with pytest.raises(TypeError, match="model_type"):
        registry.register_model(NoType)
