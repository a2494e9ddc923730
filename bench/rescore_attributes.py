"""Re-pick finished quickstart runs' samples with the attribute reranker added (`--rerank ...+W*clipattr:R`).

    python bench/rescore_attributes.py --runs runs/quickstart_seed5 runs/quickstart_seed6 [--weights 0 0.5 1 2]

A quickstart run (recipes/quickstart.sh) keeps 16 samples per prompt for 128 seen and 128 held-out prompts, guided
and unguided, each with its checker grade and its reranking score in samples/GROUP/sampling.json. Reranking is
post hoc: the samples do not depend on it, so re-picking them gives exactly what a run reranked another way would
keep. For each weight W the pick is the argmax of the run's recorded score plus W x the attribute score
(vimtool.sampling.clip.AttributeScorer under the run's own reranker, standardised among the prompt's 16, as
`sample --rerank A+W*clipattr:R` sums parts); W = 0 is the run's own pick. The table reports the share of prompts
whose pick passes the checker, and the oracle (any of the 16 passes). Results: bench/results/rescore_attributes.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, parser, setup, write_results  # noqa: E402

GROUPS = ("seen_guided", "heldout_guided", "seen_unguided", "heldout_unguided")


def _standardised(x: torch.Tensor) -> torch.Tensor:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


def rescore(run: Path, group: str, weights: list[float], scorer) -> tuple[list[float], float, int, int]:
    """(pass rate per weight, oracle, prompts, the run's sampling seed) of one run's group."""
    from PIL import Image

    rec = json.loads((run / "samples" / group / "sampling.json").read_text())
    by_prompt: dict[int, list[dict]] = {}
    for im in rec["images"]:
        by_prompt.setdefault(im["prompt_index"], []).append(im)
    hits, oracle = [0] * len(weights), 0
    for p, rows in sorted(by_prompt.items()):
        images = [Image.open(run / "samples" / group / "images" / Path(r["path"]).name).convert("RGB") for r in rows]
        passed = torch.tensor([r["check"] == 1.0 for r in rows])
        recorded = torch.tensor([r["score"] for r in rows])
        attr = _standardised(torch.tensor(scorer(images, [rec["prompts"][p]] * len(images))))
        for i, w in enumerate(weights):
            hits[i] += int(passed[int((recorded + w * attr).argmax())])
        oracle += int(passed.any())
    n = len(by_prompt)
    return [h / n for h in hits], oracle / n, n, rec["settings"]["seed"]


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--runs", nargs="+", required=True, help="quickstart output folders (their samples/, reranker/)")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--name", default="rescore_attributes")
    a = setup(ap.parse_args())
    from vimtool.sampling.clip import AttributeScorer

    rows = []
    for run in map(Path, a.runs):
        scorer = AttributeScorer.load(run / "reranker")  # the run's own reranker (its final checkpoint)
        for group in GROUPS:
            rates, oracle, n, seed = rescore(run, group, a.weights, scorer)
            rows.append([seed, group, n, 100 * oracle, *(100 * r for r in rates)])
    header = ["seed", "group", "prompts", "oracle", *(f"w={w:g}" for w in a.weights)]
    title = ("Quickstart picks re-made with the attribute reranker: % of prompts whose pick passes the checker; w = "
             "weight of clipattr added to the run's recorded score (w=0: the run's own pick)")  # fmt: skip
    write_results(a.name, header, rows, a.out, extra={"args": vars(a)}, title=title)


if __name__ == "__main__":
    main()
