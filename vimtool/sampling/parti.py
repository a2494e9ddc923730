"""The Parti sampler: prompts -> N images each, with classifier-free guidance, a KV cache and reranking.

    generate(model, text_tok, prompts, num_samples, params, seed, ...) -> token ids (P, N, T)
    sample_parti(cfg: SampleConfig) -> written image paths   (`vimtool sample --prompt ...` on a Parti checkpoint)

Decoding (PAPERS.md section 3): the prompt is encoded once; its cross-attention K/V are computed on the first
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
is the plain conditional likelihood. The DEFAULT is `likelihood`, measured rather than assumed: on the quickstart
(shapes, 32 prompts x 8 samples per group, two seeds, guidance 1 / 1.5 / 2) PMI picked no better than the first
sample -- it favours images unlikely under the null as much as likely under the prompt, i.e. odd ones -- while
the likelihood raised the checker's pass rate over the first sample in every setting (see recipes/quickstart.sh;
a = 0.5 lies in between). Other scorers: `none` (generation order), `shapes`
(the built-in checker: the fraction of the caption's attributes an image satisfies, 1.0 = all), or
`module:function` taking (images: list[PIL.Image], prompts: list[str]) and returning one float per image,
higher = better.

Reproducibility: sample j of prompt p draws its random numbers from (seed, p * N + j) alone (`row_uniforms`),
so results do not depend on the batch size or on cached vs uncached decoding (up to float rounding).

Outputs in `cfg.out`: images/pPPP_sSS.png (SS = rank after reranking, 00 = best), grid.png (one row per prompt,
captioned), tokens.npy (P * N, T) in that order, sampling.json (settings, prompts, every sample's score, rank
and generation index, optional checker results and pass rates). Returns the image paths (stdout of the CLI).
"""

from __future__ import annotations

import csv
import importlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vimtool.atomic import save_png, write_json
from vimtool.config import to_dict
from vimtool.errors import VimtoolError
from vimtool.models.parti import Parti
from vimtool.sampling import SampleConfig, resolve_device
from vimtool.sampling.decode import decode_tokens, load_paired_tokenizer
from vimtool.sampling.logits import SamplingParams, autoregressive_sample, row_uniforms
from vimtool.sampling.packed_linear import decoding_weights

log = logging.getLogger(__name__)

DEFAULT_GUIDANCE = 1.5  # measured on the quickstart (recipes/quickstart.sh: 1.5 beat 1.0 and 3.0); the paper: 1.2
RERANKERS = ("likelihood", "contrastive", "contrastive:A", "pmi", "none", "shapes")  # or "module:function"
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
) -> torch.Tensor:
    """One batch: prompt ids/mask (B, L) and uniforms (B, T) -> image token ids (B, T).

    `guided` (default: params.guided, i.e. scale != 1) runs the null rows alongside the conditional ones.
    `decode_dtype` "fp32" (default) or "bf16": the weights of the decode GEMMs (sampling/packed_linear.py).
    """
    b, T = uniforms.shape
    device = model.null.device
    guided = params.guided if guided is None else guided
    with decoding_weights(model, b * (2 if guided else 1), decode_dtype):
        return _decode(model, text_ids.to(device), text_mask.to(device), uniforms, params, use_cache, guided)


