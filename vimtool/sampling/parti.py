"""The Parti sampler: prompts -> N images each, with classifier-free guidance, a KV cache and reranking.

    generate(model, text_tok, prompts, num_samples, params, seed, ...) -> token ids (P, N, T)
    parse_rerank(spec) + rerank_scores(...) -> one score per sample; rank_order(scores) -> best first
    read_prompts(prompts, prompts_file) -> the prompts of `vimtool sample --prompt / --prompts-file`

Loading a checkpoint, decoding to pixels and writing files are the pipeline's (vimtool/pipeline.py); the `sample`
command for a Parti checkpoint is vimtool/sampling/command.py.

Decoding (docs/PAPERS.md section 3): the prompt is encoded once; its cross-attention K/V are computed on the first
decoder call and kept in the KV cache with the self-attention K/V, so each step costs one position. Guidance
puts the conditional rows and the rows conditioned on the learned null in ONE model batch (2B rows) and mixes
logits = u + lambda (c - u) (vimtool/sampling/logits.py, the shared loop). `use_cache=False` recomputes the
whole prefix each step (the reference for tests and bench/bench_sample.py).

Default guidance scale: `DEFAULT_GUIDANCE` = 1.5 (used when --guidance-scale is not given). The paper uses 1.2
with its 20B model; on the quickstart's tiny `shapes` model 1.5 passed the shapes checker more often than 1.0
(no guidance) or 3.0 (which over-sharpens into artefacts), so 1.5 it is.

Reranking (Parti: 16 samples per prompt, reranked by a contrastive image-text model, best kept): the default
scorer needs no outside model. `contrastive[:a]` scores log p(image | prompt) - a log p(image | null), both from
this model in one teacher-forced pass over 2N rows: a = 1 (`pmi`, the default `contrastive`) is how much the
prompt raises the image's likelihood (pointwise mutual information); a = 0 (`likelihood`, one pass over N rows)
is the plain conditional likelihood. The sampler already computes both while it decodes (the conditional rows'
logits, and the null rows' when it guides), so the pipeline sums them as it goes (`generate_rows(logprobs=...)`)
and the reranker reads those: no second pass, or only the null one for unguided samples; with bf16 decode weights
it runs the full-precision pass as before. The DEFAULT is `likelihood`, measured rather than assumed: on the quickstart
(shapes, 32 prompts x 8 samples per group, two seeds, guidance 1 / 1.5 / 2) PMI picked no better than the first
sample -- it favours images unlikely under the null as much as likely under the prompt, i.e. odd ones -- while
the likelihood raised the checker's pass rate over the first sample in every setting (see recipes/quickstart.sh;
a = 0.5 lies in between). `clip:FOLDER` is the paper's kind of reranker: the cosine similarity of each
decoded image with its prompt under a contrastive dual encoder trained by `vimtool train-reranker`
(vimtool/sampling/clip.py); on the quickstart it picks a passing picture more often than `contrastive:0.25`
(docs/RESULTS.md). `clipattr:FOLDER` asks the same dual encoder about each colour and shape word of the prompt
on its own (the prompt's word against the prompt with each other word of its set; vimtool/sampling/clip.py), which
generalises to colour-shape pairs it never saw. Other scorers: `none` (generation order), `shapes`
(the built-in checker: the fraction of the caption's attributes an image satisfies, 1.0 = all), or
`module:function` taking (images: list[PIL.Image], prompts: list[str]) and returning one float per image,
higher = better. `A+B` combines rerankers: each part's scores are z-scored among each prompt's samples and summed,
so the parts weigh the same whatever their units (e.g. `clip:FOLDER+contrastive:0.25`, the quickstart's: on its
saved samples, seen prompts passed 69 -> 80% against `clip` alone, docs/RESULTS.md).

Reproducibility: sample j of prompt p draws its random numbers from (seed, p * N + j) alone (`row_uniforms`),
so results do not depend on the batch size or on cached vs uncached decoding (up to float rounding).

"""

from __future__ import annotations

import csv
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from vimtool.data.transforms import to_pil
from vimtool.errors import VimtoolError
from vimtool.models.parti import Parti
from vimtool.sampling.logits import SamplingParams, autoregressive_sample, row_uniforms
from vimtool.sampling.packed_linear import decoding_weights

