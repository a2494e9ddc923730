"""The VIM language-model task (`vimtool train-lm`): next-token prediction over token shards, through the engine.

Stage 2 of VIM (arXiv 2110.04627, section 4; docs/PAPERS.md section 2). The data are Parquet token shards
(vimtool/data/shards.py) made by `tokenize-dataset`; their metadata fixes the vocabulary (codebook size) and
the grid, so the model config takes them from there, and the checkpoint records the tokenizer identity
(`extra=tokenizer_record(identity)`: the identity and the tokenizer's absolute path) so `sample` decodes with that tokenizer and no other;
every checkpoint carries that tokenizer as tokenizer/ (checkpoint.save_stage2), so it decodes after a move or a Hub push.

- Unconditional, or class-conditional (`conditional: auto` = when every training row has a label). The number
  of classes is the largest label + 1 unless `num_classes` is given. `model.label_dropout` (default 0.1)
  trains the null class for classifier-free guidance.
- Validation: `val_shards`, else about `val_fraction` of the training rows, held out by the split every command
  shares (`vimtool.data.shards.held_out_rows`: a stable hash of each row's source id).
  Reported as `val_bits_per_token` = mean next-token cross-entropy / ln 2 (the log-likelihood unit of
  iGPT/VIM), plus `val_loss` in nats.
- Training defaults are the paper's (batch 1024, 450k steps, Adam b1 0.9 b2 0.96, warmup to 4.5e-4 over 5k steps,
  exponential decay to 1e-5 from step 80k); recipes/vim_*.yaml shrink them for CPU runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vimtool import checkpoint as ckpt
from vimtool.config import ConfigError, build, to_dict
from vimtool.data.shards import (
    MAX_CLASSES,
    TokenizerIdentity,
    held_out_rows,
    load_token_table,
    read_source_ids,
    shard_paths_of,
    tokenizer_record,
)
from vimtool.errors import VimtoolError
from vimtool.models.vim import SIZES, VIM, VIMConfig, sequence_bits
from vimtool.train.engine import StepOutput, Task, TrainConfig, train

log = logging.getLogger(__name__)


def _paper_train_defaults() -> TrainConfig:
    # docs/PAPERS.md section 2: batch 1024, 450k steps, Adam(0.9, 0.96), warmup to 4.5e-4 over 5k, exp decay to 1e-5 from 80k.
    return TrainConfig(
        steps=450_000, batch_size=1024, lr=4.5e-4, min_lr=1e-5, warmup_steps=5000, schedule="exp", decay_start=80_000,
        betas=(0.9, 0.96), weight_decay=0.0, eval_every=5000, save_every=5000,
    )  # fmt: skip


@dataclass
class LMRunConfig:
    """Settings of `train-lm` (recipe keys; `--set model.dropout=0`, `--set train.steps=2000`, ...)."""

    shards: list[str] = field(default_factory=list)  # paths, globs, folders, or "-" (paths on stdin)
    val_shards: list[str] = field(default_factory=list)
    val_fraction: float = 0.05  # held out of the training rows when no val_shards are given (0 = no validation)
    val_batches: int = 0  # 0 = the whole validation set at each evaluation
    size: str = "tiny"  # base, large (paper), small, tiny (CPU), micro (tests)
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the size's fields (dim, depth, dropout, ...)
    conditional: Literal["auto", "yes", "no"] = "auto"
    num_classes: int | None = None  # default: largest training label + 1
    train: TrainConfig = field(default_factory=_paper_train_defaults)

    def model_config(self, vocab_size: int, grid: tuple[int, int], num_classes: int) -> VIMConfig:
        if self.size not in SIZES:
            raise ConfigError(f"unknown VIM size {self.size!r}; use one of {', '.join(SIZES)}")
        data = to_dict(SIZES[self.size])
        for key in ("vocab_size", "grid", "num_classes"):
            if key in self.model:
                raise ConfigError(
                    f"model.{key} comes from the token shards (and conditional/num_classes); do not set it"
                )
        data.update(self.model)
        data.update(vocab_size=vocab_size, grid=list(grid), num_classes=num_classes)
        return build(VIMConfig, data, prefix="model.")


class TokenRows(torch.utils.data.Dataset):
    """Rows of an in-memory token table: {"tokens": (T,) int64, "label": int64 (-1 = none)}."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        self.tokens, self.labels = tokens, labels

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i], "label": self.labels[i]}


