"""Stage 2 -> pixels: load the image tokenizer a stage-2 checkpoint records, and decode token ids with it.

Used by vimtool/pipeline.py (which `sample` and `probe` go through) and the probe heads' pixel features
(sampling/classifier.py), so the pairing guard lives in one place.
"""

from __future__ import annotations

from typing import Any

import torch

from vimtool.errors import VimtoolError


def load_paired_tokenizer(meta: dict[str, Any], override: str | None, checkpoint: str, device: torch.device):
    """The tokenizer a stage-2 checkpoint records (or `override`, which must be that same tokenizer).

    Returns `(tokenizer model in eval mode on device, its identity dict)`.
    """
    from vimtool.checkpoint import check_pairing, load_model, tokenizer_identity

    path = override or meta.get("tokenizer_path") or (meta.get("tokenizer") or {}).get("name")
    if not path:
        raise VimtoolError(f"{checkpoint} records no image tokenizer to decode with; pass --tokenizer TOKENIZER_CKPT")
    try:
        identity = tokenizer_identity(path)
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
    return load_model(path).to(device).eval(), identity


@torch.no_grad()
def decode_tokens(tokenizer, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, T) ids -> (N, 3, H, W) images in [-1, 1] on the CPU."""
    device = next(tokenizer.parameters()).device
    out = [
        tokenizer.decode(tokens[i : i + batch_size].to(device)).float().clamp(-1, 1).cpu()
        for i in range(0, len(tokens), batch_size)
    ]
    return torch.cat(out)
