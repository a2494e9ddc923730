"""The Parti training task (`vimtool train-t2i`): captioned token shards -> a text-to-image transformer.

Stage 2 of Parti (arXiv 2206.10789; docs/PAPERS.md section 3), run by the ONE engine loop (vimtool/train/engine.py):

1. The captions of the training shards train the text tokenizer (vimtool/data/text.py; byte-level BPE, at
   most `text_vocab_size` entries, Parti's 16k by default); it is saved in every checkpoint as tokenizer.json.
2. Each step: next-image-token cross-entropy given the prompt; a `cond_drop` fraction of rows (default 0.1,
   the paper leaves the rate unstated) see the learned null condition instead of their prompt, which is what
   classifier-free guidance needs at sampling time. With `image_shards` (uncaptioned images), those rows show
   a random one of these images instead of their own, so the unconditional model learns them too.
3. Evaluation: the same loss on held-out rows (`val_shards`, or about `val_fraction` of the training rows, held
   out by the split every command shares: `vimtool.data.shards.held_out_rows`), with and without the prompt;
   their difference ("nats the prompt is worth") shows whether the model uses the text at all.

Training defaults are the paper's (Adafactor there; AdamW with b1=0.9 b2=0.96 here, lr 4.5e-5, 5k warmup then
exponential decay, grad-norm clip 4.0, dropout 0.1 in the model, no EMA); the CPU recipes shrink them.
The checkpoint records the image tokenizer's identity (from the shards) and its path, like VIM's, so that
`sample` decodes with exactly that tokenizer and refuses any other, and carries it as tokenizer/
(checkpoint.save_stage2): with tokenizer.json the folder is all `sample` needs, wherever it goes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vimtool import checkpoint as ckpt
from vimtool.config import ConfigError, build, to_dict
from vimtool.data.shards import held_out_rows, load_token_table, read_source_ids, tokenizer_record
from vimtool.data.text import MAX_VOCAB, TextTokenizer
from vimtool.errors import VimtoolError
from vimtool.models.parti import SIZES, Parti, PartiConfig
from vimtool.pipes import expand_paths
from vimtool.train.engine import StepOutput, Task, TrainConfig, train

log = logging.getLogger(__name__)


def _paper_train_defaults() -> TrainConfig:
    # docs/PAPERS.md section 3: b1 0.9, b2 0.96, lr 4.5e-5, 5k warmup, exponential decay, clip 4.0, no EMA.
    return TrainConfig(
        steps=450_000, batch_size=256, lr=4.5e-5, min_lr=1e-6, warmup_steps=5000, schedule="exp", decay_start=0,
        betas=(0.9, 0.96), weight_decay=0.0, clip_grad=4.0, eval_every=5000, save_every=5000,
    )  # fmt: skip


@dataclass
class T2IRunConfig:
    """Settings of `train-t2i` (recipe keys; `--set model.dec_depth=6`, `--set cond_drop=0.2`, ...)."""

    shards: list[str] = field(default_factory=list)  # captioned token shards: paths, globs, folders or '-'
    val_shards: list[str] = field(default_factory=list)  # held-out shards; empty -> val_fraction of the rows
    val_fraction: float = 0.02
    val_rows: int = 512  # at most this many held-out rows per evaluation
    size: str = "tiny"  # a named size of vimtool.models.parti.SIZES; `model` overrides its fields
    model: dict[str, Any] = field(default_factory=dict)
    text_vocab_size: int = MAX_VOCAB  # upper bound; small caption sets give fewer entries
    text_kind: str = "bpe"  # bpe (byte-level, never unknown) or unigram (SentencePiece's model)
    text_max_len: int | None = None  # default: the size's max_text_len (128 for the paper sizes)
    lowercase: bool = True
    cond_drop: float = 0.1  # fraction of training rows conditioned on the learned null (classifier-free guidance)
    # NOT in the paper (0 = off): each prompt token other than <s> and </s> is hidden from the encoder with this
    # probability in training rows (masked, as padding is), so the model also sees partial prompts ("a red ...",
    # "a ... triangle") and has to read each word on its own rather than only whole familiar captions.
    text_drop: float = 0.0
    # NOT in the paper: token shards of images without (or with ignored) captions. The rows that see the null
    # condition (`cond_drop`) take their image tokens from these instead of from a captioned row, so the
    # unconditional model, and the decoder it shares with the conditional one, also learn images that no caption
    # describes (uncaptioned data; the quickstart: every colour-shape pair, held-out ones included, from other scenes
    # than its captioned ones). Empty: the null rows keep their own images (the paper's classifier-free guidance).
    image_shards: list[str] = field(default_factory=list)
    tokenizer_path: str | None = None  # image tokenizer checkpoint recorded for `sample` (default: the shards' name)
    train: TrainConfig = field(default_factory=_paper_train_defaults)

    def check(self) -> None:
        if not self.shards:
            raise VimtoolError(
                "train-t2i needs --shards (captioned token shards from tokenize-dataset; '-' reads paths from stdin)"
            )
        if not 0.0 <= self.cond_drop < 1.0:
            raise VimtoolError(f"cond_drop is a fraction in [0, 1), got {self.cond_drop}")
        if not 0.0 <= self.text_drop < 1.0:
            raise VimtoolError(f"text_drop is a fraction in [0, 1), got {self.text_drop}")
        if self.image_shards and self.cond_drop == 0:
            raise VimtoolError("image_shards feed the rows that drop their prompt: set cond_drop > 0 (e.g. 0.1)")
        if not 0.0 <= self.val_fraction < 0.5:
            raise VimtoolError(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.size not in SIZES:
            raise ConfigError(f"unknown Parti size {self.size!r}; use one of {', '.join(SIZES)}")


class _CaptionedTokens(torch.utils.data.Dataset):
    """Rows of (image tokens, prompt ids, prompt mask), all pre-encoded in memory."""

    def __init__(self, tokens: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor) -> None:
        self.tokens, self.text_ids, self.text_mask = tokens, text_ids, text_mask

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i], "text_ids": self.text_ids[i], "text_mask": self.text_mask[i]}


def _load(paths: list[str]) -> tuple[torch.Tensor, list[str], Any]:
    tokens, _, captions, identity = load_token_table(paths)
    missing = sum(c is None for c in captions)
    if missing:
        raise VimtoolError(
            f"{missing} of {len(captions)} shard rows have no caption; train-t2i needs captioned data (e.g. shapes, a folder with metadata.jsonl)"
        )
    return tokens, captions, identity


class T2ITask(Task):
    name = "t2i"
    # DDP: the learned null condition gets no gradient in a step whose batch drops no prompt (always when
    # cond_drop = 0), which DDP's reducer refuses unless told to look for unused parameters
    find_unused_parameters = True

    def __init__(self, cfg: T2IRunConfig) -> None:
        cfg.check()
        self.cfg = cfg
        # '-' (paths on stdin) can be read once: expand it here, the split below reads the same files again
        cfg.shards = [str(f) for f in expand_paths(cfg.shards, suffixes=(".parquet",), what="token shard")]
        tokens, captions, self.identity = _load(cfg.shards)
        if cfg.val_shards:
            val_tokens, val_captions, val_identity = _load(cfg.val_shards)
            if val_identity != self.identity:
                raise VimtoolError(
                    "val_shards were made by another image tokenizer than shards; tokenize both with the same one"
                )
        else:  # the split every command shares (data/shards.py: a hash of each row's source id)
            is_val = held_out_rows(read_source_ids(cfg.shards), cfg.val_fraction)  # (N,) bool
            val_tokens, val_captions = tokens[is_val], [c for c, v in zip(captions, is_val.tolist()) if v]
            tokens, captions = tokens[~is_val], [c for c, v in zip(captions, is_val.tolist()) if not v]
        self.image_only = None  # (M, T) tokens of the uncaptioned images, if any
        if cfg.image_shards:
            files = [str(f) for f in expand_paths(cfg.image_shards, suffixes=(".parquet",), what="token shard")]
            self.image_only, _, _, image_identity = load_token_table(files)
            # the same weights (sha256) wherever they lie: the name is where the tokenizer was when it tokenized
            if replace(image_identity, name=self.identity.name) != self.identity:
                raise VimtoolError(
                    "image_shards were made by another image tokenizer than shards; tokenize both with the same one"
                )
        size_cfg = to_dict(SIZES[cfg.size])
        max_len = cfg.text_max_len or int(cfg.model.get("max_text_len", size_cfg["max_text_len"]))
        self.text = TextTokenizer.train(
            captions, cfg.text_vocab_size, max_len, kind=cfg.text_kind, lowercase=cfg.lowercase
        )  # type: ignore[arg-type]
        data = {**size_cfg, **cfg.model}
        data.update(text_vocab_size=self.text.vocab_size, max_text_len=max_len, codebook_size=self.identity.codebook_size,
                    grid=list(self.identity.grid))  # fmt: skip
        self.model_config = build(PartiConfig, data, prefix="model.")
        self.train_set = _CaptionedTokens(tokens, *self.text.encode_batch(captions))
        self.val_set = (
            _CaptionedTokens(val_tokens, *self.text.encode_batch(val_captions)) if len(val_captions) else None
        )
        log.info(
            "train-t2i: %d training rows (+%d uncaptioned images for the null rows), %d held-out rows, text vocabulary %d, image grid %s with %d codes",
            len(self.train_set),
            0 if self.image_only is None else len(self.image_only),
            len(val_captions),
            self.text.vocab_size,
            self.identity.grid,
            self.identity.codebook_size,
        )

    # --- the engine's hooks ---------------------------------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        return {"model": Parti(self.model_config)}

    def train_dataset(self):
        return self.train_set

    def train_step(self, models: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        tokens = batch["tokens"]
        null_rows = (
            torch.rand(tokens.shape[0], device=tokens.device) < self.cfg.cond_drop if self.cfg.cond_drop > 0 else None
        )
        if null_rows is not None and self.image_only is not None:
            # the prompt-less rows show an uncaptioned image instead (drawn with the engine's seeded generator)
            pick = torch.randint(len(self.image_only), (int(null_rows.sum()),))
            tokens = tokens.clone()
            tokens[null_rows] = self.image_only[pick].to(tokens.device)
        ids, mask = batch["text_ids"], batch["text_mask"]
        if self.cfg.text_drop > 0:  # hide random words (never <s> / </s>) from the encoder
            words = mask & (ids != self.text.bos_id) & (ids != self.text.eos_id)
            mask = mask & ~(words & (torch.rand(ids.shape, device=ids.device) < self.cfg.text_drop))
        logits = models["model"](ids, mask, tokens, null_rows)  # (B, T, V)
        loss = F.cross_entropy(logits.float().transpose(1, 2), tokens)
        with torch.no_grad():
            acc = (logits.argmax(-1) == tokens).float().mean()
        return StepOutput(losses={"model": loss}, metrics={"acc": acc})

    @torch.no_grad()
    def evaluate(self, models: dict[str, nn.Module], step: int, out_dir: Path) -> dict[str, float]:
        if self.val_set is None:
            return {}
        model: Parti = models["model"]
        device = next(model.parameters()).device
        n = min(len(self.val_set), self.cfg.val_rows)
        total = {"cond": 0.0, "null": 0.0}
        for start in range(0, n, 64):
            rows = [self.val_set[i] for i in range(start, min(n, start + 64))]
            tokens = torch.stack([r["tokens"] for r in rows]).to(device)
            ids = torch.stack([r["text_ids"] for r in rows]).to(device)
            mask = torch.stack([r["text_mask"] for r in rows]).to(device)
            for key, null in (("cond", None), ("null", torch.ones(len(rows), dtype=torch.bool, device=device))):
                logits = model(ids, mask, tokens, null).float()
                total[key] += float(F.cross_entropy(logits.transpose(1, 2), tokens, reduction="sum"))
        count = n * model.num_image_tokens
        val, null = total["cond"] / count, total["null"] / count
        # nats per image the prompt is worth: > 0 means the model reads the text
        return {
            "val_loss": val,
            "val_loss_null": null,
            "prompt_gain_nats": (null - val) * model.num_image_tokens,
            "val_ppl": math.exp(min(val, 50.0)),
        }

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            **tokenizer_record(self.identity, self.cfg.tokenizer_path),
            "text_tokenizer": {"file": "tokenizer.json", "kind": self.cfg.text_kind, "vocab_size": self.text.vocab_size,
                               "max_length": self.text.max_length, "lowercase": self.cfg.lowercase},
        }  # fmt: skip

    def card_info(self) -> dict[str, Any]:
        data = ", ".join(map(str, self.cfg.shards))[:200]
        if self.cfg.image_shards:
            data += "; uncaptioned images: " + ", ".join(map(str, self.cfg.image_shards))[:200]
        return {"data": data, "title": f"Parti ({self.cfg.size}) text-to-image"}

    def save_model(self, model: nn.Module, folder: Path, card: dict) -> None:
        ckpt.save_stage2(model, folder, card=card, extra=self.checkpoint_extra())  # carries its image tokenizer
        self.text.save(Path(folder) / "tokenizer.json")  # the sampler reads the prompt with exactly this tokenizer


def train_t2i(cfg: T2IRunConfig) -> Path:
    """Train Parti as `cfg` says; returns the final checkpoint folder (config.json, model.safetensors, tokenizer.json,
    tokenizer/ = the image tokenizer)."""
    if not cfg.train.out_dir:
        cfg.train.out_dir = "runs/t2i"
    return train(T2ITask(cfg), cfg.train)


__all__ = ["T2IRunConfig", "T2ITask", "train_t2i"]
