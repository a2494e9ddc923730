"""`--rerank clip:FOLDER`: score Parti's samples with a learned contrastive image-text model.

    scorer = ClipScorer.load("runs/reranker")      # a `vimtool train-reranker` checkpoint or run folder
    scores = scorer(images, prompts)               # PIL images + their prompts -> cosine similarities, higher = better

The paper's reranker (docs/PAPERS.md section 3): the image whose embedding lies closest to its prompt's under a
contrastive dual encoder (vimtool/models/dual_encoder.py) wins. Unlike `contrastive[:a]`, which asks Parti itself
how likely its own sample is, this is a second opinion from a model trained to tell captions apart, so it does not
share the generator's blind spots. The scorer takes PIL images, as every external scorer does: the decoded samples
are rounded to 8-bit pixels first, exactly what the written PNGs hold, so re-scoring the files gives the same
numbers. Images of another size are resized and centre-cropped to the reranker's (data/transforms.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from vimtool import checkpoint as ckpt
from vimtool.data.text import FILE_NAME, TextTokenizer
from vimtool.data.transforms import resize_center_crop, to_tensor
from vimtool.errors import VimtoolError
from vimtool.models.dual_encoder import DualEncoder

HOW = "train one with `vimtool train-reranker --config recipes/reranker_shapes.yaml` and pass its folder"


class ClipScorer:
    """A dual encoder + its text tokenizer as a reranking scorer: (images, prompts) -> cosine similarities."""

    def __init__(self, model: DualEncoder, text: TextTokenizer, batch_size: int = 256) -> None:
        self.model, self.text, self.batch_size = model.eval(), text, batch_size

    @classmethod
    def load(cls, spec: str | Path) -> ClipScorer:
        """From a `train-reranker` checkpoint folder, run folder or Hub repo id; a one-line error says what to do."""
        where = f"--rerank clip:{spec}"
        if not str(spec):
            raise VimtoolError(f"{where}: name the reranker's folder after 'clip:'; {HOW}")
        try:
            folder = ckpt.resolve(spec)
            model_type = ckpt.read_config(folder)["model_type"]
        except VimtoolError as e:
            raise VimtoolError(f"{where}: {e}; {HOW}") from None
        if model_type != DualEncoder.model_type:
            raise VimtoolError(f"{where}: {folder} holds a '{model_type}' model, not a reranker; {HOW}")
        if not (folder / FILE_NAME).is_file():
            raise VimtoolError(f"{where}: {folder / FILE_NAME} is missing (the reranker's text tokenizer); {HOW}")
        model = ckpt.load_model(folder)
        text = TextTokenizer.load(folder / FILE_NAME, max_length=model.config.max_text_len)
        if text.vocab_size != model.config.text_vocab_size:
            raise VimtoolError(
                f"{where}: {folder / FILE_NAME} has {text.vocab_size} entries but the model reads "
                f"{model.config.text_vocab_size}; the checkpoint is inconsistent (re-train or re-save it)"
            )
        return cls(model, text)

    @torch.no_grad()
    def embed_images(self, images: Sequence) -> torch.Tensor:
        """PIL images -> (M, D) unit image embeddings, `batch_size` at a time."""
        size = self.model.config.image_size
        device = next(self.model.parameters()).device
        out = [torch.zeros(0, self.model.config.embed_dim)]
        for s in range(0, len(images), self.batch_size):
            x = torch.stack([to_tensor(resize_center_crop(im, size)) for im in images[s : s + self.batch_size]])
            out.append(self.model.encode_images(x.to(device)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions -> (U, D) unit text embeddings."""
        device = next(self.model.parameters()).device
        ids, mask = self.text.encode_batch(list(texts))
        return self.model.encode_texts(ids.to(device), mask.to(device)).cpu()

    @torch.no_grad()
    def __call__(self, images: Sequence, prompts: Sequence[str]) -> list[float]:
        if len(images) != len(prompts):
            raise VimtoolError(f"the clip reranker needs one prompt per image, got {len(prompts)} for {len(images)}")
        if not images:
            return []
        unique = {p: i for i, p in enumerate(dict.fromkeys(prompts))}  # 16 samples share a prompt: encode it once
        texts = self.embed_texts(list(unique))  # (U, D)
        row = torch.tensor([unique[p] for p in prompts], dtype=torch.long)
        return (self.embed_images(images) * texts[row]).sum(-1).tolist()


class AttributeScorer:
    """`--rerank clipattr:FOLDER`: the reranker asked about each attribute word of the prompt on its own.

    For every word set (by default the `shapes` vocabulary's colours and shapes) of which the prompt names exactly
    one word, the prompt is rewritten with each word of the set in its place ("a small GREEN square ..." -> "a small
    RED square ...", ...), and the image scores the log-probability of the prompt's own word among them: the
    dual encoder's softmax over those captions, at its learned temperature. The scores of the sets are summed.
    Why: a prompt naming a colour-shape pair the reranker never saw in training (a held-out combination) is scored
    poorly as a whole, while each word was seen with other partners, and the reranker was trained to tell one-word
    neighbours apart (`train-reranker`'s hard negatives). Sets whose words the prompt names twice or not at all
    (two objects of one set, or none) add nothing."""

    def __init__(self, clip: ClipScorer, word_sets: Sequence[Sequence[str]] | None = None) -> None:
        if word_sets is None:
            from vimtool.data.shapes.scene import COLOURS, SHAPES

            word_sets = (tuple(COLOURS), tuple(SHAPES))
        self.clip, self.word_sets = clip, [tuple(ws) for ws in word_sets]
        self.patterns = [[re.compile(rf"\b{re.escape(w)}\b") for w in ws] for ws in self.word_sets]

    @classmethod
    def load(cls, spec: str | Path) -> AttributeScorer:
        return cls(ClipScorer.load(spec))

    def _rewrites(self, prompt: str) -> list[tuple[list[str], int]]:
        """(the prompt with each word of a set in place of its own, the index of its own) per set it names once."""
        out = []
        for words, patterns in zip(self.word_sets, self.patterns):
            named = [i for i, pat in enumerate(patterns) if pat.search(prompt)]
            if len(named) == 1 and len(patterns[named[0]].findall(prompt)) == 1:
                out.append(([patterns[named[0]].sub(w, prompt) for w in words], named[0]))
        return out

    @torch.no_grad()
    def __call__(self, images: Sequence, prompts: Sequence[str]) -> list[float]:
        if len(images) != len(prompts):
            raise VimtoolError(
                f"the clipattr reranker needs one prompt per image, got {len(prompts)} for {len(images)}"
            )
        if not images:
            return []
        emb = self.clip.embed_images(images)  # (M, D)
        scale = float(self.clip.model.logit_scale)
        scores = torch.zeros(len(images))
        for prompt in dict.fromkeys(prompts):
            rows = torch.tensor([i for i, p in enumerate(prompts) if p == prompt])
            for captions, own in self._rewrites(prompt):
                logits = scale * emb[rows] @ self.clip.embed_texts(captions).T  # (rows, words)
                scores[rows] += logits.log_softmax(-1)[:, own]
        return scores.tolist()


__all__ = ["AttributeScorer", "ClipScorer"]
