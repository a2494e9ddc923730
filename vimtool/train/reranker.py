"""The reranker training task (`vimtool train-reranker`): captioned images -> a contrastive dual encoder.

Parti reranks its samples with a contrastive image-text model (docs/PAPERS.md section 3); this trains the small
one of vimtool/models/dual_encoder.py on the same captioned images Parti learns from (a `--data` spec, e.g. the
quickstart's `shapes:size=32,objects=1,n=6000,holdout=...`, whose held-out colour-shape pairs never appear in
the training split), run by the ONE engine loop (vimtool/train/engine.py):

1. The captions of (at most `tokenizer_captions` of) the training images train the text tokenizer
   (vimtool/data/text.py, as train-t2i's); it is saved in every checkpoint as tokenizer.json.
2. Each step: symmetric InfoNCE between the batch's images and captions with a learned temperature; identical
   captions in a batch count as true pairs (`contrastive_loss`). With `hard_negatives: K`, each image also meets
   K captions of the training set that differ from its own in exactly one word ("a small red square ..." against
   "a small red circle ..."): in-batch negatives alone rarely differ from a caption in one attribute, so a model
   can pass them on colour and position and never learn the shape (`OneWordNeighbours`). Logged: `acc`, the
   share of images whose best-scoring caption in the batch is their own (or an identical one). Augmentations,
   off by default: `word_drop: p` leaves out each caption word with probability p (on the quickstart's held-out
   pairs it did not pay), `grey: p` shows an image in greyscale, and `grey_words: [...]` leaves those words (the
   colours) out of a grey image's caption, so shapes are learned apart from the colours they came in (the
   quickstart's reranker: grey 0.3 with its six colours; docs/RESULTS.md section 3).
   `image_negatives: K` adds K damaged copies of each image (`damage_images`: a block of its outline moved, a
   bump or a notch like those of a sampled picture whose token went astray) as negatives of every caption, in
   the text -> image direction only; it costs one more image-tower pass per copy. `rounded_negatives: p` makes
   that share of the copies the image with its corners rounded (`round_corners`) instead.
3. Evaluation: `eval_images` images of `eval_split` (held-out images, as train-tokenizer's evaluation reads
   them): text -> image and image -> text top-1 retrieval among them, a hit being an image / caption with the
   query's exact caption, and `retrieval_chance`, what picking at random would score with those repeats; the same
   for each of `extra_eval_splits` (e.g. shapes' `holdout`), prefixed with the split's name.

A checkpoint folder holds the model (config.json records the data spec), README.md and tokenizer.json: what
`vimtool sample --rerank clip:FOLDER` loads.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vimtool.config import build, deep_merge, to_dict
from vimtool.data import ImageDataset, open_source
from vimtool.data.text import MAX_VOCAB, TextTokenizer
from vimtool.errors import VimtoolError
from vimtool.models.dual_encoder import DualEncoder, DualEncoderConfig, contrastive_loss
from vimtool.train.engine import StepOutput, Task, TrainConfig, train

log = logging.getLogger(__name__)


def _train_defaults() -> TrainConfig:
    # No paper numbers to follow (Parti used a pretrained CoCa): what trained the quickstart's reranker on a CPU
    # (recipes/reranker_shapes.yaml), as the defaults.
    return TrainConfig(steps=1500, batch_size=128, lr=2e-3, min_lr=0.0, schedule="cosine", weight_decay=0.01,
                       eval_every=500, save_every=500, log_every=50)  # fmt: skip


@dataclass
class RerankerRunConfig:
    """Settings of `train-reranker` (recipe keys; `--set model.text_tower=bow`, `--set eval_images=512`, ...)."""

    data: str = ""  # captioned images: shapes:..., a folder with metadata.jsonl, user/name, .parquet files
    split: str = "train"
    eval_split: str = "val"  # held-out images for the retrieval evaluation
    # further splits evaluated the same way, their metrics prefixed "SPLIT/" (shapes: "holdout", the colour-shape
    # pairs training never showed, which is what a reranker of held-out prompts must read)
    extra_eval_splits: list[str] = field(default_factory=list)
    image_size: int | None = None  # shortcut for model.image_size (images are resized + centre-cropped to it)
    model: dict[str, Any] = field(default_factory=dict)  # DualEncoderConfig fields
    text_vocab_size: int = 512  # upper bound of the text tokenizer trained on the captions (Parti's 16k at most)
    text_kind: str = "bpe"  # bpe (byte-level, never unknown) or unigram
    lowercase: bool = True
    tokenizer_captions: int = 100_000  # the text tokenizer learns from at most this many training captions
    eval_images: int = 512  # held-out images per evaluation (the retrieval pool)
    eval_batch_size: int = 128
    # per image, this many extra captions that differ from its own in one word, as negatives (0 = in-batch only)
    hard_negatives: int = 0
    # each word of a training caption is left out with this probability (at least one word is kept): a caption
    # that names only some attributes must still match its image, so the towers learn each attribute on its own
    word_drop: float = 0.0
    # each training image is shown in greyscale with this probability (its caption unchanged): shape and position
    # must then be read without colour, so they cannot be learned as parts of a colour-shape pair
    grey: float = 0.0
    # words left out of the caption of an image shown in greyscale (the colour words: the picture no longer shows
    # them), so its caption names only what it shows and its shape is learned apart from any colour: what a
    # colour-shape pair the captions never named (a green square) needs. The quickstart's reranker: grey 0.3 with
    # its six colours (docs/RESULTS.md section 3)
    grey_words: list[str] = field(default_factory=list)
    # damaged copies of the batch's images as extra negatives of every caption, this many per image (0.5: one for
    # every other image; `damage_images`: a small block moved along an edge, a bump or a notch): a caption must
    # score its clean image above them, so the image tower learns the outline's details, not only colour, rough
    # shape and place
    image_negatives: float = 0.0
    # the share of those damaged copies that are the image with its corners rounded instead (`round_corners`: a
    # square then reads as a rounded square, a triangle loses its tips), where rounding changes the image at all
    # (a circle has no corner to round: it gets the moved block). At 0.5 on two quickstart runs it moved no pick
    # rate beyond noise (docs/RESULTS.md section 3), so the recipe leaves it off
    rounded_negatives: float = 0.0
    limit: int | None = None  # use only the first N training images (quick runs)
    train: TrainConfig = field(default_factory=_train_defaults)

    def check(self) -> None:
        if not self.data:
            raise VimtoolError(
                "train-reranker needs captioned images: --data SPEC (e.g. --data shapes:size=32,objects=1)"
            )
        if not 0 < self.text_vocab_size <= MAX_VOCAB:
            raise VimtoolError(f"text_vocab_size must be in 1..{MAX_VOCAB}, got {self.text_vocab_size}")
        if self.eval_images < 2 or self.eval_batch_size < 1 or self.tokenizer_captions < 1:
            raise VimtoolError("eval_images must be >= 2, eval_batch_size and tokenizer_captions >= 1")
        if self.hard_negatives < 0:
            raise VimtoolError(f"hard_negatives must be >= 0 (0 = in-batch negatives only), got {self.hard_negatives}")
        if not 0.0 <= self.word_drop < 1.0:
            raise VimtoolError(f"word_drop is a probability in [0, 1), got {self.word_drop}")
        if not 0.0 <= self.grey <= 1.0:
            raise VimtoolError(f"grey is a probability in [0, 1], got {self.grey}")
        if self.grey_words and self.grey == 0:
            raise VimtoolError("grey_words leaves words out of greyscale images' captions: set grey > 0 as well")
        if self.image_negatives < 0:
            raise VimtoolError(f"image_negatives must be >= 0 (0 = none), got {self.image_negatives}")
        if not 0.0 <= self.rounded_negatives <= 1.0:
            raise VimtoolError(f"rounded_negatives is a share in [0, 1], got {self.rounded_negatives}")


def _captions(dataset: ImageDataset, n: int) -> list[str]:
    """The captions of the first `n` examples (read from the source: no resizing or tensors)."""
    out = []
    for i in range(min(n, len(dataset))):
        ex = dataset.source.get(i)
        if ex is not None and ex.caption:
            out.append(ex.caption)
    return out


class RerankerTask(Task):
    name = "reranker"

    def __init__(self, cfg: RerankerRunConfig) -> None:
        cfg.check()
        self.cfg = cfg
        data = deep_merge({}, cfg.model)
        if cfg.image_size is not None:
            data["image_size"] = cfg.image_size
        data.setdefault("text_vocab_size", cfg.text_vocab_size)
        build(DualEncoderConfig, data, prefix="model.")  # a bad model setting fails now, before any data is read
        size = int(data.get("image_size", DualEncoderConfig.image_size))
        # training reads images by index (random order, resumable), so a Hub set is downloaded, not streamed
        source = open_source(cfg.data, split=cfg.split, seed=cfg.train.seed, limit=cfg.limit, streaming=False)
        self.train_set = ImageDataset(source, size, train=True, seed=cfg.train.seed)
        captions = _captions(self.train_set, cfg.tokenizer_captions)
        if not captions:
            raise VimtoolError(
                f"--data {cfg.data!r} has no captions; the reranker learns from captioned images (shapes, a folder "
                "with metadata.jsonl, a Hub set with a text column)"
            )
        max_len = int(data.get("max_text_len", DualEncoderConfig.max_text_len))
        self.text = TextTokenizer.train(captions, cfg.text_vocab_size, max_len, kind=cfg.text_kind,
                                        lowercase=cfg.lowercase)  # type: ignore[arg-type]  # fmt: skip
        data["text_vocab_size"] = self.text.vocab_size
        self.model_config = build(DualEncoderConfig, data, prefix="model.")
        self.neighbours = OneWordNeighbours(captions, lowercase=cfg.lowercase) if cfg.hard_negatives else None
        if self.neighbours is not None:
            log.info("train-reranker: %d hard negatives per image; %.0f%% of the %d distinct captions have a "
                     "one-word neighbour", cfg.hard_negatives, 100 * self.neighbours.coverage(),
                     len(self.neighbours.captions))  # fmt: skip
        self._eval: dict[str, tuple[torch.Tensor, list[str]]] = {}
        log.info(
            "train-reranker: %d training images, text vocabulary %d, %s text tower, %d px images",
            len(self.train_set),
            self.text.vocab_size,
            self.model_config.text_tower,
            size,
        )

    # --- the engine's hooks ---------------------------------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        return {"model": DualEncoder(self.model_config)}

    def train_dataset(self):
        return self.train_set

    def _batch_rng(self, tag: str, captions: list[str]) -> random.Random:
        """A random stream seeded by the batch itself (and `tag`, one per use): the same batch of a resumed run
        draws the same negatives, dropped words and grey images."""
        return random.Random(f"{self.cfg.train.seed}:{tag}" + "\x00".join(captions))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        captions = [it["caption"] for it in items]
        texts = list(captions)
        if self.cfg.word_drop > 0:
            drop = self._batch_rng("drop:", captions)
            texts = [drop_words(c, self.cfg.word_drop, drop) for c in captions]
        grey = [False] * len(items)
        if self.cfg.grey > 0:
            rng = self._batch_rng("grey:", captions)
            grey = [rng.random() < self.cfg.grey for _ in items]
            if self.cfg.grey_words:  # the hard negatives below keep their colour words: no grey picture shows them
                texts = [without_words(t, self.cfg.grey_words) if g else t for t, g in zip(texts, grey)]
        if self.neighbours is not None:
            rng = self._batch_rng("", captions)
            texts += [n for c in captions for n in self.neighbours.sample(c, self.cfg.hard_negatives, rng)]
        ids, mask = self.text.encode_batch(texts)  # one padding width for captions and negatives
        images = torch.stack([it["image"] for it in items])
        if any(grey):
            pick = torch.tensor(grey)
            luma = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            images = torch.where(pick.view(-1, 1, 1, 1), luma.expand_as(images), images)
        batch = {"images": images, "ids": ids, "mask": mask}
        if self.cfg.image_negatives:
            rng = self._batch_rng("damage:", captions)
            count = round(self.cfg.image_negatives * len(images))  # cycling through the (shuffled) batch
            batch["negative_images"] = damage_images(
                images[torch.arange(count) % len(images)], rng, rounded=self.cfg.rounded_negatives
            )
        return batch

    def train_step(self, models: dict[str, nn.Module], batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        ids, mask = batch["ids"], batch["mask"]
        images = batch["images"]
        b = images.shape[0]
        if "negative_images" in batch:  # one pass over clean and damaged images: (B + N, B + hard negatives)
            images = torch.cat([images, batch["negative_images"]])
        logits = models["model"](images, ids, mask)
        same = _same_text(ids[:b], ids)
        loss = contrastive_loss(logits[:b], same, extra_images=logits[b:, :b])
        logits = logits[:b]
        with torch.no_grad():
            acc = same[:, :b].gather(1, logits[:, :b].argmax(1, keepdim=True)).float().mean()
            scale = self.engine.unwrap(models["model"]).logit_scale if self.engine is not None else logits.new_zeros(())
        return StepOutput(losses={"model": loss}, metrics={"acc": acc, "logit_scale": scale.detach().float()})

    def _eval_data(self, split: str | None = None) -> tuple[torch.Tensor, list[str]]:
        split = split or self.cfg.eval_split
        if split not in self._eval:
            source = open_source(self.cfg.data, split=split, seed=self.cfg.train.seed, streaming=False)
            ds = ImageDataset(source, self.model_config.image_size, train=False)
            items = [ds[i] for i in range(min(self.cfg.eval_images, len(ds)))]
            if len(items) < 2:
                raise VimtoolError(
                    f"--data {self.cfg.data!r} split {split!r} has {len(items)} images; retrieval needs at least 2 "
                    "(evaluate on a held-out split the data has)"
                )
            self._eval[split] = torch.stack([it["image"] for it in items]), [it["caption"] for it in items]
        return self._eval[split]

    @torch.no_grad()
    def evaluate(self, models: dict[str, nn.Module], step: int, out_dir: Path) -> dict[str, float]:
        out = retrieval(models["model"], self.text, *self._eval_data(), self.cfg.eval_batch_size)
        for split in self.cfg.extra_eval_splits:
            metrics = retrieval(models["model"], self.text, *self._eval_data(split), self.cfg.eval_batch_size)
            out.update({f"{split}/{k}": v for k, v in metrics.items()})
        return out

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "text_tokenizer": {"file": "tokenizer.json", "kind": self.cfg.text_kind, "vocab_size": self.text.vocab_size,
                               "max_length": self.text.max_length, "lowercase": self.cfg.lowercase},
            "training": {"data": self.cfg.data, "split": self.cfg.split, "eval_split": self.cfg.eval_split},
        }  # fmt: skip

    def card_info(self) -> dict[str, Any]:
        return {"data": self.cfg.data, "title": "Contrastive image-text reranker (dual encoder)"}

    def save_model(self, model: nn.Module, folder: Path, card: dict) -> None:
        super().save_model(model, folder, card)
        self.text.save(Path(folder) / "tokenizer.json")  # `--rerank clip:FOLDER` reads prompts with exactly this


def damage_images(images: torch.Tensor, rng: random.Random, tries: int = 8, rounded: float = 0.0) -> torch.Tensor:
    """(B, 3, H, W) -> a damaged copy of each image: one square block (2 to H/6 pixels a side), centred on an edge
    pixel, replaced by the block a few pixels away. On an outline that makes a bump or a notch, the kind of flaw
    a sampled image has where one of its tokens is off; an edge pixel as the centre makes sure the block changes
    something (a block of flat background would copy onto itself). A block is redrawn until its mean absolute
    change is at least 0.1 (of the [-1, 1] range), at most `tries` times.

    With `rounded` > 0, that share of the images (drawn per image) gets `round_corners` instead (one opening step,
    or two for half of them), where one step takes at least 3 pixels of cover, so not off a circle (those get the
    moved block): the flaw of a sampled square whose corner tokens disagree, which a moved block rarely imitates.
    The checker reads most small squares so rounded as circles."""
    b, _, h, w = images.shape
    out = images.clone()
    done = torch.zeros(b, dtype=torch.bool)
    if rounded > 0:
        wants = torch.tensor([rng.random() < rounded for _ in range(b)])
        strong = torch.tensor([rng.random() < 0.5 for _ in range(b)])[wants]  # two opening steps for half
        picked = images[wants]
        (one, taken_one), (two, taken_two) = round_corners(picked, 1), round_corners(picked, 2)
        strong &= taken_two < 0.5 * _cover(picked)[1].flatten(1).sum(1)  # not where two take half the shape
        ok = taken_one >= 3.0  # one step leaves a circle nearly whole (< 3 pixels at 32 px): no corners to round
        done[wants.nonzero()[:, 0][ok]] = True
        out[done] = torch.where(strong[:, None, None, None], two, one)[ok]
    edge = torch.zeros(b, h, w)
    edge[:, :, 1:] += (images[..., :, 1:] - images[..., :, :-1]).abs().sum(1)
    edge[:, 1:, :] += (images[..., 1:, :] - images[..., :-1, :]).abs().sum(1)
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    for i in range(b):
        if done[i]:
            continue
        weights = edge[i].flatten()
        if not weights.sum() > 0:  # a flat image has no outline to damage
            continue
        for _ in range(tries):
            k = rng.randint(2, max(2, h // 6))
            c = int(torch.multinomial(weights, 1, generator=gen))
            y0 = min(max(c // w - k // 2, 0), h - k)
            x0 = min(max(c % w - k // 2, 0), w - k)
            dy, dx = (0, 0)
            while (dy, dx) == (0, 0):
                dy, dx = rng.randint(-k, k), rng.randint(-k, k)
            sy, sx = min(max(y0 + dy, 0), h - k), min(max(x0 + dx, 0), w - k)
            src = images[i, :, sy : sy + k, sx : sx + k]
            if (src - images[i, :, y0 : y0 + k, x0 : x0 + k]).abs().mean() >= 0.1:
                out[i, :, y0 : y0 + k, x0 : x0 + k] = src
                break
    return out


def _cover(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> (background colour (B, 3, 1, 1): the median of the border pixels; cover (B, 1, H, W): each
    pixel's distance from it, 1 at the image's farthest pixel)."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]
    mag = (images - bg).square().sum(dim=1, keepdim=True).sqrt()  # (torch's norm over dim 1 is ~10x slower here)
    return bg, mag / mag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def round_corners(images: torch.Tensor, steps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> (the images with the convex corners of their shapes cut, (B,) pixels of cover taken away).

    A grey-level morphological opening (`steps` erosions, then as many dilations, over the 4-neighbourhood) of each
    pixel's cover: its distance from the background colour (the median of the border pixels), 1 at the image's
    farthest pixel. Each pixel then moves toward the background in proportion. One step takes about a pixel off
    each corner of a square and the tip of a triangle, and next to nothing off a circle; two steps cut corners
    diagonally, 3 pixels each. An opening only takes cover away and keeps anti-aliased edges soft, so a copy
    differs from its image in shape, not in rendering."""
    bg, cover = _cover(images)

    def dilate(x: torch.Tensor) -> torch.Tensor:  # the max over each pixel and its 4 neighbours
        pool = torch.nn.functional.max_pool2d
        return torch.maximum(pool(x, (1, 3), 1, (0, 1)), pool(x, (3, 1), 1, (1, 0)))

    opened = cover
    for _ in range(steps):
        opened = -dilate(-opened)  # erosion (pixels outside the image do not count)
    for _ in range(steps):
        opened = dilate(opened)
    cut = bg + (images - bg) * (opened / cover.clamp_min(1e-6))  # toward the background, by the cover taken
    return torch.where(opened < cover, cut, images), (cover - opened).flatten(1).sum(1)  # the rest stays exact