DEFAULT_GUIDANCE = 1.5  # measured on the quickstart (recipes/quickstart.sh: 1.5 beat 1.0 and 3.0); the paper: 1.2
# the --rerank values (with their argument's name); any other "module:function" names a Python scorer
RERANKERS = (
    "likelihood", "contrastive", "contrastive:A", "pmi", "none", "shapes", "clip:FOLDER", "clipattr:FOLDER", "A+B"
)  # fmt: skip
MAX_GRID_PROMPTS = 64


# ------------------------------------------------------------------------------------------------- prompts
def read_prompts(prompts: Sequence[str] = (), prompts_file: str | None = None) -> list[str]:
    """--prompt values, then the file's: one prompt per line, or a TSV with a `Prompt`/`prompt` column
    (PartiPrompts' format). `-` reads the file from stdin. Blank lines in a file are skipped."""
    out = list(prompts)
    if prompts_file:
        if prompts_file == "-":
            text = sys.stdin.read()
        else:
            path = Path(prompts_file)
            if not path.is_file():
                raise VimtoolError(
                    f"prompts file {path} does not exist; give a .txt (one prompt per line) or a .tsv with a Prompt column"
                )
            text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        first = lines[0].split("\t") if lines else []
        column = next((i for i, h in enumerate(first) if h.strip().lower() == "prompt"), None)
        if column is not None:
            rows = list(csv.reader(lines[1:], delimiter="\t"))
            out += [r[column] for r in rows if len(r) > column and r[column].strip()]
        elif str(prompts_file).endswith(".tsv"):
            raise VimtoolError(
                f"{prompts_file}: a .tsv prompts file needs a header with a 'Prompt' column (as PartiPrompts)"
            )
        else:
            out += [ln.strip() for ln in lines if ln.strip()]
    if not out:
        raise VimtoolError(
            "no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE (.txt or PartiPrompts .tsv)"
        )
    return out


# ---------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def _contexts(
    model: Parti, text_ids: torch.Tensor, text_mask: torch.Tensor, guided: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    ctx, mask = model.encode_text(text_ids, text_mask)  # (B, L, D), (B, L)
    if not guided:
        return ctx, mask
    n_ctx, n_mask = model.null_context(ctx.shape[0], ctx.shape[1], ctx.device)
    return torch.cat([ctx, n_ctx.to(ctx.dtype)]), torch.cat([mask, n_mask])  # (2B, L, D): conditional rows first


