"""The Python face of vimtool: a stage-2 checkpoint and its image tokenizer, images in a line.

    import vimtool
    pipe = vimtool.load("runs/parti/final")                   # a folder, a run folder or a Hub repo id (+ revision)
    images = pipe.generate("a red circle top left", n=4, guidance=3.0, rerank=16, seed=0)   # 4 PIL images
    ids = pipe.tokenizer.encode(images)                       # (4, T) token ids
    same = pipe.tokenizer.decode(ids)                         # PIL images again

A VIM checkpoint takes class ids instead of prompts: `pipe.generate(3, n=8)`, `pipe.generate([0, 1], n=4)`, or
`pipe.generate(None, n=8)` for unconditional samples. `vimtool.load_tokenizer(spec)` loads a tokenizer alone.

This is a thin layer over `vimtool.pipeline.Stage2Pipeline`, the one generation path `vimtool sample` also takes:
the same checkpoint, seed and settings give the same images as `vimtool sample` (tests/test_api.py compares the
pixels), `rerank=16, n=4` being the four best of `vimtool sample -n 16` (the command writes all sixteen, ranked).

The diffusers convention works too: `pipe(prompt, num_images_per_prompt=4, guidance_scale=3.0,
generator=torch.manual_seed(0)).images`. vimtool's randomness is a function of (seed, sample index), not of a
generator's running state (that is what keeps samples independent of the batch size), so `generator` stands for its
seed: an int, or a torch.Generator whose `initial_seed()` is used, and is not advanced. Calling twice with the
same generator therefore gives the same images (as `--seed` does); give another seed for other images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vimtool.checkpoint import push_to_hub, read_config, tokenizer_identity
from vimtool.data.transforms import resize_center_crop, to_pil, to_tensor
from vimtool.devices import resolve_device
from vimtool.errors import VimtoolError
from vimtool.models.vitvqgan import ViTVQGAN
from vimtool.pipeline import Stage2Pipeline
from vimtool.sampling.decode import decode_tokens


class ImageTokenizer:
    """An image tokenizer (ViT-VQGAN) with PIL in and out: `encode(images)` -> ids, `decode(ids)` -> images.

    `model` is the ViTVQGAN; `identity` its identity dict (sha256, codebook size, grid) when known."""

    def __init__(self, model: ViTVQGAN, identity: dict[str, Any] | None = None) -> None:
        self.model, self.identity = model, identity

    @classmethod
    def from_pretrained(
        cls, spec: str | Path, revision: str | None = None, device: str | torch.device = "auto"
    ) -> ImageTokenizer:
        """A tokenizer checkpoint: local folder, run folder or Hub repo id (+ revision)."""
        model = ViTVQGAN.from_pretrained(spec, revision)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        return cls(model.to(device).eval(), tokenizer_identity(spec, revision=revision))

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def num_tokens(self) -> int:
        """Tokens per image (the grid, h * w)."""
        return self.model.num_tokens

    @torch.no_grad()
    def encode(self, images: Image.Image | Sequence[Image.Image] | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """PIL images (resized and centre-cropped to `image_size` as `tokenize-dataset` does) or a (N, 3, H, W)
        tensor in [-1, 1] -> (N, T) int64 token ids on the CPU, raster order."""
        if isinstance(images, Image.Image):
            images = [images]
        if not isinstance(images, torch.Tensor):
            images = torch.stack([to_tensor(resize_center_crop(im, self.image_size)) for im in images])  # (N, 3, S, S)
        if images.ndim != 4 or images.shape[1] != 3:
            raise VimtoolError(f"encode takes PIL images or a (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
        device = next(self.model.parameters()).device
        return torch.cat(
            [self.model.encode(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
        )

    def decode(self, ids: torch.Tensor | Sequence[Sequence[int]], batch_size: int = 64) -> list[Image.Image]:
        """(N, T) token ids -> N PIL images."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        return [to_pil(im) for im in decode_tokens(self.model, ids.view(-1, ids.shape[-1]), batch_size)]


