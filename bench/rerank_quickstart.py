"""Re-rank the saved samples of finished quickstart runs with learned rerankers (`vimtool train-reranker`).

    python bench/rerank_quickstart.py --reranker transformer=runs/reranker_shapes --reranker bow=runs/reranker_bow \
        --runs runs/quickstart_seed1 runs/quickstart_seed2 runs/quickstart_seed3

A quickstart run (recipes/quickstart.sh) writes 16 samples per prompt for 128 seen and 128 held-out prompts, guided
and unguided, as samples/GROUP/images/pPPP_sKK.png, KK being the sample's rank under the run's own reranker
(`contrastive:0.25`). Each picture is graded by the shapes checker (vimtool.data.shapes.check) and each prompt's
16 are scored by every reranker given; per group the table reports the share of prompts whose pick passes:

- oracle: at least one of the 16 passes (what a perfect reranker would reach),
- recorded: the run's own pick (sampling.json's reranked_best; `old best` re-grades it from the PNG),
- NAME: the argmax of the clip score (cosine similarity of image and prompt) among the 16,
- NAME fused lam (the first reranker only): argmax of z(clip score) - lam * KK, the clip score z-scored within
  the prompt's 16 and the old reranker's rank as a prior (lam 0 = the clip score alone),
- NAME+contrastive:W (with --plus-contrastive W): argmax of z(clip score) + z(log p(image | prompt) - W log p(image
  | null)), each z-scored within the prompt's 16, as `sample --rerank clip:FOLDER+contrastive:W` ranks; the
  contrastive score is recomputed from the run's saved tokens (tokens.npy) under the run's own Parti; with
  --mix m1,m2,... one such column per m: argmax of z(clip score) + m z(contrastive) (m = 1: the sampler's sum).

Rows: one per run and group, then the mean over runs per group. Nothing is sampled again: the numbers are those of
the pictures the runs wrote. Results: bench/results/rerank_quickstart.json (+ .md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, parser, setup, write_results  # noqa: E402

GROUPS = ("seen_guided", "heldout_guided", "seen_unguided", "heldout_unguided")
LAMBDAS = (0.0, 0.02, 0.05, 0.1)
NAME = re.compile(r"p(\d{3})_s(\d{2})\.png$")


def load_group(folder: Path):
    """(prompts, images [P][N] PIL in old-rank order, passed (P, N) bool, recorded pass rate) of one sample group."""
    from PIL import Image

    from vimtool.data.shapes import check

    rec = json.loads((folder / "sampling.json").read_text())
    prompts, n = rec["prompts"], rec["samples_per_prompt"]
    images = [[None] * n for _ in prompts]
    for f in (folder / "images").glob("p*_s*.png"):
        m = NAME.search(f.name)
        if m:
            images[int(m.group(1))][int(m.group(2))] = Image.open(f).convert("RGB")
    if any(im is None for row in images for im in row):
        raise SystemExit(f"{folder}: some of the {len(prompts)} x {n} images are missing")
    passed = np.array([[check(im, p).ok for im in row] for row, p in zip(images, prompts)])
    return prompts, images, passed, rec["adherence"]["reranked_best"]


def zscore(scores: np.ndarray, ddof: int = 1) -> np.ndarray:
    """(P, N) -> z-scored within each row (ddof 1, the sample std: as the sampler's combined rerankers)."""
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, ddof=ddof, keepdims=True) + 1e-8)


def contrastive(pipe, folder: Path, weight: float) -> np.ndarray:
    """(P, N) log p(tokens | prompt) - weight log p(tokens | null) of a group's saved samples under the run's
    Parti `pipe` (a Stage2Pipeline), in old-rank order."""
    import torch

    from vimtool.sampling.parti import contrastive_scores

    rec = json.loads((folder / "sampling.json").read_text())
    prompts, n = rec["prompts"], rec["samples_per_prompt"]
    tokens = torch.from_numpy(np.load(folder / "tokens.npy")).long()  # (P * N, T), best first per prompt
    rows = [p for p in prompts for _ in range(n)]
    with torch.no_grad():
        scores = contrastive_scores(pipe.model.eval(), pipe.text_tokenizer, rows, tokens, 256, weight)
    return scores.numpy().reshape(len(prompts), n)