def drop_words(caption: str, p: float, rng: random.Random) -> str:
    """`caption` with each whitespace-separated word left out with probability `p`, keeping at least one."""
    words = caption.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept) if kept else rng.choice(words)


def without_words(caption: str, words: Sequence[str]) -> str:
    """`caption` without the whitespace-separated words in `words` (case-insensitive); unchanged if none is left."""
    drop = {w.lower() for w in words}
    kept = [w for w in caption.split() if w.lower() not in drop]
    return " ".join(kept) if kept else caption


def _same_text(ids: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L) and (T, L) padded ids (other = ids if None) -> (B, T) bool, True where the two rows encode the same
    text."""
    other = ids if other is None else other
    return (ids[:, None, :] == other[None, :, :]).all(-1)


class OneWordNeighbours:
    """The captions of a corpus that differ from a given caption in exactly one (whitespace-separated) word.

    Built from the training captions alone, with no word lists: two captions are neighbours when they have the
    same length and agree everywhere but at one position, e.g. "a small red square in the top left" and "a small
    red circle in the top left" or "... bottom left". Such a caption describes another image of the corpus, so it
    is well formed and, with one attribute changed, a hard negative. (A corpus that writes one word two ways in the
    same frame, "grey" / "gray", would make such a pair a false negative; the shapes grammar has none.)"""

    def __init__(self, captions: list[str], lowercase: bool = True) -> None:
        self.lowercase = lowercase
        self.captions = list(dict.fromkeys(self._norm(c) for c in captions))
        self._by_frame: dict[tuple, list[str]] = defaultdict(list)  # (position, the other words) -> captions
        for c in self.captions:
            for key in self._frames(c):
                self._by_frame[key].append(c)
        self._cache: dict[str, list[str]] = {}

    def _norm(self, caption: str) -> str:
        return " ".join((caption.lower() if self.lowercase else caption).split())

    @staticmethod
    def _frames(caption: str) -> list[tuple]:
        words = caption.split()
        return [(len(words), i, tuple(words[:i]), tuple(words[i + 1 :])) for i in range(len(words))]

    def of(self, caption: str) -> list[str]:
        """The corpus captions one word away from `caption` (a caption outside the corpus works too)."""
        c = self._norm(caption)
        if c not in self._cache:
            found = {n for key in self._frames(c) for n in self._by_frame.get(key, ()) if n != c}
            self._cache[c] = sorted(found)
        return self._cache[c]

    def sample(self, caption: str, k: int, rng: random.Random) -> list[str]:
        """k neighbours of `caption` (drawn with replacement when it has fewer; none when it has none)."""
        pool = self.of(caption)
        if not pool:
            return []
        return rng.sample(pool, k) if len(pool) >= k else [rng.choice(pool) for _ in range(k)]

    def coverage(self) -> float:
        """The share of the corpus's distinct captions that have at least one neighbour."""
        return sum(bool(self.of(c)) for c in self.captions) / max(len(self.captions), 1)


