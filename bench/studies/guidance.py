"""Parti's classifier-free guidance and reranking at small scale: `shapes` checker score vs guidance scale.

    python bench/studies/guidance.py                               # trains the quickstart's tiny Parti (400 steps), sweeps
    python bench/studies/guidance.py --checkpoint runs/quickstart/parti/final   # sweep an existing shapes Parti
    python bench/studies/guidance.py --smoke                       # seconds: a micro Parti, 2 scales, 2 prompts

The claims (Parti, arXiv 2206.10789, section 3): guidance (logits = u + s (c - u)) makes
samples follow their prompts better than s = 1, and reranking N samples per prompt raises the chance that the
kept one is right. Protocol: for each scale in `--scales` (default 1, 1.2, 2, 3, 5), `vimtool sample
--prompt...` (`vimtool.sampling.command.sample`) draws `--samples` images for each of `--prompts` prompts of
SEEN colour+shape combinations and as many of combinations HELD OUT of training, reranks them with the model's
own contrastive score (log p(x | text) - log p(x | null)), and the `shapes` checker grades every image. Columns:
pass rate over all samples, of the first sample drawn (no reranking), and of the top-ranked sample (reranked).
Same seed at every scale. The model is the quickstart's (recipes/parti_shapes.yaml, trained here through
`vimtool.train.t2i.train_t2i` for `--steps` steps -- 400 by default, the recipe's 1500 with `--steps 1500` -- unless
--checkpoint is given, e.g. the quickstart's runs/quickstart/parti/final, which is the better test of the claim).
Writes bench/studies/results/guidance.{json,md,png}.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout: python bench/studies/X.py

from bench.harness import STUDY_RESULTS as RESULTS  # noqa: E402
from bench.harness import parser, setup, write_results  # noqa: E402
from bench.plots import plot_lines  # noqa: E402
from bench.studies import fixtures as fx  # noqa: E402
from vimtool.config import load_config  # noqa: E402


def train_parti(shards: list[Path], tok: Path, out_dir: Path, a) -> Path:
    from vimtool.train.t2i import T2IRunConfig, train_t2i

    overrides = {"shards": [str(s) for s in shards], "tokenizer_path": str(tok),
                 "train": {"out_dir": str(out_dir), "steps": a.steps, "eval_every": a.steps, "save_every": 0, "progress": False,
                           "warmup_steps": max(1, min(50, a.steps // 10))}}  # fmt: skip
    if a.smoke:
        overrides |= {"size": "micro", "train": overrides["train"] | {"batch_size": 8}}
    return Path(train_t2i(load_config(T2IRunConfig, fx.REPO / "recipes" / "parti_shapes.yaml", overrides)))


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument(
        "--checkpoint", default=None, help="a Parti trained on the quickstart's shapes (default: train one)"
    )
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="image tokenizer (default: runs/tok_shapes/final if present, else train one; with --checkpoint: "
        "the one it records, or this path when it moved)",
    )
    ap.add_argument("--tokenizer-steps", type=int, default=1600)
    ap.add_argument("--steps", type=int, default=400, help="Parti training steps when training here (the recipe: 1500)")
    ap.add_argument("--scales", default="1,1.2,2,3,5")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per group (seen, held out)")
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (reranked)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for runs and samples (default: a temp folder, deleted)")
    a = setup(ap.parse_args())
    fx.quiet()
    scales = [float(s) for s in a.scales.split(",")]
    limit = None
    if a.smoke:
        a.steps, a.tokenizer_steps, a.prompts, a.samples, limit = 4, 4, 2, 2, 64
        scales = [1.0, 3.0]
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="study_guidance_"))
    t0 = time.perf_counter()
    if a.checkpoint:
        ckpt = Path(a.checkpoint)
    else:
        default_tok = fx.REPO / "runs" / "tok_shapes" / "final"
        given = a.tokenizer or (
            str(default_tok) if not a.smoke and (default_tok / "model.safetensors").exists() else None
        )
        tok = fx.tokenizer("shapes", a.tokenizer_steps, fx.CACHE / ("smoke" if a.smoke else ""), given)
        ckpt = train_parti(fx.shards(tok, "shapes", "train", limit=limit), tok, work / "parti", a)
    train_s = time.perf_counter() - t0

    from vimtool.data.shapes import captions
    from vimtool.sampling import SampleConfig
    from vimtool.sampling.command import sample

    groups = {"seen": captions(a.prompts, "val", seed=1, objects=(1,), holdout=fx.HOLDOUT),
              "held out": captions(a.prompts, "holdout", seed=1, objects=(1,), holdout=fx.HOLDOUT)}  # fmt: skip
    rows, series, record = [], {}, {}
    for group, prompts in groups.items():
        curves = {"all samples": [], "first sample": [], "reranked best": []}
        for s in scales:
            out = work / "samples" / f"{group.replace(' ', '_')}_{s}"
            t1 = time.perf_counter()
            sample(SampleConfig(checkpoint=str(ckpt), out=str(out), num_samples=a.samples, batch_size=64, seed=a.seed,
                                      guidance_scale=s, prompts=prompts, rerank="contrastive", checker="shapes", device="cpu",
                                      tokenizer=a.tokenizer, temperature=1.0))  # fmt: skip  # as results/guidance.md was measured
            sec = time.perf_counter() - t1
            rec = json.loads((out / "sampling.json").read_text())
            adh = rec["adherence"]
            record[f"{group}/{s}"] = {"adherence": adh, "tokens_per_second": rec["tokens_per_second"], "seconds": sec}
            rows.append([group, s, len(prompts), a.samples, f"{100 * adh['all_samples']:.0f}%", f"{100 * adh['first_sample']:.0f}%",
                         f"{100 * adh['reranked_best']:.0f}%", round(sec)])  # fmt: skip
            curves["all samples"].append(100 * adh["all_samples"])
            curves["first sample"].append(100 * adh["first_sample"])
            curves["reranked best"].append(100 * adh["reranked_best"])
        for k, v in curves.items():
            if k != "all samples":
                series[f"{group}: {k}"] = (scales, v)
    header = ["prompts", "guidance", "n prompts", "samples each", "pass: all samples", "pass: first (no rerank)",
              "pass: reranked best", "seconds"]  # fmt: skip
    model = a.checkpoint or f"tiny Parti trained here for {a.steps} steps in {train_s:.0f} s"
    title = (
        f"Parti on shapes: checker pass rate vs guidance scale, with and without contrastive reranking (model: {model})"
    )
    prefix = "smoke_" if a.smoke else ""
    write_results(
        f"{prefix}guidance",
        header,
        rows,
        a.out,
        title=title,
        extra={"runs": record, "train_seconds": train_s, "args": vars(a)},
    )
    png = plot_lines(Path(a.out) / f"{prefix}guidance.png", series, "guidance scale", "shapes checker pass rate (%)",
                     f"Guidance and reranking ({a.samples} samples per prompt)")  # fmt: skip
    if png:
        print(f"plot: {png}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
