"""The text tokenizer of Parti (docs/PAPERS.md section 3): trained on the training captions, saved in the checkpoint.

Parti uses a SentencePiece vocabulary of 16,000 and a maximum text length of 128 tokens. Here the vocabulary is
learned from the captions of the token shards with Hugging Face `tokenizers` (byte-level BPE, or unigram,
the SentencePiece model type), so it fits whatever data the model is trained on: a few hundred entries for
the built-in `shapes` captions, up to 16k for real captions. Byte-level BPE never produces an unknown token:
any Unicode prompt (accents, CJK, emoji) falls back to its UTF-8 bytes, which are always in the vocabulary.

    tok = TextTokenizer.train(captions, vocab_size=16000, max_length=128)
    ids, mask = tok.encode_batch(["a red circle", ""])   # (B, L) int64 ids, (B, L) bool, True = real token
    tok.save(folder / "tokenizer.json"); TextTokenizer.load(folder / "tokenizer.json", max_length=128)

Every encoded prompt is `<s> pieces... </s>`; an empty prompt is just `<s> </s>`. A prompt longer than
`max_length` tokens (specials included) is truncated, keeping its first pieces and the closing `</s>`, with a
logged warning. Padding uses `<pad>` (id 0) on the right; the mask says which positions are real.
Text is NFKC-normalized and (by default) lower-cased: with small caption sets "A Red Circle" and
"a red circle" must mean the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vimtool.atomic import atomic_path
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in this order
FILE_NAME = "tokenizer.json"
MAX_VOCAB = 16_000  # Parti's SentencePiece vocabulary (docs/PAPERS.md section 3)
MAX_LENGTH = 128  # Parti's maximum text length


def _normalizer(lowercase: bool):
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    return normalizers.Sequence(steps)


class TextTokenizer:
    """A trained `tokenizers.Tokenizer` plus the special ids and the length limit the model was built with."""

    def __init__(self, tokenizer, max_length: int = MAX_LENGTH) -> None:
        if max_length < 2:
            raise VimtoolError(f"text max_length must be >= 2 (room for <s> and </s>), got {max_length}")
        self.tk = tokenizer
        self.max_length = int(max_length)
        ids = [tokenizer.token_to_id(s) for s in SPECIALS]
        if any(i is None for i in ids):
            raise VimtoolError(f"text tokenizer lacks the special tokens {SPECIALS}; train it with TextTokenizer.train")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids
        self._warned = 0

    # --- building ---------------------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str | None],
        vocab_size: int = MAX_VOCAB,
        max_length: int = MAX_LENGTH,
        kind: Literal["bpe", "unigram"] = "bpe",
        lowercase: bool = True,
    ) -> TextTokenizer:
        """Learn a vocabulary of at most `vocab_size` entries from `texts` (None entries are skipped)."""
        texts = [t for t in texts if t]
        if not texts:
            raise VimtoolError(
                "no captions to train the text tokenizer on; train-t2i needs shards made from captioned data"
            )
        if kind == "bpe":
            # Byte-level BPE: the 256 byte symbols are always in the vocabulary, so nothing is ever unknown.
            floor = 256 + len(SPECIALS)
            if vocab_size < floor:
                raise VimtoolError(
                    f"text vocab_size {vocab_size} is below the byte-level minimum {floor}; use >= {floor}"
                )
            tk = Tokenizer(models.BPE(unk_token=UNK))
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tk.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                special_tokens=list(SPECIALS),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        elif kind == "unigram":
            # SentencePiece's model type; characters never seen in training map to <unk>.
            tk = Tokenizer(models.Unigram())
            tk.pre_tokenizer = pre_tokenizers.Metaspace()
            tk.decoder = decoders.Metaspace()
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token=UNK, show_progress=False
            )
        else:
            raise VimtoolError(f"text tokenizer kind {kind!r} is unknown; use bpe or unigram")
        tk.normalizer = _normalizer(lowercase)
        tk.train_from_iterator(texts, trainer=trainer, length=len(texts))
        log.info("text tokenizer: %s with %d entries, trained on %d captions", kind, tk.get_vocab_size(), len(texts))
        return cls(tk, max_length)

    @classmethod
    def load(cls, path: str | Path, max_length: int = MAX_LENGTH) -> TextTokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise VimtoolError(f"text tokenizer {path} is missing; a train-t2i checkpoint holds it as {FILE_NAME}")
        try:
            tk = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust error type is not importable; any parse failure lands here
            raise VimtoolError(
                f"{path} is not a readable tokenizers JSON file ({' '.join(str(e).split())[:120]}); re-save the checkpoint"
            ) from None
        return cls(tk, max_length)

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json atomically (vimtool/atomic.py)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        with atomic_path(path) as tmp:
            self.tk.save(str(tmp))
        return path

    # --- using ------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size()

    def encode(self, text: str | None) -> list[int]:
        """`<s> pieces </s>`, truncated to max_length (with a warning)."""
        pieces = self.tk.encode(text or "", add_special_tokens=False).ids
        room = self.max_length - 2
        if len(pieces) > room:
            if self._warned < 5:  # a long prompts file should not flood the log
                log.warning(
                    "prompt of %d text tokens truncated to the model's limit of %d: %r",
                    len(pieces) + 2,
                    self.max_length,
                    (text or "")[:60],
                )
            self._warned += 1
            pieces = pieces[:room]
        return [self.bos_id, *pieces, self.eos_id]

    def encode_batch(self, texts: Sequence[str | None], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (ids (B, L) int64 padded with <pad> on the right, mask (B, L) bool True = real).

        L is the longest encoded text, or `length` when given (longer texts are truncated to it first).
        """
        rows = [self.encode(t) for t in texts]
        if length is not None:
            rows = [r if len(r) <= length else r[: length - 1] + [self.eos_id] for r in rows]
        width = length if length is not None else max((len(r) for r in rows), default=2)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = True
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        specials = {self.pad_id, self.bos_id, self.eos_id}
        return self.tk.decode([int(i) for i in ids if int(i) not in specials]).strip()


__all__ = ["BOS", "EOS", "FILE_NAME", "MAX_LENGTH", "MAX_VOCAB", "PAD", "SPECIALS", "TextTokenizer", "UNK"]