@dataclass
class PipelineOutput:
    """What `Pipeline.__call__` returns (diffusers style).

    images  PIL images (output_type "pil") or a (N, 3, H, W) tensor in [-1, 1] ("pt"), best first per prompt
    tokens  (N, T) token ids of those images
    scores  (N,) Parti's reranking scores (higher = better); NaN for VIM
    """

    images: list[Image.Image] | torch.Tensor
    tokens: torch.Tensor
    scores: torch.Tensor


def seed_of(generator: int | torch.Generator | None) -> int:
    """The seed a diffusers-style `generator` stands for (see the module docstring): an int as is, a
    torch.Generator's `initial_seed()`, None = 0 (vimtool's default seed)."""
    if generator is None:
        return 0
    if isinstance(generator, torch.Generator):
        return int(generator.initial_seed())
    if isinstance(generator, int) and not isinstance(generator, bool):
        return generator
    raise VimtoolError(
        f"generator must be an int seed or a torch.Generator, got {type(generator).__name__}; vimtool draws sample i "
        "from (seed, i), so one seed covers every image (a list of generators is not needed)"
    )


class Pipeline:
    """A loaded stage-2 checkpoint (VIM or Parti) with its image tokenizer; build it with `vimtool.load`.

    Attributes: `family` ("vim" / "parti"), `model`, `tokenizer` (an ImageTokenizer), `stage2` (the
    Stage2Pipeline underneath, for token-level use), `folder` (the checkpoint's local folder), `device`."""

    def __init__(self, stage2: Stage2Pipeline) -> None:
        self.stage2 = stage2
        self.tokenizer = ImageTokenizer(stage2.tokenizer, stage2.identity) if stage2.tokenizer is not None else None

    @classmethod
    def from_pretrained(
        cls,
        spec: str | Path,
        revision: str | None = None,
        tokenizer: str | None = None,
        device: str | torch.device = "auto",
    ) -> Pipeline:
        """Load a stage-2 checkpoint (folder, run folder or Hub repo id + revision) with the image tokenizer it
        carries (or `tokenizer`, which must be that same one)."""
        return cls(Stage2Pipeline.load(spec, tokenizer=tokenizer, device=device, revision=revision))

    @property
    def family(self) -> str:
        return self.stage2.family

    @property
    def model(self) -> torch.nn.Module:
        return self.stage2.model

    @property
    def folder(self) -> Path:
        return self.stage2.folder

    @property
    def device(self) -> torch.device:
        return self.stage2.device

    def __repr__(self) -> str:
        return f"vimtool.Pipeline({self.family}, {self.stage2.name!r}, device={self.device})"

    # ------------------------------------------------------------------------------------------- generation
    def generate(
        self,
        condition: str | Sequence[str] | int | Sequence[int] | None = None,
        n: int = 1,
        *,
        guidance: float | None = None,
        rerank: int | None = None,
        rerank_by: str = "likelihood",
        seed: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        batch_size: int = 32,
    ) -> list[Image.Image]:
        """`n` PIL images per prompt (Parti) or per class id (VIM; None = unconditional), in request order.

        guidance: classifier-free guidance scale (None = the family's default, as `vimtool sample`).
        rerank (Parti): generate this many candidates per prompt and keep the `n` best by `rerank_by` (likelihood,
            contrastive[:a], pmi, shapes, clip:FOLDER = a `vimtool train-reranker` model, module:function, or A+B:
            the parts' scores standardised among each prompt's candidates and summed;
            sampling/parti.py); None = n (the n, best first).
        seed / temperature / top_k / top_p / batch_size: as `vimtool sample` (temperature None = the family's
            tuned default; batch_size never changes the images).
        """
        return self._run(condition, n, guidance, rerank, rerank_by, seed, temperature, top_k, top_p, batch_size).images

    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
        generator: int | torch.Generator | None = None,
        *,
        class_labels: int | Sequence[int] | None = None,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        rerank: int | None = None,
        output_type: str = "pil",
    ) -> PipelineOutput:
        """diffusers-style generation: `.images` of `num_images_per_prompt` per prompt (Parti) or per class label
        (VIM, `class_labels`; none = unconditional). `generator`: the seed (module docstring). output_type "pil"
        or "pt" ((N, 3, H, W) in [-1, 1])."""
        if output_type not in ("pil", "pt"):
            raise VimtoolError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        if prompt is not None and class_labels is not None:
            raise VimtoolError("give prompt (Parti) or class_labels (VIM), not both")
        condition = prompt if prompt is not None else class_labels
        return self._run(condition, num_images_per_prompt, guidance_scale, rerank, "likelihood", seed_of(generator),
                         temperature, top_k, top_p, 32, keep_pixels=output_type == "pt")  # fmt: skip

    def _run(
        self, condition, n, guidance, rerank, rerank_by, seed, temperature, top_k, top_p, batch_size,
        keep_pixels: bool = False,
    ) -> PipelineOutput:  # fmt: skip
        if n < 1:
            raise VimtoolError(f"n (images per prompt / class) must be >= 1, got {n}")
        settings = dict(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, guidance_scale=guidance,
                        batch_size=batch_size)  # fmt: skip
        if self.family == "parti":
            if condition is None or isinstance(condition, int):
                raise VimtoolError("a Parti checkpoint generates from prompts: give a string or a list of strings")
            prompts = [condition] if isinstance(condition, str) else list(condition)
            candidates = n if rerank is None else rerank
            if candidates < n:
                raise VimtoolError(f"rerank ({rerank}) is the number of candidates per prompt: give at least n ({n})")
            # the same chunks and per-chunk decoding as `vimtool sample` (sampling/command.py), best first per prompt
            gen = self.stage2.generate(None, prompts, candidates, rerank=rerank_by, images=True, **settings)
            keep = torch.arange(len(gen.tokens)) % candidates < n  # (P * candidates,): the n best of each prompt
            pixels, tokens, scores = gen.images[keep], gen.tokens[keep], gen.scores[keep]
        else:
            if isinstance(condition, str) or (not isinstance(condition, int) and condition is not None
                                              and any(isinstance(c, str) for c in condition)):  # fmt: skip
                raise VimtoolError("a VIM checkpoint takes class ids (or None: unconditional), not prompts")
            if rerank is not None and rerank != n:
                raise VimtoolError(
                    "rerank is for Parti; a VIM's samples are kept as drawn (see `vimtool sample --classifier`)"
                )
            classes = None if condition is None else [condition] if isinstance(condition, int) else list(condition)
            gen = self.stage2.generate(classes, None, n, **settings)
            pixels, tokens, scores = (
                self.stage2.decode(gen.tokens),
                gen.tokens,
                gen.scores,
            )  # decoded as the command does
        images = pixels if keep_pixels else [to_pil(im) for im in pixels]
        return PipelineOutput(images=images, tokens=tokens, scores=scores)

    # ------------------------------------------------------------------------------------------- Hub
    def push_to_hub(self, repo_id: str, private: bool | None = None, commit_message: str | None = None) -> str:
        """Upload the checkpoint folder (with its embedded tokenizer/, without training state) to `repo_id`."""
        return push_to_hub(self.folder, repo_id, private=private, commit_message=commit_message)


