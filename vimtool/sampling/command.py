"""The `sample` command: settings (SampleConfig) -> the stage-2 pipeline -> images and a record of the run.

    sample(cfg) -> written image paths (the CLI prints them: `vimtool sample ... | vimtool eval-fid ref -`)

Both families go through `vimtool.pipeline.Stage2Pipeline` (load, generate, decode) and `SampleOutputs` (files);
this module adds what the command does with each family's settings.

VIM (`sample_vim`): class ids (--class / --all-classes, sampling/vim.py `requested_labels`) or unconditional;
`per_class` N (--per-class) draws N of each class asked (all by default), numbered by class id so a class's images
depend on (seed, class, j) alone (sampling/vim.py `sample_indices`: asking [3] or [0..9] gives class 3 the same
images). Under `accelerate launch` each process generates a contiguous slice of the run's rows (each row's class
and seed-stream index are explicit, `Stage2Pipeline.generate_rows`), the main process gathers the tokens and does
the rest, so the files are those of a 1-process run whatever the process count or batch size. `npz` also writes
every image in ADM's layout (`write_adm_npz`), which `vimtool eval-fid` reads.
Rejection sampling with `classifier` (a probe head) and `acceptance` < 1 keeps the best of ceil(n / acceptance)
candidates per class (sampling/vim.py `keep_best`). A classifier with acceptance 1 only scores: sampling.json
then reports `classifier_agreement`, the fraction of samples whose predicted class is the one asked for (class
consistency measure). `judge` is a second classifier that only scores the kept
samples (`judge_agreement`), so rejection by one classifier can be measured by an independent one (e.g. reject
with the LM's probe head, judge with head_pixels_mlp). Outputs: images/NNNNN[_cK].png, grid.png (labelled),
tokens.npy + labels.npy (or a token shard with `token_format: parquet`), sampling.json (every setting, the
checkpoint, the tokenizer identity, per-image class, seed-stream index and score, timings), optionally the .npz.

Parti (`sample_parti`): prompts (--prompt / --prompts-file), reranked (sampling/parti.py); prompts are generated,
decoded, scored, written and dropped a piece at a time, so memory stays bounded. An optional `checker` scores
every sample for evaluation. Outputs: images/pPPP_sSS.png (SS = rank after reranking, 00 = best), grid.png (one
row per prompt, captioned), tokens.npy (P * N, T) in that order, sampling.json (settings, prompts, every
sample's score, rank and generation index, optional checker results and pass rates).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vimtool.atomic import atomic_path
from vimtool.checkpoint import read_config
from vimtool.config import to_dict
from vimtool.data.transforms import to_pil
from vimtool.errors import VimtoolError
from vimtool.pipeline import SampleOutputs, Stage2Pipeline
from vimtool.sampling import SampleConfig, parti
from vimtool.sampling.classifier import load_probe_head
from vimtool.sampling.vim import keep_best, requested_labels, sample_indices

log = logging.getLogger(__name__)

MAX_GRID_VIM_IMAGES = 256  # the VIM grid shows the first images only
DECODE_PIECE = 256  # VIM tokens decoded to pixels (and written) at a time


def sample(cfg: SampleConfig) -> list[Path]:
    """`vimtool sample`: load the checkpoint's pipeline and run its family's sampler; returns the image paths."""
    cfg.check()
    prompts: list[str] = []
    if read_config(cfg.checkpoint)["model_type"] == "parti":  # settings errors before the weights load
        if cfg.classes or cfg.all_classes or cfg.classifier or cfg.per_class or cfg.npz:
            raise VimtoolError(
                "--class / --all-classes / --per-class / --classifier / --npz are for VIM; "
                "a Parti checkpoint takes --prompt or --prompts-file"
            )
        prompts = parti.read_prompts(cfg.prompts, cfg.prompts_file)  # once: a prompts file "-" is stdin
        pipe = Stage2Pipeline.load(cfg.checkpoint, tokenizer=cfg.tokenizer, device=cfg.device)
        return sample_parti(cfg.for_family(pipe.family), pipe, prompts)  # the tuned temperature when none was given
    processes = _processes(cfg)
    # under `accelerate launch` each process takes its own GPU (the launcher's), unless --device names one
    device = processes.device if processes.num_processes > 1 and cfg.device == "auto" else cfg.device
    pipe = Stage2Pipeline.load(cfg.checkpoint, tokenizer=cfg.tokenizer, device=device)
    return sample_vim(cfg.for_family(pipe.family), pipe, processes)


def _settings(cfg: SampleConfig) -> dict[str, Any]:
    return dict(
        seed=cfg.seed, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        guidance_scale=cfg.guidance_scale, batch_size=cfg.batch_size, use_cache=cfg.use_cache,
        decode_dtype=cfg.decode_dtype, progress=True,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------- VIM
def sample_vim(cfg: SampleConfig, pipe: Stage2Pipeline, processes=None) -> list[Path]:
    """`vimtool sample` for a VIM checkpoint (see the module docstring); returns the image paths (none on the
    processes other than the main one of an `accelerate launch` run, which only generate)."""
    requested = requested_labels(cfg, pipe.model)
    head = judge = None
    if cfg.classifier:
        head = load_probe_head(cfg.classifier)
        head.check_compatible(pipe.folder, pipe.identity)
    if cfg.judge:
        judge = load_probe_head(cfg.judge)
        judge.check_compatible(pipe.folder, pipe.identity)
    per_class = cfg.per_class or cfg.num_samples
    candidates = math.ceil(per_class / cfg.acceptance) if head is not None else per_class
    # every candidate's class and seed-stream row, class by class; this process draws its slice of them
    indices = sample_indices(requested, candidates, by_class=cfg.per_class > 0)
    row_labels = [cls for cls in requested for _ in range(candidates)]
    rank, world = (processes.process_index, processes.num_processes) if processes is not None else (0, 1)
    lo, hi = len(row_labels) * rank // world, len(row_labels) * (rank + 1) // world
    gen = pipe.generate_rows(row_labels[lo:hi], indices[lo:hi], **_settings(cfg))
    tokens, gen_s = gen.tokens, gen.seconds
    if world > 1:
        # deferred on purpose: accelerate takes ~1 s to import (see _processes)
        from accelerate.utils import gather_object

        parts = gather_object([(gen.tokens, gen.seconds)])  # rank order = row order: the 1-process run's rows
        if not processes.is_main_process:
            return []
        tokens, gen_s = torch.cat([t for t, _ in parts]), max(sec for _, sec in parts)

    kept_tokens, labels, kept_indices, scores, preds = [], [], [], [], []
    for k, cls in enumerate(requested):  # rejection needs all of a class's candidates together
        rows = slice(k * candidates, (k + 1) * candidates)
        toks, idx = tokens[rows], indices[rows]
        score = torch.full((len(toks),), float("nan"))
        pred = torch.full((len(toks),), -1, dtype=torch.long)
        if head is not None:
            probs = head.probabilities(tokens=toks, lm=pipe.model, tokenizer=pipe.tokenizer)  # (n, C)
            kept, score, pred = keep_best(probs, cls, per_class)
            toks, idx = toks[kept], idx[kept]
        kept_tokens.append(toks)
        kept_indices += idx.tolist()
        scores.append(score)
        preds.append(pred)
        labels += [cls] * len(toks)
    tokens = torch.cat(kept_tokens)  # (N, T)
    scores, preds = torch.cat(scores), torch.cat(preds).tolist()
    asked = [i for i, lab in enumerate(labels) if lab is not None]
    # class consistency: how often the classifier names the class that was asked for (None without one)
    agreement = sum(preds[i] == labels[i] for i in asked) / len(asked) if head is not None and asked else None
    judge_agreement, judged = None, [None] * len(tokens)
    if judge is not None:
        judged = judge.probabilities(tokens=tokens, lm=pipe.model, tokenizer=pipe.tokenizer).argmax(dim=1).tolist()
        judge_agreement = sum(judged[i] == labels[i] for i in asked) / len(asked) if asked else None

    out = SampleOutputs(cfg.out)
    names = cfg.class_names
    captions = [None if lab is None else (names[lab] if lab < len(names) else f"class {lab}") for lab in labels]
    paths, cells, pixels = [], [], []
    for start in range(0, len(tokens), DECODE_PIECE):  # decoded a piece at a time: float images of 50k would not fit
        for i, img in enumerate(pipe.decode(tokens[start : start + DECODE_PIECE]), start):
            pil, lab = to_pil(img), labels[i]
            paths.append(out.image(pil, f"{i:05d}.png" if lab is None else f"{i:05d}_c{lab}.png"))
            if len(cells) < MAX_GRID_VIM_IMAGES:
                cells.append(pil)
            if cfg.npz:
                pixels.append(np.asarray(pil))  # (H, W, 3) uint8: the PNG's pixels
    shown = len(cells)
    grid = out.grid(cells, cfg.grid_cols, None if all(c is None for c in captions) else captions[:shown])
    token_files = out.tokens(tokens, labels, pipe.identity, cfg.token_format)
    npz = write_adm_npz(cfg.npz, np.stack(pixels), labels) if cfg.npz else None
    generated = len(requested) * candidates
    record = {
        "settings": to_dict(cfg), "checkpoint": str(pipe.folder), "model": pipe.config["config"],
        "tokenizer": pipe.identity, "generated": generated, "kept": len(paths), "processes": world,
        "numbering": "class id" if cfg.per_class else "request order", "seconds_generating": gen_s,
        "tokens_per_second": generated * pipe.num_tokens / max(gen_s, 1e-9),
        "classifier": cfg.classifier, "classifier_agreement": agreement,
        "judge": cfg.judge, "judge_agreement": judge_agreement,
        "images": [
            {"path": str(p), "class": lab, "sample_index": si, "score": None if math.isnan(s) else float(s),
             "predicted": pr if pr >= 0 else None, "judged": jd}
            for p, lab, si, s, pr, jd in zip(paths, labels, kept_indices, scores.tolist(), preds, judged)
        ],
        "grid": str(grid), "tokens": [str(f) for f in token_files], "npz": None if npz is None else str(npz),
    }  # fmt: skip
    out.record(record)
    log.info(
        "%d images in %s (%.1f tokens/s%s%s); grid %s, tokens %s%s, settings %s",
        len(paths), out.folder / "images", record["tokens_per_second"],
        f"; classifier {cfg.classifier}: kept {cfg.acceptance:.0%}, names the asked class for {agreement:.1%}"
        if agreement is not None else "",
        f"; judge {cfg.judge} names the asked class for {judge_agreement:.1%}" if judge_agreement is not None else "",
        grid, ", ".join(map(str, token_files)), f", npz {npz}" if npz else "", out.folder / "sampling.json",
    )  # fmt: skip
    return paths


def write_adm_npz(path: str | Path, images: np.ndarray, labels: list[int | None]) -> Path:
    """An image batch in ADM's sample layout (guided-diffusion `image_sample.py`): arr_0 uint8 (N, H, W, 3) and,
    when every image has a class, arr_1 int64 (N,) labels; `vimtool eval-fid` reads it (metrics/fid.py `load_npz`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"arr_0": images}
    if labels and all(lab is not None for lab in labels):
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez would append .npz to a name
        np.savez(f, **arrays)
    return path


