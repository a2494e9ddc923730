"""The stage-2 layer: a VIM or Parti checkpoint and the image tokenizer it was trained on, ready to generate.

    pipe = Stage2Pipeline.load("runs/vim/final")                    # a folder, a run folder or a Hub repo id
    gen = pipe.generate(classes=[3, 7], num_samples=4, seed=0)      # VIM: 4 per class (no classes: unconditional)
    gen = pipe.generate(prompts=["a red circle"], num_samples=8)    # Parti: 8 per prompt, reranked best first
    gen = pipe.generate_rows([3, 3], [0, 1], seed=0)                # VIM rows one by one: class, seed-stream index
    images = pipe.decode(gen.tokens)                                # (N, 3, H, W) in [-1, 1]
    out = SampleOutputs("samples")                                  # images/, grid.png, tokens, sampling.json

`vimtool sample` (vimtool/sampling/command.py) and `vimtool probe` go through this module; what is specific to one
family stays with it: VIM's decoding and class handling in sampling/vim.py, Parti's prompts, text contexts and
reranking scores in sampling/parti.py. This module loads (checkpoint.load_model, and sampling/decode.py's
`load_paired_tokenizer`, the pairing guard: an explicit tokenizer must be the one the checkpoint records),
dispatches to the family, decodes tokens to pixels and writes a run's files.

Reproducibility (sampling/logits.py `row_uniforms`): sample i of a run draws its random numbers from (seed, i)
alone, where VIM numbers the samples class by class (class k of the classes asked for: k * num_samples + j) and
Parti prompt by prompt (p * num_samples + j). So a seed gives the same tokens whatever the batch size, the chunking,
cached or recomputed decoding, and (up to float rounding) the device. `generate_rows` takes each VIM row's class
and index explicitly (`vimtool sample --per-class` numbers by class id, and splits a run over processes).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vimtool.atomic import save_npy, save_png, write_json
from vimtool.checkpoint import check_pairing, load_model, read_config, resolve
from vimtool.data.shards import ShardWriter, TokenizerIdentity
from vimtool.data.transforms import make_grid, to_pil
from vimtool.devices import resolve_device
from vimtool.errors import VimtoolError
from vimtool.sampling import DEFAULT_TEMPERATURE, parti, vim
from vimtool.sampling.decode import decode_tokens, load_paired_tokenizer
from vimtool.sampling.logits import SamplingParams

log = logging.getLogger(__name__)

FAMILIES = ("vim", "parti")  # the stage-2 model types (config.json "model_type") a pipeline runs


@dataclass
class Generation:
    """Generated samples in output order (Parti: best first within each prompt).

    tokens            (N, T) int64 token ids on the CPU
    scores            (N,) float32: Parti's reranking score (higher = better; 0 with rerank "none"); NaN for VIM
    generation_index  (N,) int64: each row's index among its class's / prompt's samples before reranking
    group             (N,) int64: which request a row answers: an index into the classes or prompts given
    labels            VIM: the class id of each row (None = unconditional); Parti: None for every row
    seconds           time spent generating tokens (decoding to pixels and scoring not included)
    images            (N, 3, H, W) in [-1, 1] on the CPU when asked for (`images=True`), else None
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    generation_index: torch.Tensor
    group: torch.Tensor
    labels: list[int | None]
    seconds: float
    images: torch.Tensor | None = None

    @staticmethod
    def concat(parts: Sequence[Generation]) -> Generation:
        """One Generation from consecutive pieces (`Stage2Pipeline.generate_chunks`)."""
        if not parts:
            raise ValueError("no generations to concatenate")
        images = [p.images for p in parts]
        return Generation(
            tokens=torch.cat([p.tokens for p in parts]),
            scores=torch.cat([p.scores for p in parts]),
            generation_index=torch.cat([p.generation_index for p in parts]),
            group=torch.cat([p.group for p in parts]),
            labels=[lab for p in parts for lab in p.labels],
            seconds=sum(p.seconds for p in parts),
            images=None if any(i is None for i in images) else torch.cat(images),
        )


