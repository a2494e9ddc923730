"""The VIM sampler: batched autoregressive generation with a KV cache, guidance, and rejection sampling.

    generate(model, labels, params, seed, ...) -> token ids (N, T)
    sample_vim(cfg: SampleConfig) -> written image paths      (the `vimtool sample` command for VIM checkpoints)

Decoding (PAPERS.md section 2): the start token (BOS, or the class token) is prefilled into the KV cache, then
one token per step; each step costs one position's projections plus attention over the cached prefix.
`use_cache=False` recomputes the whole prefix every step (the reference the tests and bench_sample.py compare
against). Classifier-free guidance puts the conditional rows and the null-class rows in ONE model batch
(2B rows) and mixes their logits u + s (c - u) (sampling/logits.py).

Reproducibility: sample i of a run draws its random numbers from (seed, i) alone (`row_uniforms`), so a seed
gives the same images whatever the batch size, the device, or cached vs uncached decoding (up to float
rounding of the logits).

Rejection sampling (VIM section 4, "acceptance rate 0.5"): for each requested class, ceil(n / acceptance)
candidates are generated, scored by a classifier (a probe head from `vimtool probe`: p(class | sample)), and the
n best kept. Unconditional models keep the candidates the classifier is most confident about. A classifier with
acceptance 1 only scores: sampling.json then reports `classifier_agreement`, the fraction of samples whose
predicted class is the one asked for (class consistency, the measure of issue 5's "Done when"). `judge` is a
second classifier that only scores the kept samples (`judge_agreement`), so rejection by one classifier can be
measured by an independent one (e.g. reject with the LM's probe head, judge with head_pixels_mlp).

Outputs in `cfg.out`: images/NNNNN[_cK].png, grid.png (labelled), tokens.npy + labels.npy (or a token shard
with `token_format: parquet`), sampling.json (every setting, the checkpoint, the tokenizer identity, per-image
class and score, timings). The image paths are returned (the CLI prints them: `... | vimtool eval-fid ref -`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vimtool.atomic import save_png, write_json
from vimtool.config import to_dict
from vimtool.errors import VimtoolError
from vimtool.models.vim import VIM
from vimtool.sampling import SampleConfig, resolve_device
from vimtool.sampling.decode import decode_tokens, load_paired_tokenizer
from vimtool.sampling.logits import SamplingParams, autoregressive_sample, row_uniforms
from vimtool.sampling.packed_linear import decoding_weights

log = logging.getLogger(__name__)


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
) -> torch.Tensor:
    """`num_samples` sequences -> (N, T) int64 on the CPU. labels: (N,) class ids or None (unconditional).

    Sample i uses the random numbers of (seed, first_index + i).
    """
    model.eval()
    T = model.num_tokens
    if labels is not None and labels.shape[0] != num_samples:
        raise ValueError(f"{labels.shape[0]} labels for {num_samples} samples")
    out = []
    starts = range(0, num_samples, batch_size)
    rows = min(batch_size, num_samples) * (2 if params.guided else 1)
    with decoding_weights(model, rows, decode_dtype):  # pack the weights once for all batches
        for start in tqdm(starts, desc="sample", file=sys.stderr, disable=not progress):
            n = min(batch_size, num_samples - start)
            u = row_uniforms(seed, first_index + start, n, T)  # (n, T)
            lab = labels[start : start + n] if labels is not None else None
            out.append(generate_batch(model, lab, params, u, use_cache, decode_dtype=decode_dtype).cpu())
    return torch.cat(out)  # (N, T)


# ----------------------------------------------------------------------------------------------- command
def _requested_labels(cfg: SampleConfig, model: VIM) -> list[int | None]:
    """One entry per requested class (None = unconditional)."""
    c = model.config
    if cfg.prompts or cfg.prompts_file:
        raise VimtoolError("--prompt/--prompts-file are for text-to-image (Parti) checkpoints; VIM takes --class")
    if not c.conditional:
        if cfg.classes or cfg.all_classes:
            raise VimtoolError(
                f"{cfg.checkpoint} is an unconditional VIM (trained without labels); drop --class/--all-classes"
            )
        return [None]
    if cfg.all_classes:
        return list(range(c.num_classes))
    if not cfg.classes:
        raise VimtoolError(
            f"{cfg.checkpoint} is class-conditional ({c.num_classes} classes): give --class ID (repeatable) or --all-classes"
        )
    bad = [k for k in cfg.classes if not 0 <= k < c.num_classes]
    if bad:
        raise VimtoolError(f"class id(s) {bad} out of range: this checkpoint knows classes 0..{c.num_classes - 1}")
    return list(dict.fromkeys(cfg.classes))


def sample_vim(cfg: SampleConfig) -> list[Path]:
    """`vimtool sample` for a VIM checkpoint (see the module docstring); returns the image paths."""
    from vimtool.checkpoint import load_model, read_config, resolve
    from vimtool.data.transforms import make_grid, to_pil

    cfg.check()
    params = cfg.params()
    device = resolve_device(cfg.device)
    folder = resolve(cfg.checkpoint)
    meta = read_config(folder)
    model = load_model(folder)
    if not isinstance(model, VIM):
        raise VimtoolError(f"{cfg.checkpoint} is not a VIM checkpoint")
    model = model.to(device).eval()
    if params.guided and model.config.label_dropout == 0:
        log.warning(
            "guidance scale %s on a model trained without label dropout: its null class is untrained",
            params.guidance_scale,
        )
    tokenizer, identity = load_paired_tokenizer(meta, cfg.tokenizer, cfg.checkpoint, device)
    head = None
    if cfg.classifier:
        from vimtool.probe import load_probe_head

        head = load_probe_head(cfg.classifier)
        head.check_compatible(folder, identity)

    requested = _requested_labels(cfg, model)
    per_class = cfg.num_samples
    candidates = math.ceil(per_class / cfg.acceptance) if head is not None else per_class
    t0 = time.perf_counter()
    all_tokens, all_labels, all_scores, all_preds = [], [], [], []
    for k, cls in enumerate(requested):
        labels = None if cls is None else torch.full((candidates,), cls, dtype=torch.long)
        # sample indices are disjoint per class, so adding a class never changes another class's samples
        toks = generate(
            model,
            labels,
            candidates,
            params,
            cfg.seed,
            cfg.batch_size,
            cfg.use_cache,
            first_index=k * candidates,
            progress=True,
            decode_dtype=cfg.decode_dtype,
        )
        scores = torch.full((len(toks),), float("nan"))
        preds = torch.full((len(toks),), -1, dtype=torch.long)
        if head is not None:
            probs = head.probabilities(tokens=toks, lm=model, tokenizer=tokenizer)  # (n, C)
            scores = probs[:, cls] if cls is not None else probs.max(dim=1).values
            preds = probs.argmax(dim=1)
            keep = torch.argsort(scores, descending=True, stable=True)[:per_class]
            keep = keep.sort().values  # keep generation order among the accepted
            toks, scores, preds = toks[keep], scores[keep], preds[keep]
        all_tokens.append(toks)
        all_scores.append(scores)
        all_preds.append(preds)
        all_labels += [-1 if cls is None else cls] * len(toks)
    gen_s = time.perf_counter() - t0
    tokens = torch.cat(all_tokens)  # (N, T)
    scores = torch.cat(all_scores)
    preds = torch.cat(all_preds).tolist()
    asked = [i for i, lab in enumerate(all_labels) if lab >= 0]
    # class consistency: how often the classifier names the class that was asked for (None without one)
    agreement = sum(preds[i] == all_labels[i] for i in asked) / len(asked) if head is not None and asked else None
    judge_agreement, judged = None, [None] * len(tokens)
    if cfg.judge:
        from vimtool.probe import load_probe_head

        judge = load_probe_head(cfg.judge)
        judge.check_compatible(folder, identity)
        judged = judge.probabilities(tokens=tokens, lm=model, tokenizer=tokenizer).argmax(dim=1).tolist()
        judge_agreement = sum(judged[i] == all_labels[i] for i in asked) / len(asked) if asked else None
    images = decode_tokens(tokenizer, tokens)  # (N, 3, H, W)

    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    names = cfg.class_names
    for i, (img, lab) in enumerate(zip(images, all_labels)):
        p = out / "images" / (f"{i:05d}.png" if lab < 0 else f"{i:05d}_c{lab}.png")
        save_png(to_pil(img), p)
        paths.append(p)
    captions = [None if lab < 0 else (names[lab] if lab < len(names) else f"class {lab}") for lab in all_labels]
    shown = min(len(paths), 256)
    grid = make_grid(
        images[:shown], ncol=cfg.grid_cols, captions=None if all(c is None for c in captions) else captions[:shown]
    )
    save_png(grid, out / "grid.png")
    token_files = _write_tokens(out, tokens, all_labels, identity, cfg.token_format)

    record = {
        "settings": to_dict(cfg),
        "checkpoint": str(folder),
        "model": meta["config"],
        "tokenizer": identity,
        "generated": len(requested) * candidates,
        "kept": len(paths),
        "seconds_generating": gen_s,
        "tokens_per_second": len(requested) * candidates * model.num_tokens / max(gen_s, 1e-9),
        "classifier": cfg.classifier,
        "classifier_agreement": agreement,
        "judge": cfg.judge,
        "judge_agreement": judge_agreement,
        "images": [
            {
                "path": str(p),
                "class": (lab if lab >= 0 else None),
                "score": (None if math.isnan(s) else float(s)),
                "predicted": (pr if pr >= 0 else None),
                "judged": jd,
            }
            for p, lab, s, pr, jd in zip(paths, all_labels, scores.tolist(), preds, judged)
        ],
        "grid": str(out / "grid.png"),
        "tokens": [str(f) for f in token_files],
    }
    write_json(out / "sampling.json", record)
    log.info(
        "%d images in %s (%.1f tokens/s%s%s); grid %s, tokens %s, settings %s",
        len(paths), out / "images", record["tokens_per_second"],
        f"; classifier {cfg.classifier}: kept {cfg.acceptance:.0%}, names the asked class for {agreement:.1%}"
        if agreement is not None else "",
        f"; judge {cfg.judge} names the asked class for {judge_agreement:.1%}" if judge_agreement is not None else "",
        out / "grid.png", ", ".join(map(str, token_files)), out / "sampling.json",
    )  # fmt: skip
    return paths


def _write_tokens(out: Path, tokens: torch.Tensor, labels: list[int], identity: dict, fmt: str) -> list[Path]:
    if fmt == "parquet":
        from vimtool.data.shards import ShardWriter, TokenizerIdentity

        with ShardWriter(
            out, TokenizerIdentity.from_dict(identity), rows_per_shard=max(1, len(tokens)), prefix="samples"
        ) as w:
            w.add_batch(
                tokens.numpy(),
                [lab if lab >= 0 else None for lab in labels],
                None,
                [f"sample-{i}" for i in range(len(tokens))],
            )
        return list(w.written)
    files = []
    for name, arr in (
        ("tokens.npy", tokens.numpy().astype(np.uint16)),
        ("labels.npy", np.asarray(labels, dtype=np.int64)),
    ):
        tmp = out / f".tmp-{name}"
        with open(tmp, "wb") as f:
            np.save(f, arr)
        tmp.replace(out / name)
        files.append(out / name)
    return files


__all__ = ["decode_tokens", "generate", "generate_batch", "load_paired_tokenizer", "sample_vim"]