@torch.no_grad()
def retrieval(
    model: DualEncoder, text: TextTokenizer, images: torch.Tensor, captions: list[str], batch_size: int = 128
) -> dict[str, float]:
    """Top-1 retrieval among `images` (N, 3, H, W) and their `captions`: text -> image (the image the caption scores
    best has that caption), image -> text (the best caption is the image's own), and the chance level of both."""
    device = next(model.parameters()).device
    img = torch.cat(
        [model.encode_images(images[s : s + batch_size].to(device)) for s in range(0, len(images), batch_size)]
    )
    txt = []
    for s in range(0, len(captions), batch_size):
        ids, mask = text.encode_batch(captions[s : s + batch_size])
        txt.append(model.encode_texts(ids.to(device), mask.to(device)))
    sim = img @ torch.cat(txt).T  # (N images, N captions)
    key = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cap = torch.tensor([key[c] for c in captions], device=sim.device)  # caption id of each row
    same = cap[:, None] == cap[None, :]  # (N, N)
    i2t = same.gather(1, sim.argmax(1, keepdim=True)).float().mean()
    t2i = same.gather(1, sim.argmax(0)[:, None]).float().mean()
    return {
        "retrieval_t2i": float(t2i),
        "retrieval_i2t": float(i2t),
        "retrieval_chance": float(same.float().mean()),  # a random pick's hit rate, repeats counted
        "n_images": float(len(captions)),
    }


def train_reranker(cfg: RerankerRunConfig) -> Path:
    """Train a dual encoder on `cfg.data`; returns the final checkpoint folder (config.json, model.safetensors,
    tokenizer.json)."""
    if not cfg.train.out_dir:
        cfg.train.out_dir = "runs/reranker"
    task = RerankerTask(cfg)
    log.info("reranker: %s", to_dict(task.model_config))
    return train(task, cfg.train)


__all__ = ["OneWordNeighbours", "RerankerRunConfig", "RerankerTask", "retrieval", "train_reranker"]
