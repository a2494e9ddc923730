"""The Python API (vimtool.load, Pipeline, ImageTokenizer), Hub-style models and self-contained checkpoints.

- `vimtool.load(...).generate(...)` and the diffusers-style call give the pixels `vimtool sample` writes;
- `import vimtool` stays light (no torch, no models);
- `save_pretrained` / `from_pretrained` round trips for every family, from a folder and from a Hub cache;
- a stage-2 checkpoint carries its image tokenizer: it samples after a move, with its tokenizer deleted, and
  from a Hub cache, without --tokenizer; the pairing guard still refuses another tokenizer;
- the model card's YAML front matter, and its usage snippet, run as written against a real checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner
from vim_fixtures import hub_cache, lm_config, make_shards, make_tokenizer

import vimtool
from vimtool import checkpoint as ckpt
from vimtool.commands import app
from vimtool.errors import VimtoolError

runner = CliRunner()


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(im.convert("RGB")) for im in images]


def _cli_sample(args: list[str], out: Path) -> list[Path]:
    res = runner.invoke(app, ["sample", *args, "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return [Path(p) for p in res.stdout.split()]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------- import cost
def test_import_vimtool_loads_neither_torch_nor_the_models():
    code = (
        "import sys, vimtool; heavy = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith("
        "('vimtool.models', 'vimtool.pipeline', 'vimtool.api'))]; print(heavy); "
        "assert callable(vimtool.load) and 'vimtool.api' in sys.modules"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------- API = CLI
def test_vim_api_gives_the_images_of_the_sample_command(vim_world, tmp_path):
    paths = _cli_sample(["-c", str(vim_world["ckpt"]), "--class", "2", "--class", "0", "-n", "3",
                         "--guidance-scale", "1.5", "--seed", "5", "--top-k", "20"], tmp_path / "cli")  # fmt: skip
    written = [np.asarray(Image.open(p)) for p in paths]
    pipe = vimtool.load(str(vim_world["ckpt"]), device="cpu")
    assert pipe.family == "vim" and isinstance(pipe, vimtool.Pipeline)
    images = pipe.generate([2, 0], n=3, guidance=1.5, seed=5, top_k=20)
    assert len(images) == 6 and all(np.array_equal(a, b) for a, b in zip(_pixels(images), written))
    # diffusers convention: a generator stands for its seed; calling twice gives the same images
    g = torch.Generator().manual_seed(5)
    out = pipe(class_labels=[2, 0], num_images_per_prompt=3, guidance_scale=1.5, generator=g, top_k=20)
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(out.images), written))
    again = pipe(class_labels=[2, 0], num_images_per_prompt=3, guidance_scale=1.5, generator=g, top_k=20)
    assert torch.equal(again.tokens, out.tokens)
    other = pipe(class_labels=[2, 0], num_images_per_prompt=3, guidance_scale=1.5, generator=6, top_k=20)
    assert not torch.equal(other.tokens, out.tokens)
    # the tokenizer round trip: decoding the generated ids gives the same images
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(pipe.tokenizer.decode(out.tokens)), written))
    ids = pipe.tokenizer.encode(out.images)
    assert ids.shape == (6, pipe.tokenizer.num_tokens) and ids.dtype == torch.long
    with pytest.raises(VimtoolError, match="not prompts"):
        pipe.generate("a red circle")


def test_parti_api_gives_the_best_of_the_sample_commands_reranked_images(parti_world, tmp_path):
    prompt = "a red circle top left"
    paths = _cli_sample(["-c", str(parti_world["ckpt"]), "--prompt", prompt, "-n", "6", "--guidance-scale", "3",
                         "--seed", "0", "--rerank", "likelihood"], tmp_path / "cli")  # fmt: skip
    assert [p.name for p in paths] == [f"p000_s{k:02d}.png" for k in range(6)]
    written = [np.asarray(Image.open(p)) for p in paths]
    pipe = vimtool.load(str(parti_world["ckpt"]), device="cpu")
    images = pipe.generate(prompt, n=4, guidance=3.0, rerank=6, seed=0)  # the 4 best of 6 candidates
    assert len(images) == 4 and all(np.array_equal(a, b) for a, b in zip(_pixels(images), written[:4]))
    out = pipe(prompt, num_images_per_prompt=6, guidance_scale=3.0, generator=torch.manual_seed(0), output_type="pt")
    assert out.images.shape[0] == 6 and bool((out.scores[:-1] >= out.scores[1:]).all())  # best first
    with pytest.raises(VimtoolError, match="at least n"):
        pipe.generate(prompt, n=4, rerank=2)
    with pytest.raises(VimtoolError, match="from prompts"):
        pipe.generate(3)


def test_load_refuses_a_tokenizer_and_load_tokenizer_reads_one(vim_world):
    with pytest.raises(VimtoolError, match="load_tokenizer"):
        vimtool.load(str(vim_world["tokenizer"]))
    tok = vimtool.load_tokenizer(str(vim_world["tokenizer"]), device="cpu")
    ids = tok.encode(Image.new("RGB", (40, 30), "red"))  # resized and centre-cropped to the tokenizer's size
    assert ids.shape == (1, 16) and tok.decode(ids)[0].size == (16, 16)


# ------------------------------------------------------------------------------------------- Hub-style models
def _models():
    from vimtool.models.parti import Parti
    from vimtool.models.parti import size_config as parti_size
    from vimtool.models.vim import VIM
    from vimtool.models.vim import size_config as vim_size
    from vimtool.models.vitvqgan import ViTVQGAN
    from vimtool.models.vitvqgan import size_config as tok_size

    torch.manual_seed(0)
    return [
        ViTVQGAN(tok_size("micro")),
        VIM(vim_size("micro", vocab_size=64, grid=(4, 4), num_classes=3)),
        Parti(parti_size("micro", text_vocab_size=300, codebook_size=64, grid=(4, 4))),
    ]


def test_save_pretrained_then_from_pretrained_round_trips_every_family(tmp_path, monkeypatch):
    for model in _models():
        cls, name = type(model), model.model_type
        folder = model.save_pretrained(tmp_path / name)
        assert _same_weights(model, cls.from_pretrained(folder))
        commit = hub_cache(tmp_path / "hub", f"user/{name}", folder)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.chdir(tmp_path / "hub")  # no local folder named like the repo
        from_hub = cls.from_pretrained(f"user/{name}", revision=commit)
        assert _same_weights(model, from_hub) and not from_hub.training
        card = (folder / "README.md").read_text()
        assert yaml.safe_load(card.split("---")[1])["pipeline_tag"] == ckpt.PIPELINE_TAGS[name]
        monkeypatch.chdir(tmp_path)
    tok, vim, _ = _models()
    with pytest.raises(VimtoolError, match="'vitvqgan' checkpoint, not VIM"):
        type(vim).from_pretrained(tok.save_pretrained(tmp_path / "tok2"))


def test_push_to_hub_uploads_a_saved_folder_with_the_repo_in_its_card(tmp_path, monkeypatch):
    import huggingface_hub

    seen: dict = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: None)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        seen.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
        return "https://huggingface.co/user/tok/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    tok = _models()[0]
    assert tok.push_to_hub("user/tok").endswith("commit/0")
    assert sorted(seen) == ["README.md", "config.json", "model.safetensors"]
    assert 'vimtool.load_tokenizer("user/tok")' in seen["README.md"].decode()


# ------------------------------------------------------------------------------------------- self-contained
def test_a_moved_checkpoint_samples_after_its_tokenizer_is_deleted(tmp_path):
    from vimtool.train.lm import train_lm

    tok = make_tokenizer(tmp_path / "tok")
    shards = make_shards(tmp_path / "shards", tok, n=48)
    final = train_lm(lm_config(shards, tmp_path / "run", steps=2))
    embedded = final / ckpt.TOKENIZER_DIR
    assert (embedded / "model.safetensors").read_bytes() == (tok / "model.safetensors").read_bytes()
    assert json.loads((embedded / "config.json").read_text()) == json.loads((tok / "config.json").read_text())
    before = _cli_sample(["-c", str(final), "--class", "1", "-n", "2"], tmp_path / "before")
    moved = shutil.move(str(final), str(tmp_path / "elsewhere" / "vim"))
    shutil.rmtree(tok)
    shutil.rmtree(tmp_path / "run")
    after = _cli_sample(["-c", moved, "--class", "1", "-n", "2"], tmp_path / "after")
    assert [np.asarray(Image.open(p)).tolist() for p in after] == [np.asarray(Image.open(p)).tolist() for p in before]
    # the guard stays: an explicit tokenizer must be the recorded one
    other = make_tokenizer(tmp_path / "other", seed=1)
    res = runner.invoke(app, ["sample", "-c", moved, "--class", "1", "--tokenizer", str(other), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "error: " in res.output and "tokenizer mismatch" in res.output


def test_a_stage2_checkpoint_from_a_hub_cache_samples_without_its_tokenizer(parti_world, tmp_path, monkeypatch):
    src = shutil.copytree(parti_world["ckpt"], tmp_path / "parti")
    meta = json.loads((src / "config.json").read_text())
    meta["tokenizer_path"] = str(tmp_path / "gone")  # as on another machine: the recorded path does not exist
    (src / "config.json").write_text(json.dumps(meta))
    assert (src / "tokenizer.json").is_file() and (src / ckpt.TOKENIZER_DIR / "model.safetensors").is_file()
    hub_cache(tmp_path / "hub", "user/parti", src)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path / "hub")
    paths = _cli_sample(["-c", "user/parti", "--prompt", "a blue square", "-n", "2"], tmp_path / "out")
    assert len(paths) == 2
    pipe = vimtool.load("user/parti", device="cpu")
    again = _pixels(pipe.generate("a blue square", n=2))
    assert all(np.array_equal(a, np.asarray(Image.open(p))) for a, p in zip(again, paths))
    assert pipe.tokenizer.identity["sha256"] == meta["tokenizer"]["sha256"]


def test_a_hub_tokenizer_is_pinned_by_commit_and_a_wrong_one_never_embedded(tmp_path, monkeypatch, caplog):
    from vimtool.models.vim import VIM, size_config

    tok = make_tokenizer(tmp_path / "tok")
    commit = hub_cache(tmp_path / "hub", "user/tok", tok)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path / "hub")
    identity = ckpt.tokenizer_identity("user/tok")
    vim = VIM(size_config("micro", vocab_size=64, grid=(4, 4)))
    folder = ckpt.save_stage2(vim, tmp_path / "vim", extra={"tokenizer": identity, "tokenizer_path": "user/tok"})
    assert ckpt.read_config(folder)["tokenizer_revision"] == commit and not (folder / ckpt.TOKENIZER_DIR).exists()
    shutil.rmtree(tok)  # only the Hub cache holds it now
    pipe = vimtool.load(str(folder), device="cpu")
    assert pipe.tokenizer.identity["sha256"] == identity["sha256"] and len(pipe.generate(None, n=1)) == 1
    other = make_tokenizer(tmp_path / "other", seed=1)
    assert ckpt.find_tokenizer(str(other), identity["sha256"]) == ckpt.TokenizerOrigin()
    assert "not the one the shards record" in caplog.text


def test_a_loaded_stage2_model_saves_with_its_pairing_and_tokenizers(parti_world, tmp_path):
    from vimtool.models.parti import Parti

    model = Parti.from_pretrained(parti_world["ckpt"])
    copy = model.save_pretrained(tmp_path / "copy")
    assert (copy / "tokenizer.json").is_file() and (copy / ckpt.TOKENIZER_DIR / "config.json").is_file()
    assert ckpt.read_config(copy)["tokenizer"] == ckpt.read_config(parti_world["ckpt"])["tokenizer"]
    assert len(vimtool.load(str(copy), device="cpu").generate("a red circle", n=1)) == 1


# ------------------------------------------------------------------------------------------- model cards
def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _snippet(card: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert ckpt.CARD_PLACEHOLDER in code
    return code


def test_model_cards_carry_front_matter_and_a_snippet_that_runs(vim_world, parti_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippets save sample.png
    for folder, tag in (
        (vim_world["ckpt"], "unconditional-image-generation"),
        (parti_world["ckpt"], "text-to-image"),
        (vim_world["tokenizer"], "image-to-image"),
    ):
        card = (Path(folder) / "README.md").read_text()
        front = _front_matter(card)
        assert front["license"] == "apache-2.0" and front["library_name"] == "vimtool"
        assert front["pipeline_tag"] == tag and "vimtool" in front["tags"]
        if tag != "image-to-image":  # trained by the engine: the final evaluation is the model-index result
            (result,) = front["model-index"][0]["results"]
            metrics = {m["type"]: m["value"] for m in result["metrics"]}
            assert metrics["val_loss"] > 0 and result["task"]["type"] == tag
        code = _snippet(card).replace(ckpt.CARD_PLACEHOLDER, str(folder))
        scope: dict = {}
        exec(compile(code, f"{folder}/README.md", "exec"), scope)
        images = scope.get("images")
        assert images and all(isinstance(im, Image.Image) for im in images)
    assert Image.open(tmp_path / "sample.png").size == (16, 16)


def test_a_card_names_a_hub_dataset(tmp_path):
    card = ckpt.model_card({"model_type": "vim", "config": {}}, {"data": "user/dataset:train", "metrics": {}})
    front = _front_matter(card)
    assert front["datasets"] == ["user/dataset"] and "model-index" not in front