@torch.no_grad()
def generate_batch(
    model: Parti,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    params: SamplingParams,
    uniforms: torch.Tensor,
    use_cache: bool = True,
    guided: bool | None = None,
    decode_dtype: str = "fp32",
    logprobs: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """One batch: prompt ids/mask (B, L) and uniforms (B, T) -> image token ids (B, T).

    `guided` (default: params.guided, i.e. scale != 1) runs the null rows alongside the conditional ones.
    `decode_dtype` "fp32" (default) or "bf16": the weights of the decode GEMMs (sampling/packed_linear.py).
    `logprobs`, a list, receives a (B, 2) tensor when guided, (B, 1) otherwise: each sample's log p(x | prompt)
    and log p(x | null) at temperature 1, from the decoding's own logits (`autoregressive_sample`).
    """
    b, T = uniforms.shape
    device = model.null.device
    guided = params.guided if guided is None else guided
    rows: list[torch.Tensor] | None = [] if logprobs is not None else None
    with decoding_weights(model, b * (2 if guided else 1), decode_dtype):
        ids = _decode(model, text_ids.to(device), text_mask.to(device), uniforms, params, use_cache, guided, rows)
    if logprobs is not None and rows:
        logprobs.append(rows[0].view(2 if guided else 1, b).T.cpu())  # conditional rows first
    return ids


def _decode(
    model: Parti,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    uniforms: torch.Tensor,
    params: SamplingParams,
    use_cache: bool,
    guided: bool,
    logprobs: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    b, T = uniforms.shape
    device = model.null.device
    ctx, mask = _contexts(model, text_ids, text_mask, guided)
    rows = ctx.shape[0]
    if use_cache:
        cache = model.new_cache(rows, device=device)

        def step(new: torch.Tensor | None) -> torch.Tensor:
            if new is None:
                return model.next_logits(None, ctx, mask, cache)
            return model.next_logits(new, None, None, cache)  # cross K/V come from the cache
    else:
        prefix = torch.zeros(rows, 0, dtype=torch.long, device=device)

        def step(new: torch.Tensor | None) -> torch.Tensor:
            nonlocal prefix
            if new is not None:
                prefix = torch.cat([prefix, new], dim=1)  # (rows, t)
            probe = torch.cat([prefix, prefix.new_zeros(rows, 1)], dim=1)  # the last input predicts position t
            return model.image_logits(ctx, mask, probe)[:, -1]  # recompute every position: (rows, V)

    return autoregressive_sample(step, b, T, params, guided=guided, uniforms=uniforms, logprobs=logprobs)


@torch.no_grad()
def generate(
    model: Parti,
    text_tok,
    prompts: Sequence[str],
    num_samples: int,
    params: SamplingParams,
    seed: int = 0,
    batch_size: int = 32,
    use_cache: bool = True,
    decode_dtype: str = "fp32",
) -> torch.Tensor:
    """`num_samples` images per prompt -> (P, N, T) int64 ids on the CPU, in generation order."""
    model.eval()
    return generate_rows(model, text_tok, prompts, num_samples, params, seed, 0, batch_size, use_cache, decode_dtype)


@torch.no_grad()
def generate_rows(
    model: Parti,
    text_tok,
    prompts: Sequence[str],
    num_samples: int,
    params: SamplingParams,
    seed: int,
    first_row: int,
    batch_size: int,
    use_cache: bool,
    decode_dtype: str = "fp32",
    logprobs: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Like `generate`, for prompts whose first sample is row `first_row` of the run: -> (P, N, T). `logprobs`, a
    list, receives the (P * N, 2 or 1) log-probabilities of `generate_batch`."""
    T = model.num_image_tokens
    P, N = len(prompts), num_samples
    ids, mask = text_tok.encode_batch(list(prompts))  # (P, L)
    row_prompt = torch.arange(P).repeat_interleave(N)  # (P*N,)
    out, scores = [], []
    with decoding_weights(model, min(batch_size, P * N) * (2 if params.guided else 1), decode_dtype):  # pack once
        for start in range(0, P * N, batch_size):
            sel = row_prompt[start : start + batch_size]
            u = row_uniforms(seed, first_row + start, len(sel), T)  # (b, T): row r uses (seed, r)
            lp = scores if logprobs is not None else None
            out.append(generate_batch(model, ids[sel], mask[sel], params, u, use_cache, decode_dtype=decode_dtype,
                                      logprobs=lp).cpu())  # fmt: skip
    if logprobs is not None:
        logprobs.append(torch.cat(scores))
    return torch.cat(out).view(P, N, T)


# ----------------------------------------------------------------------------------------------- reranking
@torch.no_grad()
def contrastive_scores(
    model: Parti,
    text_tok,
    prompts: Sequence[str],
    tokens: torch.Tensor,
    batch_size: int = 32,
    null_weight: float = 1.0,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(image | prompt) - null_weight * log p(image | null) per row: prompts[i] with tokens (M, T) row i -> (M,).

    `known`: (M, 2) or (M, 1) log-probabilities the sampler already has (`generate_rows(logprobs=...)`: the
    conditional one, then the null one when it sampled with guidance); only what is missing is computed."""
    if known is not None and (null_weight == 0 or known.shape[1] == 2):
        return known[:, 0].float() - (null_weight * known[:, 1].float() if null_weight else 0.0)
    device = model.null.device
    out = []
    if known is not None:  # sampled without guidance: only the null pass is missing
        for s in range(0, len(tokens), batch_size):
            toks = tokens[s : s + batch_size].to(device)
            ctx, cmask = model.null_context(toks.shape[0], 1, device)
            out.append(model.sequence_logprob(ctx, cmask, toks).cpu())
        return known[:, 0].float() - null_weight * torch.cat(out)
    for s in range(0, len(prompts), batch_size):
        ids, mask = text_tok.encode_batch(list(prompts[s : s + batch_size]))
        toks = tokens[s : s + batch_size].to(device)
        b = toks.shape[0]
        if null_weight == 0:  # the likelihood alone: no null rows needed
            ctx, cmask = model.encode_text(ids.to(device), mask.to(device))
            out.append(model.sequence_logprob(ctx, cmask, toks).cpu())
            continue
        ctx, cmask = _contexts(model, ids.to(device), mask.to(device), guided=True)  # 2b rows: prompt, then null
        logp = model.sequence_logprob(ctx, cmask, torch.cat([toks, toks]))  # (2b,) one batched pass
        out.append((logp[:b] - null_weight * logp[b:]).cpu())
    return torch.cat(out)


def shapes_scores(images: Sequence, prompts: Sequence[str]) -> list[float]:
    """The shapes checker as a scorer: 1.0 when the image passes, else the fraction of attribute checks it passes."""
    from vimtool.data.shapes import check

    out = []
    for im, p in zip(images, prompts):
        try:
            r = check(im, p)
        except VimtoolError:  # a prompt the checker cannot read: no opinion
            out.append(0.0)
            continue
        parts = (r.colour, r.shape, r.size, r.position, r.relation, r.count)
        out.append(1.0 if r.ok else sum(parts) / len(parts) * 0.99)
    return out


def load_scorer(spec: str) -> Callable[[Sequence, Sequence[str]], Sequence[float]]:
    """`shapes`, `clip:FOLDER`, `clipattr:FOLDER` or `module:function` -> a callable (images, prompts) -> scores."""
    if spec == "shapes":
        return shapes_scores
    if spec.startswith(("clip:", "clipattr:")):  # before module:function, which would read them as modules
        from vimtool.sampling.clip import AttributeScorer, ClipScorer  # deferred: only these need the dual encoder

        kind, folder = spec.split(":", 1)
        return (ClipScorer if kind == "clip" else AttributeScorer).load(folder)
    if ":" not in spec:
        raise VimtoolError(f"--rerank {spec!r}: use {', '.join(RERANKERS)} or module:function (a Python callable)")
    module_name, func_name = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise VimtoolError(f"--rerank {spec}: cannot import {module_name} ({e}); put it on PYTHONPATH") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise VimtoolError(f"--rerank {spec}: {module_name} has no callable {func_name!r}")
    return fn


def contrastive_weight(spec: str) -> float | None:
    """The null weight a of a model-based reranker: `likelihood` 0, `contrastive`/`pmi` 1, `contrastive:0.7` 0.7;
    anything else (an external scorer) -> None."""
    if spec == "likelihood":
        return 0.0
    if spec in ("pmi", "contrastive"):
        return 1.0
    if spec.startswith("contrastive:"):
        try:
            return float(spec.split(":", 1)[1])
        except ValueError:
            raise VimtoolError(
                f"--rerank {spec}: the weight after 'contrastive:' must be a number, e.g. contrastive:0.5"
            ) from None
    return None


# (weight of the part in a sum, null weight of a model-based score or None, external scorer or None)
Reranker = tuple[float, float | None, Callable[[Sequence, Sequence[str]], Sequence[float]] | None]
_WEIGHT = r"(?:\d+(?:\.\d*)?|\.\d+)\*"  # a part's weight in a sum: 0.25*contrastive:0.25
# a "+" starts a new part only before a (weighted) reranker's name or a module:function, so a folder path may hold
# a "+"
_NEXT_PART = re.compile(
    rf"\+(?=(?:{_WEIGHT})?(?:(?:likelihood|pmi|none|shapes|contrastive)(?:\+|$)|contrastive:|clip:|clipattr:"
    r"|[A-Za-z_][\w.]*:[A-Za-z_])|$)"
)


def part_weight(part: str) -> tuple[float, str]:
    """`0.25*contrastive:0.25` -> (0.25, "contrastive:0.25"); a part without a weight weighs 1."""
    m = re.match(_WEIGHT, part)
    return (float(part[: m.end() - 1]), part[m.end() :]) if m else (1.0, part)


def rerank_parts(spec: str) -> list[str]:
    """`clip:runs/a+b/reranker+0.5*contrastive:0.25` -> ["clip:runs/a+b/reranker", "0.5*contrastive:0.25"]."""
    return _NEXT_PART.split(spec)


def parse_rerank(spec: str) -> list[Reranker]:
    """A --rerank value -> one (weight, null weight of the model-based score or None, external scorer or None) per
    part.

    `likelihood` / `contrastive[:a]` / `pmi` -> (1, a, None); `none` -> (1, None, None); `shapes` / `clip:FOLDER` /
    `module:function` -> (1, None, the scorer; a reranker folder is loaded here). `A+B` combines rerankers: each
    part's scores are standardised among each prompt's samples and summed (`rerank_scores`), each times its weight
    (`W*A`, default 1). A spec that names nothing usable is a VimtoolError, before any sample is drawn."""
    parts = [part_weight(p) for p in rerank_parts(spec or "none")]  # (weight, the part without it)
    if len(parts) > 1 and any(part in ("none", "") for _, part in parts):
        raise VimtoolError(
            f"--rerank {spec}: 'none' and empty parts cannot be combined; give rerankers, e.g. clip:FOLDER+contrastive:0.25"
        )
    out = []
    for weight, part in parts:
        null_weight = contrastive_weight(part)
        out.append((weight, null_weight, None if null_weight is not None or part == "none" else load_scorer(part)))
    return out


def needs_images(rerankers: list[Reranker]) -> bool:
    """True when a part of the reranker reads decoded pictures (an external scorer)."""
    return any(scorer is not None for *_, scorer in rerankers)


def rerank_scores(
    model: Parti,
    text_tok,
    prompts: Sequence[str],
    tokens: torch.Tensor,
    rerankers: list[Reranker],
    images: torch.Tensor | None,
    batch_size: int,
    spec: str,
    group_size: int,
    logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M,) reranking scores of rows `tokens` (M, T) drawn for `prompts[i]` (see `parse_rerank`); an external
    scorer reads the rows' decoded `images` (M, 3, H, W) in [-1, 1]. No scorer at all: zeros (generation order).
    `logprobs` (M, 2 or 1): the rows' log-probabilities from their own sampling (`generate_rows`), which the
    model-based parts use instead of a second pass over the rows.
    Several parts: each part's scores z-scored within consecutive groups of `group_size` rows (one prompt's
    samples) and summed, each times its weight, so scores in nats and cosine similarities weigh alike; one part:
    its raw scores."""
    parts = [
        _part_scores(model, text_tok, prompts, tokens, w, f, images, batch_size, spec, logprobs)
        for _, w, f in rerankers
    ]
    if len(parts) == 1:
        return parts[0]
    if len(tokens) % group_size:
        raise VimtoolError(f"--rerank {spec}: {len(tokens)} rows do not split into prompts of {group_size} samples")
    total = torch.zeros(len(tokens))
    for (weight, *_), scores in zip(rerankers, parts):
        g = scores.view(-1, group_size)
        std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.ones(len(g), 1)
        # a part that ties every sample of a prompt has no opinion there: it adds zeros, not 0/0
        total += weight * ((g - g.mean(dim=1, keepdim=True)) / std.where(std > 0, torch.ones_like(std))).flatten()
    return total


def _part_scores(
    model, text_tok, prompts, tokens, null_weight, scorer, images, batch_size, spec, logprobs=None
) -> torch.Tensor:
    """(M,) scores of one reranker part."""
    if null_weight is not None:
        return contrastive_scores(model, text_tok, prompts, tokens, batch_size, null_weight, known=logprobs)
    if scorer is None:
        return torch.zeros(len(tokens))
    scores = torch.tensor([float(v) for v in scorer([to_pil(im) for im in images], list(prompts))], dtype=torch.float32)
    if scores.shape != (len(tokens),):
        raise VimtoolError(
            f"--rerank {spec} returned {tuple(scores.shape)} scores for {len(tokens)} images; it must return one per image"
        )
    return scores


def rank_order(scores: torch.Tensor) -> torch.Tensor:
    """(P, N) scores -> (P, N) generation indices, best first (ties keep generation order)."""
    return torch.argsort(-scores.float(), dim=1, stable=True)


# ------------------------------------------------------------------------------------------ text tokenizer
def load_text_tokenizer(folder: Path, model: Parti):
    """The prompt tokenizer a Parti checkpoint holds (tokenizer.json), checked against the model's vocabulary."""
    from vimtool.data.text import FILE_NAME, TextTokenizer

    tok = TextTokenizer.load(folder / FILE_NAME, max_length=model.config.max_text_len)
    if tok.vocab_size != model.config.text_vocab_size:
        raise VimtoolError(
            f"{folder / FILE_NAME} has {tok.vocab_size} entries but the model reads {model.config.text_vocab_size}; the checkpoint is inconsistent (re-save it)"
        )
    return tok


__all__ = [
    "DEFAULT_GUIDANCE",
    "contrastive_scores",
    "contrastive_weight",
    "generate",
    "generate_batch",
    "generate_rows",
    "load_scorer",
    "load_text_tokenizer",
    "needs_images",
    "parse_rerank",
    "part_weight",
    "rank_order",
    "read_prompts",
    "rerank_parts",
    "rerank_scores",
    "shapes_scores",
]
