"""Classifiers that judge generated samples: the probe heads `vimtool probe` writes, read back to score tokens.

    load_probe_head(folder).probabilities(tokens=..., lm=..., tokenizer=...) -> (N, C) class probabilities

A head folder holds head.safetensors (weight, bias, feature mean/std; an MLP head also hidden_weight/hidden_bias)
and head.json (what features it reads -- `lm` block outputs, decoded `pixels`, `raw_pixels`, a `tokens` histogram --,
its classes, its held-out top-1 and the LM / tokenizer it belongs to). The sampler's rejection sampling and its
judge use them (VIM section 4); `vimtool.probe` trains them and re-exports these names. They live here, below
both, so that sampling never imports the probe command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vimtool.atomic import write_json
from vimtool.checkpoint import WEIGHTS_FILE, sha256_file
from vimtool.errors import VimtoolError
from vimtool.sampling.decode import decode_tokens

HEAD_WEIGHTS, HEAD_META = "head.safetensors", "head.json"
FEATURES = ("lm", "pixels", "tokens", "raw_pixels")


# ----------------------------------------------------------------------------------------------- features
@torch.no_grad()
def lm_block_features(lm, tokens: torch.Tensor, blocks: list[int], batch_size: int = 128) -> dict[int, torch.Tensor]:
    """{block (1-based): (N, D) token-averaged outputs} of the frozen LM, fed with the unconditional start."""
    lm.eval()
    device = lm.tok_emb.weight.device
    out: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for start in range(0, len(tokens), batch_size):
        layers = lm.block_outputs(tokens[start : start + batch_size].to(device), None)  # depth x (B, T, D)
        for b in blocks:
            out[b].append(layers[b - 1].float().mean(dim=1).cpu())  # average-pool over positions: (B, D)
    return {b: torch.cat(v) for b, v in out.items()}


@torch.no_grad()
def pixel_features(tokenizer, tokens: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """(N, 3 * H * W) flattened images in [-1, 1] decoded from the tokens."""
    return decode_tokens(tokenizer, tokens, batch_size).flatten(1)


def token_histogram(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(N, V) bag of tokens: the fraction of each id among an image's tokens."""
    hist = torch.zeros(tokens.shape[0], vocab_size)
    hist.scatter_add_(1, tokens.long().cpu(), torch.ones(tokens.shape, dtype=hist.dtype))
    return hist / tokens.shape[1]


def predict_proba(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Class probabilities of a linear head, or of an MLP head (params with "hidden_weight"/"hidden_bias")."""
    z = (x.float() - params["mean"]) / params["std"]
    if "hidden_weight" in params:
        z = torch.relu(z @ params["hidden_weight"].T + params["hidden_bias"])  # (N, H)
    return torch.softmax(z @ params["weight"].T + params["bias"], dim=1)  # (N, C)


# ----------------------------------------------------------------------------------------------- heads
class ProbeHead:
    """A saved linear classifier and what it reads (see the module docstring)."""

    def __init__(self, meta: dict[str, Any], params: dict[str, torch.Tensor]) -> None:
        if meta.get("feature") not in FEATURES:
            raise VimtoolError(
                f"probe head reads unknown features {meta.get('feature')!r}; re-create it with vimtool probe"
            )
        self.meta, self.params = meta, params

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        tmp = folder.with_name(f".tmp-{folder.name}")
        tmp.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.params.items()}, str(tmp / HEAD_WEIGHTS))
        write_json(tmp / HEAD_META, self.meta)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    def check_compatible(self, checkpoint_folder: Path, identity: dict[str, Any]) -> None:
        """Refuse to score samples of another LM (lm heads) or another tokenizer (token/pixel heads)."""
        m = self.meta
        if m["feature"] == "lm" and m.get("lm_sha256") != sha256_file(Path(checkpoint_folder) / WEIGHTS_FILE):
            raise VimtoolError(
                f"probe head {m.get('path')} reads block {m.get('block')} of LM {m.get('lm')}, not of {checkpoint_folder}; "
                "use it with that checkpoint, or pass a pixels head (vimtool probe writes head_pixels/)"
            )
        if m["feature"] == "tokens" and m.get("tokenizer_sha256") != identity.get("sha256"):
            raise VimtoolError(
                "this bag-of-tokens probe head was trained on another tokenizer's tokens; use a pixels head"
            )
        if m["feature"] in ("pixels", "raw_pixels") and m.get("image_size") not in (None, identity.get("image_size")):
            raise VimtoolError(
                f"this pixels probe head reads {m.get('image_size')}px images but the tokenizer makes {identity.get('image_size')}px"
            )

    @torch.no_grad()
    def features(self, tokens: torch.Tensor, lm=None, tokenizer=None, batch_size: int = 128) -> torch.Tensor:
        kind = self.meta["feature"]
        if kind == "lm":
            if lm is None:
                raise VimtoolError("this probe head reads LM features: give the LM it was trained on")
            block = int(self.meta["block"])
            return lm_block_features(lm, tokens, [block], batch_size)[block]
        if kind in ("pixels", "raw_pixels"):  # a head on images: samples are judged on their decoded images
            if tokenizer is None:
                raise VimtoolError("this probe head reads pixels: give the tokenizer to decode with")
            return pixel_features(tokenizer, tokens, batch_size)
        return token_histogram(tokens, int(self.meta["vocab_size"]))

    def probabilities(self, tokens: torch.Tensor, lm=None, tokenizer=None) -> torch.Tensor:
        """(N, T) token ids -> (N, C) class probabilities."""
        return predict_proba(self.params, self.features(tokens, lm, tokenizer))


def load_probe_head(folder: str | Path) -> ProbeHead:
    """A head folder written by `vimtool probe` (head.json + head.safetensors)."""
    folder = Path(folder)
    if not (folder / HEAD_META).is_file() or not (folder / HEAD_WEIGHTS).is_file():
        raise VimtoolError(
            f"{folder} is not a probe head (needs {HEAD_META} and {HEAD_WEIGHTS}); make one with vimtool probe"
        )
    meta = json.loads((folder / HEAD_META).read_text(encoding="utf-8"))
    meta["path"] = str(folder)
    return ProbeHead(meta, load_file(str(folder / HEAD_WEIGHTS)))


__all__ = [
    "FEATURES",
    "HEAD_META",
    "HEAD_WEIGHTS",
    "ProbeHead",
    "lm_block_features",
    "load_probe_head",
    "pixel_features",
    "predict_proba",
    "token_histogram",
]