def _stage2_family(config: dict[str, Any], name: str) -> str:
    if config["model_type"] not in FAMILIES:
        raise VimtoolError(
            f"{name} is a '{config['model_type']}' checkpoint; stage-2 generation takes {', '.join(FAMILIES)} models"
        )
    return config["model_type"]


class Stage2Pipeline:
    """A stage-2 model (VIM or Parti), the image tokenizer it was trained on and, for Parti, its text tokenizer.

    Build it with `Stage2Pipeline.load`; attributes: `family` ("vim" / "parti"), `model`, `tokenizer` (the image
    tokenizer, None when loaded without it), `identity` (that tokenizer's identity dict), `text_tokenizer` (Parti),
    `folder` (the checkpoint's local folder), `config` (its config.json), `device`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: dict[str, Any],
        folder: Path,
        tokenizer: torch.nn.Module | None = None,
        identity: dict[str, Any] | None = None,
        text_tokenizer=None,
        name: str | None = None,
    ) -> None:
        self.family: str = _stage2_family(config, name or str(folder))
        self.model, self.config, self.folder, self.name = model, config, Path(folder), name or str(folder)
        self.tokenizer, self.text_tokenizer = tokenizer, text_tokenizer
        self.identity = identity or config.get("tokenizer")  # loaded tokenizer's, else the recorded one
        self.device = next(model.parameters()).device

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        tokenizer: str | None = None,
        device: str | torch.device = "auto",
        revision: str | None = None,
        load_tokenizer: bool = True,
    ) -> Stage2Pipeline:
        """Load a stage-2 checkpoint (local folder, run folder, pointer or Hub repo id) and its image tokenizer.

        tokenizer: load the image tokenizer from here instead of the checkpoint's own (its embedded tokenizer/
            folder, else the path or Hub repo id it records); it must be the same tokenizer (sha256, codebook size,
            grid), else a VimtoolError says which one to pass.
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        load_tokenizer: False skips the image tokenizer (token-level uses, e.g. the probe's LM features);
            `decode` then refuses.
        """
        folder = resolve(checkpoint, revision)
        config = read_config(folder)
        name = str(checkpoint)
        family = _stage2_family(config, name)  # before the weights load
        device = device if isinstance(device, torch.device) else resolve_device(device)
        model = load_model(folder).to(device).eval()
        text_tokenizer = parti.load_text_tokenizer(folder, model) if family == "parti" else None
        image_tok, identity = None, None
        if load_tokenizer:
            image_tok, identity = load_paired_tokenizer(config, tokenizer, name, device, folder)
        return cls(model, config, folder, image_tok, identity, text_tokenizer, name)

    # ------------------------------------------------------------------------------------------- facts
    @property
    def num_tokens(self) -> int:
        """Image tokens per sample (the tokenizer's grid, h * w)."""
        return self.model.num_tokens if self.family == "vim" else self.model.num_image_tokens

    @property
    def default_guidance_scale(self) -> float:
        """The guidance scale `generate` uses when none is given: 1 (off) for VIM, sampling/parti.py's for Parti."""
        return parti.DEFAULT_GUIDANCE if self.family == "parti" else 1.0

    def check_pairing(self, identity: dict[str, Any]) -> None:
        """Raise unless tokens of the tokenizer `identity` (e.g. a shard's) are what this model was trained on."""
        check_pairing(self.config, identity)

    # ------------------------------------------------------------------------------------------- generation
    def sampling_params(
        self,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        guidance_scale: float | None = None,
    ) -> SamplingParams:
        """Validated sampling settings; temperature / guidance_scale None = this family's default."""
        scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        temperature = DEFAULT_TEMPERATURE[self.family] if temperature is None else temperature
        return SamplingParams(temperature, top_k, top_p, scale)

    def generate(
        self,
        classes: Sequence[int] | None = None,
        prompts: Sequence[str] | None = None,
        num_samples: int = 1,
        *,
        seed: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        guidance_scale: float | None = None,
        rerank: str = "likelihood",
        batch_size: int = 32,
        use_cache: bool = True,
        decode_dtype: str = "fp32",
        images: bool = False,
        progress: bool = False,
    ) -> Generation:
        """Generate `num_samples` per class id (VIM; no classes: unconditional, num_samples in all) or per prompt
        (Parti, reranked best first within each prompt); every row in one Generation.

        temperature / top_k / top_p: sampling/logits.py (temperature 0 = greedy; None = the family's tuned
        default, sampling.DEFAULT_TEMPERATURE; top_k 0 / top_p 1 = off);
        guidance_scale: classifier-free guidance u + s (c - u), None = the family's default
        (`default_guidance_scale`). rerank (Parti): likelihood, contrastive[:a], pmi, none, shapes,
        clip:FOLDER (a `vimtool train-reranker` model), module:function, or A+B (the parts' scores standardised
        among each prompt's samples and summed; sampling/parti.py). batch_size: sequences decoded together (guidance doubles the model
        batch); it never changes the samples. use_cache: KV cache (False recomputes the prefix each step: the
        reference of tests and benchmarks). decode_dtype: "fp32" or "bf16" weights for the decode GEMMs
        (sampling/packed_linear.py). images: also decode to pixels (`Generation.images`). progress: a bar on stderr.
        """
        settings = dict(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, guidance_scale=guidance_scale,
                        rerank=rerank, batch_size=batch_size, use_cache=use_cache, decode_dtype=decode_dtype,
                        images=images, progress=progress)  # fmt: skip
        return Generation.concat(list(self.generate_chunks(classes, prompts, num_samples, **settings)))

    def generate_chunks(
        self,
        classes: Sequence[int] | None = None,
        prompts: Sequence[str] | None = None,
        num_samples: int = 1,
        *,
        seed: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        guidance_scale: float | None = None,
        rerank: str = "likelihood",
        batch_size: int = 32,
        use_cache: bool = True,
        decode_dtype: str = "fp32",
        images: bool = False,
        progress: bool = False,
    ) -> Iterator[Generation]:
        """`generate`'s rows in pieces (same settings), so a caller can write and drop them as they come (memory
        stays bounded for PartiPrompts-sized runs): one piece per class (VIM), or per group of whole prompts filling
        about one decoding batch (Parti). Which rows come out does not depend on the piece size."""
        if num_samples < 1 or batch_size < 1:
            raise VimtoolError("num_samples and batch_size must be >= 1")
        params = self.sampling_params(temperature, top_k, top_p, guidance_scale)
        run = dict(seed=seed, batch_size=batch_size, use_cache=use_cache, decode_dtype=decode_dtype, progress=progress)
        if self.family == "vim":
            if prompts:
                raise VimtoolError("prompts are for text-to-image (Parti) checkpoints; a VIM takes class ids")
            pieces = self._vim_pieces(classes, num_samples, params, **run)
        else:
            if classes:
                raise VimtoolError("class ids are for class-conditional VIM; a Parti checkpoint takes prompts")
            if not prompts:
                raise VimtoolError("a Parti checkpoint generates from prompts: give at least one")
            pieces = self._parti_pieces(list(prompts), num_samples, params, rerank, images, **run)
        for piece in pieces:
            if images and piece.images is None:
                piece.images = self.decode(piece.tokens)
            yield piece

    def generate_rows(
        self,
        labels: Sequence[int | None],
        sample_indices: Sequence[int] | torch.Tensor,
        *,
        seed: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        guidance_scale: float | None = None,
        batch_size: int = 32,
        use_cache: bool = True,
        decode_dtype: str = "fp32",
        progress: bool = False,
    ) -> Generation:
        """VIM rows given one by one: row i is class labels[i] (None = unconditional) drawn from the random numbers
        of (seed, sample_indices[i]) (sampling/vim.py `sample_indices`). Any subset or order of a run's rows gives
        those rows' tokens, so a run can be split over processes. group 0 and generation_index = sample_indices."""
        if self.family != "vim":
            raise VimtoolError("generate_rows takes class ids: it is for VIM checkpoints")
        if len(labels) != len(sample_indices) or batch_size < 1:
            raise VimtoolError("generate_rows needs one sample index per label and batch_size >= 1")
        params = self.sampling_params(temperature, top_k, top_p, guidance_scale)
        self._warn_untrained_null(params)
        indices = torch.as_tensor(sample_indices, dtype=torch.long)
        if any(lab is None for lab in labels) and not all(lab is None for lab in labels):
            raise VimtoolError("generate_rows: give class ids for every row or for none (unconditional)")
        label_ids = None if not labels or labels[0] is None else torch.tensor([int(c) for c in labels])
        t0 = time.perf_counter()
        tokens = vim.generate(
            self.model, label_ids, len(indices), params, seed, batch_size, use_cache,
            progress=progress, decode_dtype=decode_dtype, indices=indices,
        ) if len(indices) else torch.zeros(0, self.num_tokens, dtype=torch.long)  # fmt: skip
        return Generation(
            tokens=tokens, scores=torch.full((len(indices),), float("nan")), generation_index=indices,
            group=torch.zeros(len(indices), dtype=torch.long), labels=list(labels), seconds=time.perf_counter() - t0,
        )  # fmt: skip

    def _warn_untrained_null(self, params: SamplingParams) -> None:
        if params.guided and self.model.config.label_dropout == 0:
            log.warning(
                "guidance scale %s on a model trained without label dropout: its null class is untrained",
                params.guidance_scale,
            )

    def _vim_pieces(
        self, classes, num_samples: int, params: SamplingParams, seed, batch_size, use_cache, decode_dtype, progress
    ) -> Iterator[Generation]:
        self._warn_untrained_null(params)
        requested = [None] if classes is None else list(classes)
        for k, cls in enumerate(requested):
            labels = None if cls is None else torch.full((num_samples,), int(cls), dtype=torch.long)
            t0 = time.perf_counter()
            # sample indices are disjoint per class, so adding a class never changes another class's samples
            tokens = vim.generate(
                self.model, labels, num_samples, params, seed, batch_size, use_cache,
                first_index=k * num_samples, progress=progress, decode_dtype=decode_dtype,
            )  # fmt: skip
            yield Generation(
                tokens=tokens,
                scores=torch.full((num_samples,), float("nan")),
                generation_index=torch.arange(num_samples),
                group=torch.full((num_samples,), k, dtype=torch.long),
                labels=[None if cls is None else int(cls)] * num_samples,
                seconds=time.perf_counter() - t0,
            )

    def _parti_pieces(
        self, prompts: list[str], N: int, params: SamplingParams, rerank: str, images: bool,
        seed, batch_size, use_cache, decode_dtype, progress,
    ) -> Iterator[Generation]:  # fmt: skip
        rerankers = parti.parse_rerank(rerank)  # a bad spec fails before any generation
        # a model-based part (likelihood, contrastive) reads the log-probabilities the decoding computes anyway
        # (with fp32 decode weights: bf16 ones would score the rows with other numbers than a full-precision pass)
        reuse = decode_dtype == "fp32" and any(null_weight is not None for _, null_weight, _ in rerankers)
        P, T = len(prompts), self.num_tokens
        per_piece = max(1, batch_size // N)
        bar = tqdm(total=P * N, desc="sample", unit="img", file=sys.stderr, dynamic_ncols=True, disable=not progress)
        try:
            for c0 in range(0, P, per_piece):
                chunk = prompts[c0 : c0 + per_piece]
                Pc = len(chunk)
                t0 = time.perf_counter()
                logprobs: list[torch.Tensor] | None = [] if reuse else None
                # sample j of prompt p keeps its random numbers whatever the chunking: rows (seed, p * N + j)
                flat = parti.generate_rows(
                    self.model, self.text_tokenizer, chunk, N, params, seed, c0 * N, batch_size, use_cache, decode_dtype,
                    logprobs=logprobs,
                ).view(Pc * N, T)  # (Pc * N, T) in generation order  # fmt: skip
                seconds = time.perf_counter() - t0
                pixels = self.decode(flat) if images or parti.needs_images(rerankers) else None
                row_prompts = [q for q in chunk for _ in range(N)]
                scores = parti.rerank_scores(
                    self.model, self.text_tokenizer, row_prompts, flat, rerankers, pixels, batch_size, rerank, N,
                    logprobs[0] if logprobs else None,
                )  # (Pc * N,)  # fmt: skip
                order = parti.rank_order(scores.view(Pc, N))  # (Pc, N) generation index of rank k
                rows = (torch.arange(Pc)[:, None] * N + order).flatten()  # (Pc * N,) best first within each prompt
                yield Generation(
                    tokens=flat[rows],
                    scores=scores[rows],
                    generation_index=order.flatten(),
                    group=torch.arange(c0, c0 + Pc).repeat_interleave(N),
                    labels=[None] * (Pc * N),
                    seconds=seconds,
                    images=pixels[rows] if images else None,
                )
                bar.update(Pc * N)
        finally:
            bar.close()

    # ------------------------------------------------------------------------------------------- pixels
    def decode(self, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, T) token ids -> (N, 3, H, W) images in [-1, 1] on the CPU, with the paired image tokenizer."""
        if self.tokenizer is None:
            raise VimtoolError(f"{self.name} was loaded without its image tokenizer; load it with load_tokenizer=True")
        return decode_tokens(self.tokenizer, tokens, batch_size)


class SampleOutputs:
    """The files of one sampling run in `folder`, every one written atomically (vimtool/atomic.py):
    images/NAME.png, grid.png, tokens.npy (+ labels.npy) or a token shard, sampling.json."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        (self.folder / "images").mkdir(parents=True, exist_ok=True)

    def image(self, image, name: str) -> Path:
        """Save one PIL image (or a (3, H, W) tensor in [-1, 1]) as images/NAME."""
        return save_png(image if hasattr(image, "save") else to_pil(image), self.folder / "images" / name)

    def grid(self, images, ncol: int, captions: Sequence[str | None] | None = None) -> Path:
        """grid.png: images (PIL list or (N, 3, H, W) tensor) in rows of `ncol`, optionally captioned."""
        return save_png(make_grid(images, ncol=ncol, captions=captions), self.folder / "grid.png")

    def tokens(
        self,
        tokens: torch.Tensor,
        labels: Sequence[int | None] | None = None,
        identity: dict[str, Any] | None = None,
        token_format: str = "npy",
    ) -> list[Path]:
        """tokens.npy (N, T) uint16 and, with labels, labels.npy (-1 = none); or with token_format "parquet" one
        token shard samples-r000-00000.parquet (readable by load_token_table; needs the tokenizer identity)."""
        if token_format == "parquet":
            if identity is None:
                raise VimtoolError("a token shard records its tokenizer: give its identity")
            with ShardWriter(
                self.folder, TokenizerIdentity.from_dict(identity), rows_per_shard=max(1, len(tokens)), prefix="samples"
            ) as w:
                w.add_batch(tokens.numpy(), labels, None, [f"sample-{i}" for i in range(len(tokens))])
            return list(w.written)
        files = [save_npy(self.folder / "tokens.npy", tokens.numpy().astype("uint16"))]
        if labels is not None:
            files.append(
                save_npy(self.folder / "labels.npy", torch.tensor([-1 if x is None else x for x in labels]).numpy())
            )
        return files

    def record(self, record: dict[str, Any]) -> Path:
        """sampling.json: the run's settings and per-image facts."""
        return write_json(self.folder / "sampling.json", record)


__all__ = ["FAMILIES", "Generation", "SampleOutputs", "Stage2Pipeline"]