def _decode(
    model: Parti,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    uniforms: torch.Tensor,
    params: SamplingParams,
    use_cache: bool,
    guided: bool,
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

    return autoregressive_sample(step, b, T, params, guided=guided, uniforms=uniforms)


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
    return _generate_rows(model, text_tok, prompts, num_samples, params, seed, 0, batch_size, use_cache, decode_dtype)


@torch.no_grad()
def _generate_rows(
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
) -> torch.Tensor:
    """Like `generate`, for prompts whose first sample is row `first_row` of the run: -> (P, N, T)."""
    T = model.num_image_tokens
    P, N = len(prompts), num_samples
    ids, mask = text_tok.encode_batch(list(prompts))  # (P, L)
    row_prompt = torch.arange(P).repeat_interleave(N)  # (P*N,)
    out = []
    with decoding_weights(model, min(batch_size, P * N) * (2 if params.guided else 1), decode_dtype):  # pack once
        for start in range(0, P * N, batch_size):
            sel = row_prompt[start : start + batch_size]
            u = row_uniforms(seed, first_row + start, len(sel), T)  # (b, T): row r uses (seed, r)
            out.append(
                generate_batch(model, ids[sel], mask[sel], params, u, use_cache, decode_dtype=decode_dtype).cpu()
            )
    return torch.cat(out).view(P, N, T)


# ----------------------------------------------------------------------------------------------- reranking
@torch.no_grad()
def contrastive_scores(
    model: Parti, text_tok, prompts: Sequence[str], tokens: torch.Tensor, batch_size: int = 32, null_weight: float = 1.0
) -> torch.Tensor:
    """log p(image | prompt) - null_weight * log p(image | null) per row: prompts[i] with tokens (M, T) row i -> (M,)."""
    device = model.null.device
    out = []
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
    """`shapes` or `module:function` -> a callable (images, prompts) -> scores."""
    if spec == "shapes":
        return shapes_scores
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


def rank_order(scores: torch.Tensor) -> torch.Tensor:
    """(P, N) scores -> (P, N) generation indices, best first (ties keep generation order)."""
    return torch.argsort(-scores.float(), dim=1, stable=True)


# ----------------------------------------------------------------------------------------------- the command
def load_text_tokenizer(folder: Path, model: Parti):
    from vimtool.data.text import FILE_NAME, TextTokenizer

    tok = TextTokenizer.load(folder / FILE_NAME, max_length=model.config.max_text_len)
    if tok.vocab_size != model.config.text_vocab_size:
        raise VimtoolError(
            f"{folder / FILE_NAME} has {tok.vocab_size} entries but the model reads {model.config.text_vocab_size}; the checkpoint is inconsistent (re-save it)"
        )
    return tok


def sample_parti(cfg: SampleConfig) -> list[Path]:
    """`vimtool sample` for a Parti checkpoint (see the module docstring); returns the image paths."""
    from vimtool.checkpoint import load_model, read_config, resolve
    from vimtool.data.transforms import make_grid, to_pil

    cfg.check()
    if cfg.classes or cfg.all_classes or cfg.classifier:
        raise VimtoolError(
            "--class / --all-classes / --classifier are for class-conditional VIM; a Parti checkpoint takes --prompt or --prompts-file"
        )
    rerank = getattr(cfg, "rerank", "likelihood") or "none"
    checker = getattr(cfg, "checker", None)
    scale = cfg.guidance_scale if cfg.guidance_scale is not None else DEFAULT_GUIDANCE
    params = SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p, scale)
    prompts = read_prompts(cfg.prompts, cfg.prompts_file)
    device = resolve_device(cfg.device)
    folder = resolve(cfg.checkpoint)
    meta = read_config(folder)
    model = load_model(folder)
    if not isinstance(model, Parti):
        raise VimtoolError(f"{cfg.checkpoint} is not a Parti checkpoint")
    model = model.to(device).eval()
    text_tok = load_text_tokenizer(folder, model)
    image_tok, identity = load_paired_tokenizer(meta, cfg.tokenizer, cfg.checkpoint, device)
    null_weight = contrastive_weight(rerank)
    scorer = None if null_weight is not None or rerank == "none" else load_scorer(rerank)
    check_fn = load_scorer(checker) if checker else None

    P, N, T = len(prompts), cfg.num_samples, model.num_image_tokens
    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    # Prompts go in chunks of about one decoding batch, so memory stays bounded for PartiPrompts-sized runs:
    # generate -> decode -> score -> rerank -> write, then the chunk's images are dropped (the grid keeps its few).
    per_chunk = max(1, cfg.batch_size // N)
    paths: list[Path] = []
    records: list[dict[str, Any]] = []
    ranked_tokens: list[torch.Tensor] = []
    cells, captions = [], []
    all_scores, all_checks, all_orders = [], [], []
    gen_s = 0.0
    from tqdm.auto import tqdm

    bar = tqdm(total=P * N, desc="sample", unit="img", file=sys.stderr, dynamic_ncols=True)
    for c0 in range(0, P, per_chunk):
        chunk = prompts[c0 : c0 + per_chunk]
        Pc = len(chunk)
        t0 = time.perf_counter()
        # sample j of prompt p keeps its random numbers whatever the chunking: rows (seed, p * N + j)
        tokens = _generate_rows(
            model, text_tok, chunk, N, params, cfg.seed, c0 * N, cfg.batch_size, cfg.use_cache, cfg.decode_dtype
        )  # (Pc, N, T)
        gen_s += time.perf_counter() - t0
        flat = tokens.view(Pc * N, T)
        row_prompts = [q for q in chunk for _ in range(N)]
        pil = [to_pil(im) for im in decode_tokens(image_tok, flat)]
        if null_weight is not None:
            scores = contrastive_scores(model, text_tok, row_prompts, flat, cfg.batch_size, null_weight)
        elif rerank == "none":
            scores = torch.zeros(Pc * N)
        else:
            scores = torch.tensor([float(v) for v in scorer(pil, row_prompts)], dtype=torch.float32)
            if scores.shape != (Pc * N,):
                raise VimtoolError(
                    f"--rerank {rerank} returned {tuple(scores.shape)} scores for {Pc * N} images; it must return one per image"
                )
        order = rank_order(scores.view(Pc, N))  # (Pc, N) generation index of rank k
        checks = (
            torch.tensor([float(v) for v in check_fn(pil, row_prompts)]).view(Pc, N) if check_fn is not None else None
        )
        for i in range(Pc):
            p = c0 + i
            for k in range(N):
                j = int(order[i, k])
                r = i * N + j
                path = out / "images" / f"p{p:03d}_s{k:02d}.png"
                save_png(pil[r], path)
                paths.append(path)
                ranked_tokens.append(flat[r])
                rec = {
                    "path": str(path),
                    "prompt_index": p,
                    "rank": k,
                    "generation_index": j,
                    "score": float(scores[r]),
                }
                if checks is not None:
                    rec["check"] = float(checks[i, j])
                records.append(rec)
                if p < MAX_GRID_PROMPTS:
                    cells.append(pil[r])
                    captions.append(chunk[i] if k == 0 else f"#{k} {float(scores[r]):.3g}")
        all_scores.append(scores.view(Pc, N))
        all_orders.append(order)
        if checks is not None:
            all_checks.append(checks)
        bar.update(Pc * N)
    bar.close()
    order = torch.cat(all_orders)  # (P, N)
    save_png(make_grid(cells, ncol=N, captions=captions), out / "grid.png")
    token_file = out / "tokens.npy"
    with open(out / ".tmp-tokens.npy", "wb") as f:
        np.save(f, torch.stack(ranked_tokens).numpy().astype(np.uint16))  # (P * N, T), best first per prompt
    (out / ".tmp-tokens.npy").replace(token_file)
    checks = torch.cat(all_checks) if all_checks else None

    record: dict[str, Any] = {
        "settings": {**to_dict(cfg), "guidance_scale": scale, "rerank": rerank, "rerank_null_weight": null_weight},
        "checkpoint": str(folder), "model": meta["config"], "tokenizer": identity, "prompts": prompts,
        "samples_per_prompt": N, "seconds_generating": gen_s, "tokens_per_second": P * N * T / max(gen_s, 1e-9),
        "images": records, "grid": str(out / "grid.png"), "tokens": str(token_file),
    }  # fmt: skip
    if checks is not None:
        passed = checks >= 1.0  # (P, N)
        first = passed[:, 0].float().mean().item()
        best = passed.gather(1, order[:, :1]).float().mean().item()
        record["adherence"] = {
            "checker": checker,
            "all_samples": passed.float().mean().item(),
            "first_sample": first,
            "reranked_best": best,
        }
        log.info(
            "%s checker: %.1f%% of all samples pass; first sample %.1f%%, best after reranking (%s) %.1f%%",
            checker,
            100 * passed.float().mean().item(),
            100 * first,
            rerank,
            100 * best,
        )
    write_json(out / "sampling.json", record)
    log.info(
        "%d prompts x %d samples in %s (%.1f tokens/s, guidance %.2f, rerank %s); grid %s, settings %s",
        P,
        N,
        out / "images",
        record["tokens_per_second"],
        scale,
        rerank,
        out / "grid.png",
        out / "sampling.json",
    )
    return paths


__all__ = [
    "DEFAULT_GUIDANCE",
    "contrastive_scores",
    "contrastive_weight",
    "generate",
    "generate_batch",
    "load_scorer",
    "rank_order",
    "read_prompts",
    "sample_parti",
    "shapes_scores",
]