def load_lm_data(cfg: LMRunConfig):
    """-> (train TokenRows, val TokenRows | None, identity dict, num_classes) after every check."""
    if not cfg.shards:
        raise VimtoolError("train-lm needs token shards: --shards PATHS (files, folders, globs, or '-' for stdin)")
    if cfg.shards.count("-") + cfg.val_shards.count("-") > 1:
        raise VimtoolError("only one of --shards / --val-shards can read paths from stdin ('-')")
    files = shard_paths_of(cfg.shards)  # files, folders, globs, stdin, save_to_disk folders, Hub ids
    tokens, labels, _, identity = load_token_table(files)
    val = None
    if cfg.val_shards:
        vfiles = shard_paths_of(cfg.val_shards)
        vt, vl, _, vid = load_token_table(vfiles)
        if vid != identity:
            raise VimtoolError(
                f"validation shards come from tokenizer {vid.name} ({vid.sha256[:12]}) but training shards "
                f"from {identity.name} ({identity.sha256[:12]}); use shards of one tokenizer"
            )
        val = (vt, vl)
    elif cfg.val_fraction > 0:  # the split every command shares (data/shards.py: a hash of each row's source id)
        is_val = held_out_rows(read_source_ids(files), cfg.val_fraction)
        val = (tokens[is_val], labels[is_val])
        tokens, labels = tokens[~is_val], labels[~is_val]

    has_labels = bool((labels >= 0).all())
    conditional = cfg.conditional == "yes" or (cfg.conditional == "auto" and has_labels)
    if cfg.conditional == "yes" and not has_labels:
        raise VimtoolError("conditional=yes needs a label on every training row; these shards have rows without one")
    num_classes = 0
    if conditional:
        top = int(labels.max()) + 1
        num_classes = cfg.num_classes if cfg.num_classes is not None else top
        if num_classes < top:
            raise VimtoolError(f"num_classes={num_classes} but the shards hold label {top - 1}; raise num_classes")
        if num_classes > MAX_CLASSES:  # the class table would have that many rows
            raise VimtoolError(f"num_classes={num_classes} is more than {MAX_CLASSES}; give the real number of classes")
        if val is not None and bool(((val[1] < 0) | (val[1] >= num_classes)).any()):
            raise VimtoolError(f"validation rows need labels in [0, {num_classes}) for a class-conditional model")
    log.info("train-lm: %d training rows, %s validation rows, %d tokens each, vocab %d, %s",
             len(tokens), len(val[0]) if val else 0, identity.num_tokens, identity.codebook_size,
             f"{num_classes} classes" if conditional else "unconditional")  # fmt: skip
    train_rows = TokenRows(tokens, labels if conditional else torch.full_like(labels, -1))
    val_rows = TokenRows(val[0], val[1] if conditional else torch.full_like(val[1], -1)) if val else None
    return train_rows, val_rows, identity.to_dict(), num_classes


def _labels_or_none(labels: torch.Tensor, conditional: bool) -> torch.Tensor | None:
    return labels if conditional else None


@torch.no_grad()
def validation_bits(model: VIM, rows: TokenRows, batch_size: int = 64, max_batches: int = 0) -> dict[str, float]:
    """Mean next-token cross-entropy on `rows`: bits per token (and nats)."""
    device = model.tok_emb.weight.device
    total, count = 0.0, 0
    for k, start in enumerate(range(0, len(rows), batch_size)):
        if max_batches and k >= max_batches:
            break
        toks = rows.tokens[start : start + batch_size].to(device)
        labels = _labels_or_none(rows.labels[start : start + batch_size].to(device), model.config.conditional)
        total += float(sequence_bits(model, toks, labels).sum())
        count += toks.numel()
    bits = total / max(count, 1)
    return {"val_bits_per_token": bits, "val_loss": bits * math.log(2)}


class LMTask(Task):
    """Next-token prediction over token shards (the engine runs it)."""

    name = "vim"

    def __init__(self, cfg: LMRunConfig) -> None:
        self.cfg = cfg
        self.train_rows, self.val_rows, self.identity, num_classes = load_lm_data(cfg)
        grid = tuple(self.identity["grid"])
        self.model_cfg = cfg.model_config(self.identity["codebook_size"], grid, num_classes)

    def build_models(self) -> dict[str, nn.Module]:
        model = VIM(self.model_cfg)
        log.info(
            "VIM %s: %.2fM parameters, %s",
            self.cfg.size,
            sum(p.numel() for p in model.parameters()) / 1e6,
            to_dict(self.model_cfg),
        )
        return {"model": model}

    def train_dataset(self):
        return self.train_rows

    def train_step(self, models: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        tokens = batch["tokens"]  # (B, T)
        labels = _labels_or_none(batch["label"], self.model_cfg.conditional)
        logits = models["model"](tokens[:, :-1], labels)  # (B, T, V); forward() so DDP syncs gradients
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        return StepOutput(losses={"model": loss}, metrics={"bits_per_token": loss.detach() / math.log(2)})

    def evaluate(self, models: dict[str, nn.Module], step: int, out_dir: Path) -> dict[str, float]:
        if self.val_rows is None:
            return {}
        bs = max(1, min(256, self.cfg.train.batch_size))
        return validation_bits(models["model"], self.val_rows, bs, self.cfg.val_batches)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**tokenizer_record(TokenizerIdentity.from_dict(self.identity)),
                "training": {"shards": [str(s) for s in self.cfg.shards], "size": self.cfg.size}}  # fmt: skip

    def save_model(self, model: nn.Module, folder: Path, card: dict) -> None:
        ckpt.save_stage2(model, folder, card=card, extra=self.checkpoint_extra())  # carries its image tokenizer

    def card_info(self) -> dict[str, Any]:
        return {"data": ", ".join(map(str, self.cfg.shards))[:200], "size": self.cfg.size,
                "title": f"VIM-{self.cfg.size} (arXiv 2110.04627)"}  # fmt: skip


def train_lm(cfg: LMRunConfig) -> Path:
    """Train VIM on token shards; returns the final checkpoint folder."""
    return train(LMTask(cfg), cfg.train)


__all__ = ["LMRunConfig", "LMTask", "TokenRows", "load_lm_data", "train_lm", "validation_bits"]