def _processes(cfg: SampleConfig):
    """This run's processes (accelerate's PartialState): one, or the ones `accelerate launch` started, which
    each generate a slice of the samples (cpu=True without a GPU: the processes then form a gloo group)."""
    # deferred on purpose: accelerate takes ~1 s to import, and a Parti run or `--help` needs none of it
    from accelerate import PartialState

    return PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())


# ----------------------------------------------------------------------------------------------------- Parti
def grid_score_name(rerank: str) -> str:
    """What the number under a reranked Parti sample in the grid is: the built-in reranker's name, "score" for a
    module:function scorer, "z-sum" for combined rerankers (A+B), "" (no number) for rerank none. A bare number
    reads as anything."""
    if len(parti.rerank_parts(rerank)) > 1:
        return "z-sum"
    head = parti.part_weight(rerank)[1].split(":", 1)[0]
    return "" if rerank == "none" else head if head in {r.split(":")[0] for r in parti.RERANKERS} else "score"


def sample_parti(cfg: SampleConfig, pipe: Stage2Pipeline, prompts: list[str]) -> list[Path]:
    """`vimtool sample` for a Parti checkpoint and its prompts (see the module docstring); returns the image paths."""
    rerank = cfg.rerank or "none"
    score_name = grid_score_name(rerank)
    check_fn = parti.load_scorer(cfg.checker) if cfg.checker else None
    scale = pipe.sampling_params(guidance_scale=cfg.guidance_scale).guidance_scale
    N = cfg.num_samples
    out = SampleOutputs(cfg.out)
    paths: list[Path] = []
    records: list[dict[str, Any]] = []
    ranked_tokens, cells, captions, checks, gen_s = [], [], [], [], 0.0
    first_generated = torch.zeros(len(prompts), dtype=torch.long)  # rank of each prompt's generation-order first
    for gen in pipe.generate_chunks(None, prompts, N, rerank=rerank, images=True, **_settings(cfg)):
        gen_s += gen.seconds
        pil = [to_pil(im) for im in gen.images]
        row_prompts = [prompts[p] for p in gen.group.tolist()]
        # float32 like the scores (sampling.json has always recorded them so)
        check = torch.tensor([float(v) for v in check_fn(pil, row_prompts)]).tolist() if check_fn else None
        for r, (p, j) in enumerate(zip(gen.group.tolist(), gen.generation_index.tolist())):
            k = r % N  # rank within its prompt: a piece holds whole prompts, best first
            score = float(gen.scores[r])
            path = out.image(pil[r], f"p{p:03d}_s{k:02d}.png")
            paths.append(path)
            rec = {"path": str(path), "prompt_index": p, "rank": k, "generation_index": j, "score": score}
            if check is not None:
                rec["check"] = check[r]
                checks.append(check[r])
            if j == 0:
                first_generated[p] = k
            records.append(rec)
            if p < parti.MAX_GRID_PROMPTS:
                cells.append(pil[r])
                captions.append(
                    prompts[p] if k == 0 else f"#{k + 1} {score_name} {score:.3g}" if score_name else f"#{k + 1}"
                )
        ranked_tokens.append(gen.tokens)
    grid = out.grid(cells, N, captions)
    (token_file,) = out.tokens(torch.cat(ranked_tokens))  # (P * N, T), best first per prompt
    P, T = len(prompts), pipe.num_tokens
    # split as the sampler split it (a "+" inside a folder path stays there): one weight per part
    null_weights = [parti.contrastive_weight(parti.part_weight(p)[1]) for p in parti.rerank_parts(rerank)]
    record: dict[str, Any] = {
        "settings": {**to_dict(cfg), "guidance_scale": scale, "rerank": rerank,
                     "rerank_null_weight": null_weights if len(null_weights) > 1 else null_weights[0]},
        "checkpoint": str(pipe.folder), "model": pipe.config["config"], "tokenizer": pipe.identity, "prompts": prompts,
        "samples_per_prompt": N, "seconds_generating": gen_s, "tokens_per_second": P * N * T / max(gen_s, 1e-9),
        "images": records, "grid": str(grid), "tokens": str(token_file),
    }  # fmt: skip
    if check_fn is not None:
        passed = torch.tensor(checks).view(P, N) >= 1.0  # (P, N) in rank order
        first = passed.gather(1, first_generated[:, None]).float().mean().item()
        best = passed[:, 0].float().mean().item()
        record["adherence"] = {"checker": cfg.checker, "all_samples": passed.float().mean().item(),
                               "first_sample": first, "reranked_best": best}  # fmt: skip
        log.info(
            "%s checker: %.1f%% of all samples pass; first sample %.1f%%, best after reranking (%s) %.1f%%",
            cfg.checker, 100 * passed.float().mean().item(), 100 * first, rerank, 100 * best,
        )  # fmt: skip
    out.record(record)
    log.info(
        "%d prompts x %d samples in %s (%.1f tokens/s, guidance %.2f, rerank %s); grid %s, settings %s",
        P, N, out.folder / "images", record["tokens_per_second"], scale, rerank, grid, out.folder / "sampling.json",
    )  # fmt: skip
    return paths


__all__ = ["sample", "sample_parti", "sample_vim", "write_adm_npz"]
