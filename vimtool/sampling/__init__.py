"""Sampling: the `sample` command's settings (`SampleConfig`); its library entry point is
`vimtool.sampling.command.sample(cfg) -> list of written image paths`, which runs the checkpoint's `Stage2Pipeline` (vimtool/pipeline.py: model + paired
tokenizer, generate, decode, output files) and its family's settings (VIM class ids and rejection; Parti prompts,
reranking and checker).

The package's modules, lowest first: `logits` (temperature / top-k / top-p / guidance mixing / the decode loop),
`packed_linear` (`decoding_weights`: oneDNN-packed fp32 / bf16 or int8 decode weights on the CPU, the
`decode_dtype` setting), `decode` (the paired image tokenizer and token -> pixel decoding), `vim` and `parti` (each family's
generation and what only it needs), `classifier` (probe heads that judge samples), then -- above the pipeline --
`command`. Family-specific fields of `SampleConfig` are documented as such; a sampler ignores the others' fields
except that it refuses ones that make no sense for it (e.g. --class for a text-to-image checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from vimtool.errors import VimtoolError
from vimtool.sampling.logits import SamplingParams

# The temperature `sample` uses when none is given, per family: the best measured (docs/RESULTS.md).
# VIM on mnist5k (section 2.1): temperature 0.8 read 81.8% class consistency against 76.4% at the paper's 1.0.
# Parti on shapes (section 3): with the learned reranker, 0.6 beat 0.85 on three trained models (reranked picks
# +2.5 points on seen prompts, +7.6 on held-out ones, mean of 3; confirmed on other prompts); 1.0 read lower still.
DEFAULT_TEMPERATURE = {"vim": 0.8, "parti": 0.6}


@dataclass
class SampleConfig:
    """Settings of `vimtool sample` (recipe keys; `--set key=value`)."""

    checkpoint: str = ""  # stage-2 checkpoint folder, run folder or Hub repo id
    out: str = "samples"  # folder for images/, grid.png, tokens.npy, sampling.json
    num_samples: int = 16  # per class (class-conditional VIM) / per prompt (Parti) / in total (unconditional)
    batch_size: int = 32  # sequences generated together (guidance doubles the model batch)
    seed: int = 0
    # None = the family's tuned default (DEFAULT_TEMPERATURE); the VIM paper samples at 1.0 (docs/PAPERS.md section 2)
    temperature: float | None = None
    top_k: int = 0
    top_p: float = 1.0
    # logits = u + s (c - u); 1 = off. None = the family's default: 1 for VIM, sampling/parti.py's DEFAULT_GUIDANCE
    guidance_scale: float | None = None
    use_cache: bool = True  # KV cache; off = recompute the whole prefix each step (for benchmarks/tests)
    # weights of the decode GEMMs (--weights-dtype): fp32 (exact up to kernel rounding), bf16 or int8 (weight-only,
    # per-channel scales; not bit-equal): on an AVX512-BF16 CPU ~3.3x / ~3.9x fp32's tokens/s at batch 1, ~2x at batch 4
    # (docs/BENCHMARKS.md section 1c; CPU: vimtool's C kernel, oneDNN-packed or int8 weights, sampling/packed_linear.py)
    decode_dtype: Literal["fp32", "bf16", "int8"] = "fp32"
    tokenizer: str | None = None  # decode with this tokenizer (must be the recorded one); default: recorded path
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    grid_cols: int = 8
    token_format: Literal["npy", "parquet"] = "npy"  # tokens.npy (+ labels.npy) or a token shard
    # VIM only
    classes: list[int] = field(default_factory=list)  # class ids to sample (class-conditional checkpoints)
    all_classes: bool = False  # every class id of the checkpoint
    # class-balanced: N images of each class asked (every class when none is), numbered by class id so a class's
    # images depend on (seed, class, j) alone (sampling/vim.py `sample_indices`); 0 = off (num_samples per class)
    per_class: int = 0
    npz: str | None = None  # also write every image to this .npz in ADM's layout (arr_0 uint8 NHWC, arr_1 labels)
    class_names: list[str] = field(default_factory=list)  # labels for the grid (index = class id)
    classifier: str | None = None  # a probe head folder (vimtool probe) for rejection sampling
    acceptance: float = 1.0  # keep this fraction of candidates, best classifier score first (VIM: 0.5)
    judge: str | None = None  # a probe head that only scores the kept samples (class consistency), never rejects
    # Parti only
    prompts: list[str] = field(default_factory=list)
    prompts_file: str | None = None
    # likelihood, contrastive[:a] (log p(x|text) - a log p(x|null)), pmi, none, shapes, clip:FOLDER (a reranker
    # from `vimtool train-reranker`), module:function; A+B sums the parts' scores, each standardised per prompt
    rerank: str = "likelihood"
    checker: str | None = None  # score every sample for evaluation: shapes or module:function (sampling.json)

    def params(self) -> SamplingParams:
        return SamplingParams(
            1.0 if self.temperature is None else self.temperature,
            self.top_k,
            self.top_p,
            1.0 if self.guidance_scale is None else self.guidance_scale,
        )

    def for_family(self, family: str) -> SampleConfig:
        """A copy with the family's default temperature filled in where none was given (sampling.json records it)."""
        return self if self.temperature is not None else replace(self, temperature=DEFAULT_TEMPERATURE[family])

    def check(self) -> None:
        if not self.checkpoint:
            raise VimtoolError("sample needs a checkpoint: --checkpoint FOLDER (a train-lm / train-t2i output)")
        if self.num_samples < 1 or self.batch_size < 1:
            raise VimtoolError("--num-samples and --batch-size must be >= 1")
        if not 0.0 < self.acceptance <= 1.0:
            raise VimtoolError(f"--acceptance is the fraction of candidates kept, in (0, 1]; got {self.acceptance}")
        if self.per_class < 0:
            raise VimtoolError(f"--per-class is the number of images per class (0 = off), got {self.per_class}")
        if self.npz is not None and not self.npz.endswith(".npz"):
            raise VimtoolError(f"--npz {self.npz}: the file name must end in .npz (eval-fid reads it by that suffix)")
        if self.acceptance < 1.0 and not self.classifier:
            raise VimtoolError("--acceptance below 1 needs --classifier (a probe head folder from `vimtool probe`)")
        self.params()  # validates temperature / top-k / top-p / guidance


__all__ = ["DEFAULT_TEMPERATURE", "SampleConfig", "SamplingParams"]
