"""The VIM sampler: batched autoregressive generation with a KV cache, guidance, and rejection sampling.

    generate(model, labels, num_samples, params, seed, ...) -> token ids (N, T)
    requested_labels(cfg, model) -> the classes `vimtool sample` asks for;  keep_best(probs, cls, n) -> rejection
    sample_indices(classes, n, by_class) -> each sample's row of the seed stream (the numbering below)

Loading a checkpoint, decoding to pixels and writing files are the pipeline's (vimtool/pipeline.py); the `sample`
command for a VIM checkpoint is vimtool/sampling/command.py.

Decoding (docs/PAPERS.md section 2): the start token (BOS, or the class token) is prefilled into the KV cache, then
one token per step; each step costs one position's projections plus attention over the cached prefix.
`use_cache=False` recomputes the whole prefix every step (the reference the tests and bench_sample.py compare
against). Classifier-free guidance puts the conditional rows and the null-class rows in ONE model batch
(2B rows) and mixes their logits u + s (c - u) (sampling/logits.py).

Reproducibility: sample i of a run draws its random numbers from (seed, i) alone (`row_uniforms`), so a seed
gives the same images whatever the batch size, the device, or cached vs uncached decoding (up to float
rounding of the logits). Which i a sample gets (`sample_indices`): `--class` / `--all-classes` with `-n N` number
the samples by the class's position k in the request (k * N + j, unchanged since the first release so old seeds
keep their images); `--per-class N` numbers them by the class id itself (c * CLASS_INDEX_STRIDE + j), so a class's
images depend on (seed, class, j) alone: not on which other classes are asked, nor on N (a run of 10 per class is
the first 10 of a run of 50).

Rejection sampling (VIM section 4, "acceptance rate 0.5"): for each requested class, ceil(n / acceptance)
candidates are generated, scored by a classifier (a probe head from `vimtool probe`: p(class | sample)), and the
n best kept (`keep_best`). Unconditional models keep the candidates the classifier is most confident about.
"""

from __future__ import annotations

import sys

import torch
from tqdm.auto import tqdm

from vimtool.errors import VimtoolError
from vimtool.models.vim import VIM
from vimtool.sampling import SampleConfig
from vimtool.sampling.logits import SamplingParams, autoregressive_sample, row_uniforms
from vimtool.sampling.packed_linear import decoding_weights

# --per-class numbering: sample j of class c draws seed-stream row c * stride + j (class 0's rows are the ones
# `--class 0 -n N` alone draws). torch's CPU generator keeps only the low 32 bits of a seed, so rows differ only
# below 2^32: 2^17 images per class for up to 2^15 classes (ImageNet-21k has 21,841) keep every row distinct.
CLASS_INDEX_STRIDE = 1 << 17
DISTINCT_ROWS = 1 << 32


# ----------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_batch(
    model: VIM,
    labels: torch.Tensor | None,
    params: SamplingParams,
    uniforms: torch.Tensor,
    use_cache: bool = True,
    guided: bool | None = None,
    decode_dtype: str = "fp32",
) -> torch.Tensor:
    """One batch: labels (B,) class ids (None = unconditional / null class), uniforms (B, T) -> ids (B, T).

    guided: None = when the guidance scale is not 1; True forces the doubled (conditional + null) batch even
    at scale 1 (where it must equal plain conditional sampling: tests/test_sampling.py checks it).
    decode_dtype: "fp32" (default) or "bf16" weights for the decode GEMMs (sampling/packed_linear.py; on the
    CPU both run from oneDNN-packed weights)."""
    b, T = uniforms.shape
    device = model.tok_emb.weight.device
    conditional = model.config.conditional and labels is not None
    guided = conditional and (params.guided if guided is None else guided)
    if labels is not None:
        labels = model.check_labels(labels, b, allow_null=False)
    if params.guided and not conditional:
        raise VimtoolError(
            "guidance (--guidance-scale != 1) needs a class-conditional checkpoint and class ids (--class)"
        )
    if guided:
        null = torch.full_like(labels, model.config.null_class)
        rows_labels = torch.cat([labels, null])  # (2B,): conditional rows first, then unconditional
    else:
        rows_labels = labels
    rows = rows_labels.shape[0] if rows_labels is not None else b

    if use_cache:
        cache = model.new_cache(rows, device=device)

        def step(new: torch.Tensor | None) -> torch.Tensor:
            return model.step(cache, new, rows_labels if new is None else None)[:, -1]  # (rows, V)
    else:
        prefix = torch.zeros(rows, 0, dtype=torch.long, device=device)

        def step(new: torch.Tensor | None) -> torch.Tensor:
            nonlocal prefix
            if new is not None:
                prefix = torch.cat([prefix, new], dim=1)  # (rows, t)
            return model(prefix, rows_labels)[:, -1]  # recompute every position: (rows, V)

    with decoding_weights(model, rows, decode_dtype):
        return autoregressive_sample(step, b, T, params, guided=guided, uniforms=uniforms)


