"""`save_pretrained` / `from_pretrained` / `push_to_hub` on vimtool's models, over checkpoint.py's folder format.

    tok = ViTVQGAN.from_pretrained("runs/tok/final")          # a folder, a run folder or a Hub repo id (+ revision)
    vim = VIM.from_pretrained("user/vim-mnist", revision="main")
    vim.save_pretrained("elsewhere")                          # config.json + model.safetensors + README.md (+ pairing)
    vim.push_to_hub("user/vim-mnist-copy")

Why not huggingface_hub's `PyTorchModelHubMixin`: it writes config.json as the keyword arguments of `__init__`
and rebuilds with `cls(**config)`, while a vimtool checkpoint's config.json is {"model_type", "config": the config
dataclass, software, tokenizer pairing, ...} read by the registry (checkpoint.load_model). Both formats cannot
hold at once, and every existing checkpoint and `vimtool` command reads this one; so this mixin only delegates to
checkpoint.save_model / load_model / push_to_hub: one copy of the format.

A model loaded with `from_pretrained` remembers where it came from: `save_pretrained` then keeps what makes a
stage-2 checkpoint usable on its own, its recorded tokenizer pairing (config.json extras), the embedded image
tokenizer/ and Parti's text tokenizer.json, so `VIM.from_pretrained(a).save_pretrained(b)` samples like `a`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch

from vimtool import checkpoint as ckpt
from vimtool.data.text import FILE_NAME as TEXT_TOKENIZER_FILE
from vimtool.data.text import TextTokenizer
from vimtool.errors import VimtoolError

M = TypeVar("M", bound="HubMixin")

# config.json keys written by save_model itself; every other key is an `extra` (tokenizer pairing, training facts)
_OWN_KEYS = ("model_type", "config", "vimtool_version", "software")


class HubMixin:
    """Hub-style loading and saving for a model class with `model_type` and a dataclass `.config` (registered)."""

    @classmethod
    def from_pretrained(
        cls: type[M], spec: str | Path, revision: str | None = None, map_location: str | torch.device = "cpu"
    ) -> M:
        """Load from a checkpoint folder, a run folder (its final/latest), a pointer, or a Hub repo id + revision."""
        folder = ckpt.resolve(spec, revision)
        model = ckpt.load_model(folder, map_location=map_location)
        if not isinstance(model, cls):
            raise VimtoolError(
                f"{spec} is a '{ckpt.read_config(folder)['model_type']}' checkpoint, not {cls.__name__}; "
                f"load it with {type(model).__name__}.from_pretrained (or vimtool.load for a stage-2 model)"
            )
        meta = ckpt.read_config(folder)
        model._pretrained = {"folder": folder, "extra": {k: v for k, v in meta.items() if k not in _OWN_KEYS}}
        return model

    def save_pretrained(
        self, folder: str | Path, card: dict[str, Any] | None = None, extra: dict | None = None
    ) -> Path:
        """Write config.json + model.safetensors + README.md (checkpoint.save_model) into `folder`; returns it.

        extra: config.json entries beside the config (default: those of the checkpoint this model was loaded
        from, with its embedded tokenizer/ and tokenizer.json copied along)."""
        source = getattr(self, "_pretrained", None) or {}
        folder = ckpt.save_model(self, folder, card=card, extra=source.get("extra") if extra is None else extra)
        src = source.get("folder")
        if src is not None and extra is None:
            if (src / ckpt.TOKENIZER_DIR / ckpt.CONFIG_FILE).is_file():
                ckpt.embed_tokenizer(folder, src / ckpt.TOKENIZER_DIR)
            if (src / TEXT_TOKENIZER_FILE).is_file():
                TextTokenizer.load(src / TEXT_TOKENIZER_FILE).save(folder / TEXT_TOKENIZER_FILE)  # atomic write
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
        card: dict[str, Any] | None = None,
    ) -> str:
        """save_pretrained into a temporary folder and upload it to the Hub repo `repo_id`; returns the commit URL."""
        with tempfile.TemporaryDirectory(prefix="vimtool-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model", card={"repo_id": repo_id, **(card or {})})
            return ckpt.push_to_hub(folder, repo_id, private=private, commit_message=commit_message, revision=revision)


__all__ = ["HubMixin"]
