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
    def __call__(self, images: Sequence, prompts: Sequence[str]) -> list[float]:
        if len(images) != len(prompts):
            raise VimtoolError(f"the clip reranker needs one prompt per image, got {len(prompts)} for {len(images)}")
        size = self.model.config.image_size
        device = next(self.model.parameters()).device
        unique = {p: i for i, p in enumerate(dict.fromkeys(prompts))}  # 16 samples share a prompt: encode it once
        ids, mask = self.text.encode_batch(list(unique))
        texts = self.model.encode_texts(ids.to(device), mask.to(device))  # (U, D)
        row = torch.tensor([unique[p] for p in prompts], dtype=torch.long, device=device)
        out = []
        for s in range(0, len(images), self.batch_size):
            x = torch.stack([to_tensor(resize_center_crop(im, size)) for im in images[s : s + self.batch_size]])
            emb = self.model.encode_images(x.to(device))  # (b, D)
            out.append((emb * texts[row[s : s + len(x)]]).sum(-1).cpu())
        return torch.cat(out).tolist() if out else []


__all__ = ["ClipScorer"]