@torch.no_grad()
def generate(
    model: VIM,
    labels: torch.Tensor | None,
    num_samples: int,
    params: SamplingParams,
    seed: int = 0,
    batch_size: int = 32,
    use_cache: bool = True,
    first_index: int = 0,
    progress: bool = False,
    decode_dtype: str = "fp32",
    indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """`num_samples` sequences -> (N, T) int64 on the CPU. labels: (N,) class ids or None (unconditional).

    Sample i uses the random numbers of (seed, first_index + i), or of (seed, indices[i]) when `indices` (N,)
    gives each row's place in the seed stream explicitly (`sample_indices`; a slice of a run in another process).
    """
    model.eval()
    T = model.num_tokens
    if labels is not None and labels.shape[0] != num_samples:
        raise ValueError(f"{labels.shape[0]} labels for {num_samples} samples")
    if indices is not None and indices.shape[0] != num_samples:
        raise ValueError(f"{indices.shape[0]} sample indices for {num_samples} samples")
    out = []
    starts = range(0, num_samples, batch_size)
    rows = min(batch_size, num_samples) * (2 if params.guided else 1)
    with decoding_weights(model, rows, decode_dtype):  # pack the weights once for all batches
        for start in tqdm(starts, desc="sample", file=sys.stderr, disable=not progress):
            n = min(batch_size, num_samples - start)
            if indices is None:
                u = row_uniforms(seed, first_index + start, n, T)  # (n, T)
            else:
                u = torch.cat([row_uniforms(seed, int(i), 1, T) for i in indices[start : start + n]])  # (n, T)
            lab = labels[start : start + n] if labels is not None else None
            out.append(generate_batch(model, lab, params, u, use_cache, decode_dtype=decode_dtype).cpu())
    return torch.cat(out)  # (N, T)


# ----------------------------------------------------------------------------------------------- classes
def requested_labels(cfg: SampleConfig, model: VIM) -> list[int | None]:
    """The classes `vimtool sample` asks for (--class / --classes / --all-classes; --per-class alone = every class),
    checked against the model: one entry per class, duplicates dropped (None = unconditional)."""
    c = model.config
    if cfg.prompts or cfg.prompts_file:
        raise VimtoolError("--prompt/--prompts-file are for text-to-image (Parti) checkpoints; VIM takes --class")
    if not c.conditional:
        if cfg.classes or cfg.all_classes or cfg.per_class:
            raise VimtoolError(
                f"{cfg.checkpoint} is an unconditional VIM (trained without labels); drop --class/--all-classes/"
                "--per-class and give the number of images with -n"
            )
        return [None]
    if cfg.all_classes or (cfg.per_class and not cfg.classes):
        return list(range(c.num_classes))
    if not cfg.classes:
        raise VimtoolError(
            f"{cfg.checkpoint} is class-conditional ({c.num_classes} classes): give --class ID (repeatable) or --all-classes"
        )
    bad = [k for k in cfg.classes if not 0 <= k < c.num_classes]
    if bad:
        raise VimtoolError(f"class id(s) {bad} out of range: this checkpoint knows classes 0..{c.num_classes - 1}")
    return list(dict.fromkeys(cfg.classes))


def sample_indices(classes: list[int | None], per_class: int, by_class: bool) -> torch.Tensor:
    """(len(classes) * per_class,) int64: the seed-stream row of each sample, class by class in request order.

    by_class False: k * per_class + j for the k-th class asked (the --class / -n numbering); True: c * stride + j
    for class id c (--per-class: a class's rows depend on its id alone; see the module docstring)."""
    j = torch.arange(per_class, dtype=torch.long)
    if not by_class:
        return torch.arange(len(classes) * per_class, dtype=torch.long)
    if any(c is None for c in classes):
        raise VimtoolError("--per-class numbers samples by class id: it needs a class-conditional checkpoint")
    if per_class > CLASS_INDEX_STRIDE:
        raise VimtoolError(f"--per-class {per_class}: at most {CLASS_INDEX_STRIDE} images per class")
    if classes and max(classes) >= DISTINCT_ROWS // CLASS_INDEX_STRIDE:
        raise VimtoolError(
            f"--per-class numbers at most {DISTINCT_ROWS // CLASS_INDEX_STRIDE} classes; use --class with -n for more"
        )
    return torch.cat([int(c) * CLASS_INDEX_STRIDE + j for c in classes]) if classes else j[:0]


def keep_best(probs: torch.Tensor, cls: int | None, keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rejection sampling (VIM section 4): from the candidates' class probabilities (n, C) keep the `keep` most likely
    to show class `cls` (unconditional: the ones the classifier is most confident about), in generation order.

    -> (kept indices (keep,), their scores, their predicted classes)."""
    scores = probs[:, cls] if cls is not None else probs.max(dim=1).values  # (n,)
    kept = torch.argsort(scores, descending=True, stable=True)[:keep].sort().values  # generation order among the kept
    return kept, scores[kept], probs.argmax(dim=1)[kept]


__all__ = ["CLASS_INDEX_STRIDE", "generate", "generate_batch", "keep_best", "requested_labels", "sample_indices"]
