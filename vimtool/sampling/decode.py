"""Stage 2 -> pixels: load the image tokenizer a stage-2 checkpoint records, and decode token ids with it.

Used by vimtool/pipeline.py (which `sample` and `probe` go through) and the probe heads' pixel features
(sampling/classifier.py), so the pairing guard lives in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vimtool.errors import VimtoolError


def load_paired_tokenizer(
    meta: dict[str, Any], override: str | None, checkpoint: str, device: torch.device, folder: str | Path | None = None
):
    """The tokenizer a stage-2 checkpoint pairs with (or `override`, which must be that same tokenizer).

    Without `override`: the checkpoint's embedded tokenizer/ (in `folder`, default `checkpoint` when it is a
    local folder), else the recorded path or Hub repo id (+ commit); checkpoint.paired_tokenizer_location.
    Returns `(tokenizer model in eval mode on device, its identity dict)`.
    """
    from vimtool.checkpoint import check_pairing, load_model, paired_tokenizer_location, tokenizer_identity

    path, revision = override, None
    if not override:
        path, revision = paired_tokenizer_location(folder if folder is not None else checkpoint, meta)
    if not path:
        raise VimtoolError(f"{checkpoint} records no image tokenizer to decode with; pass --tokenizer TOKENIZER_CKPT")
    try:
        identity = tokenizer_identity(path, revision=revision)
    except VimtoolError as e:
        hint = "" if override else " (the path recorded in the checkpoint; pass --tokenizer to give its new place)"
        raise VimtoolError(f"image tokenizer {path}: {e}{hint}") from None
    check_pairing(meta, identity)
    cfg = meta.get("config") or {}
    codes = cfg.get("vocab_size", cfg.get("codebook_size"))  # VIM calls it vocab_size, Parti codebook_size
    if (
        codes is not None
        and "grid" in cfg
        and (identity["codebook_size"] != codes or list(identity["grid"]) != list(cfg["grid"]))
    ):
        raise VimtoolError(
            f"image tokenizer {path} has {identity['codebook_size']} codes on grid {identity['grid']} but {checkpoint} "
            f"models {codes} codes on grid {cfg['grid']}; pass the tokenizer it was trained with"
        )
    return load_model(path, revision).to(device).eval(), identity


@torch.no_grad()
def decode_tokens(tokenizer, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, T) ids -> (N, 3, H, W) images in [-1, 1] on the CPU."""
    device = next(tokenizer.parameters()).device
    out = [
        tokenizer.decode(tokens[i : i + batch_size].to(device)).float().clamp(-1, 1).cpu()
        for i in range(0, len(tokens), batch_size)
    ]
    return torch.cat(out)