def load(
    spec: str | Path, revision: str | None = None, tokenizer: str | None = None, device: str | torch.device = "auto"
) -> Pipeline:
    """A stage-2 checkpoint (VIM or Parti) ready to generate: `vimtool.load("runs/parti/final").generate(...)`.

    spec: a checkpoint folder, a training run folder (its final / latest checkpoint) or a Hub repo id (+ revision).
    tokenizer: only for a checkpoint that does not carry its image tokenizer and whose recorded one moved.
    device: "auto", "cpu", "cuda", "cuda:N"."""
    if read_config(spec, revision)["model_type"] == "vitvqgan":
        raise VimtoolError(f"{spec} is an image tokenizer; load it with vimtool.load_tokenizer")
    return Pipeline.from_pretrained(spec, revision=revision, tokenizer=tokenizer, device=device)


def load_tokenizer(
    spec: str | Path, revision: str | None = None, device: str | torch.device = "auto"
) -> ImageTokenizer:
    """An image tokenizer checkpoint (folder, run folder or Hub repo id + revision): `.encode(images)`, `.decode(ids)`."""
    return ImageTokenizer.from_pretrained(spec, revision=revision, device=device)


__all__ = ["ImageTokenizer", "Pipeline", "PipelineOutput", "load", "load_tokenizer", "seed_of"]