def picks(scores: np.ndarray, lam: float) -> np.ndarray:
    """(P, N) clip scores in old-rank order -> (P,) index of the pick under z(score) - lam * old rank."""
    z = zscore(scores, ddof=0)
    return (z - lam * np.arange(scores.shape[1])[None, :]).argmax(1)


def main() -> None:
    ap = parser(__doc__, out=RESULTS)
    ap.add_argument("--reranker", action="append", required=True, metavar="NAME=FOLDER",
                    help="a train-reranker checkpoint or run folder, with a short name for the table (repeatable)")  # fmt: skip
    ap.add_argument("--runs", nargs="+", required=True, help="quickstart output folders (with samples/GROUP/)")
    ap.add_argument("--name", default="rerank_quickstart", help="results file name")
    ap.add_argument(
        "--plus-contrastive",
        type=float,
        default=None,
        metavar="W",
        help="also rank by each reranker's z-score plus that of contrastive:W (the quickstart's sum)",
    )
    ap.add_argument(
        "--mix",
        default="1",
        help="weights m of the contrastive part: columns NAME+m*contrastive:W "
        "(argmax of z(clip) + m z(contrastive)); 1 = the sampler's equal-weight sum",
    )
    ap.add_argument("--groups", default=",".join(GROUPS), help="the sample groups of each run (samples/GROUP/)")
    ap.add_argument("--note", action="append", default=[], help="a line for the table's notes (how each was made)")
    args = setup(ap.parse_args())
    from vimtool.sampling.clip import ClipScorer

    scorers = {}
    for item in args.reranker:
        name, _, folder = item.partition("=")
        scorers[name] = ClipScorer.load(folder)
    header = ["run", "group", "prompts", "oracle", "recorded", "old best"]
    first = next(iter(scorers))
    header += [f"{first} fused {lam:g}" if lam else first for lam in LAMBDAS] + list(scorers)[1:]
    w = args.plus_contrastive
    mixes = [float(m) for m in args.mix.split(",")]
    groups = [g for g in args.groups.split(",") if g]
    if w is not None:
        header += [f"{name}+{'' if m == 1 else f'{m:g}*'}contrastive:{w:g}" for name in scorers for m in mixes]
        header += [f"contrastive:{w:g}"]
    rows, per_group = [], {g: [] for g in groups}
    for run in args.runs:
        pipe = None
        if w is not None:  # the run's Parti, once for its four groups
            from vimtool.pipeline import Stage2Pipeline

            pipe = Stage2Pipeline.load(Path(run) / "parti" / "final")
        for group in groups:
            folder = Path(run) / "samples" / group
            prompts, images, passed, recorded = load_group(folder)
            values = [float(passed.any(1).mean()), recorded, float(passed[:, 0].mean())]
            every = np.arange(len(prompts))
            clip = {}
            for k, (name, scorer) in enumerate(scorers.items()):
                clip[name] = np.array([scorer(row, [p] * len(row)) for row, p in zip(images, prompts)])  # (P, N)
                for lam in LAMBDAS if k == 0 else (0.0,):
                    values.append(float(passed[every, picks(clip[name], lam)].mean()))
            if w is not None:
                zc = zscore(contrastive(pipe, folder, w))
                values += [
                    float(passed[every, (zscore(c) + m * zc).argmax(1)].mean()) for c in clip.values() for m in mixes
                ]
                values.append(float(passed[every, zc.argmax(1)].mean()))
            per_group[group].append(values)
            rows.append([Path(run).name, group, len(prompts), *[round(100 * v, 1) for v in values]])
            print(rows[-1], flush=True)
    for group in groups:
        mean = np.mean(per_group[group], axis=0)
        rows.append(["mean", group, len(args.runs), *[round(100 * v, 1) for v in mean]])
    write_results(
        args.name,
        header,
        rows,
        out=args.out,
        title="Learned reranker on the quickstart's saved samples: % of prompts whose pick among 16 passes the "
        "shapes checker (oracle: any of the 16 passes; recorded: the run's contrastive:0.25 pick)",
        extra={"rerankers": {n: str(s) for n, s in zip(scorers, (i.partition("=")[2] for i in args.reranker))},
               "runs": [str(r) for r in args.runs], "lambdas": list(LAMBDAS), "plus_contrastive": w, "mix": mixes,
               "notes": ["fused lam: argmax of the clip score z-scored within the prompt's 16 minus lam x the old "
                         "reranker's rank (0-15)", *args.note]},
    )  # fmt: skip


if __name__ == "__main__":
    main()
