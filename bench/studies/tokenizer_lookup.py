"""ViT-VQGAN Table 4 at small scale: codebook usage and reconstruction, factorized l2 codes vs plain, per lookup dim.

    python bench/studies/tokenizer_lookup.py              # mnist5k + shapes, plain and lookup dims 4..256, 150 steps each
    python bench/studies/tokenizer_lookup.py --smoke      # seconds: micro tokenizer, 2 settings, 4 steps
    python bench/studies/tokenizer_lookup.py --datasets mnist5k --steps 1000 --dims 8,32,256
    python bench/studies/tokenizer_lookup.py --init kmeans --init-step 100   # the recipes' k-means codebook init

The paper (arXiv 2110.04627, Table 4): factorized, l2-normalized codes raise codebook usage
from a few percent (plain VQ in the full width) to ~96%, and a small lookup dim (32; 4..256 ablated) keeps usage
high with the best reconstruction. Here each setting trains the project's tiny CPU tokenizer (recipes
tokenizer_mnist.yaml / parti_shapes_tokenizer.yaml: 0.3M parameters, 512 codes, 8x8 tokens on 32x32 images) for
`--steps` steps with every other setting equal, through `vimtool.train.tokenizer.train_tokenizer`; the
dead-code restart (not in the paper) is OFF here unless `--restart N`, and the codebook init is the paper's random
one unless `--init kmeans` (the recipes' setting: k-means of encoder outputs, once, at `--init-step`). Columns:
codebook usage per 256 held-out images (the paper's definition), code perplexity, dead codes, reconstruction PSNR
and L2 on the held-out split, wall seconds.
Writes bench/studies/results/tokenizer_lookup.{json,md,png}.
"""

from __future__ import annotations

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


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--datasets", default="mnist5k,shapes")
    ap.add_argument("--dims", default="4,8,16,32,64,256", help="lookup dims of the factorized quantizer")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--restart", type=int, default=0, help="dead-code restart every N steps (0 = off, as the paper)")
    ap.add_argument(
        "--init", default="random", choices=["random", "kmeans"], help="codebook init (kmeans: once, at --init-step)"
    )
    ap.add_argument("--init-step", type=int, default=100, help="step of the k-means codebook init (after the warmup)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--name", default="tokenizer_lookup", help="results file name (bench/studies/results/NAME.json/.md/.png)"
    )
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temp folder, deleted)")
    a = setup(ap.parse_args())
    fx.quiet()
    datasets = a.datasets.split(",")
    dims = [int(d) for d in a.dims.split(",")]
    if a.smoke:
        datasets, dims, a.steps = ["shapes"], [8], 4
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="study_tok_"))
    rows, series = [], {}
    for data in datasets:
        settings = [("plain", None)] + [("factorized", d) for d in dims]
        xs, usage = [], []
        for kind, dim in settings:
            model = {"quantizer": kind} | ({"lookup_dim": dim} if dim else {})
            extra = {"dead_code_restart": a.restart, "eval_images": 64 if a.smoke else 256, "codebook_init": a.init,
                     "codebook_init_step": min(a.init_step, a.steps - 1)}  # fmt: skip
            if a.smoke:
                model |= {
                    "enc_dim": 32,
                    "dec_dim": 32,
                    "enc_mlp_dim": 64,
                    "dec_mlp_dim": 64,
                    "enc_depth": 1,
                    "dec_depth": 1,
                }
                extra |= {"limit": 64}
            run_dir = work / f"{data}_{kind}_{dim}"
            t0 = time.perf_counter()
            fx.train_tokenizer(data, run_dir, a.steps, model, extra, seed=a.seed)
            sec = time.perf_counter() - t0
            last = [r for r in fx.metric_lines(run_dir) if "eval/codebook_usage" in r][-1]
            label = "plain (full width, no l2)" if kind == "plain" else f"factorized l2, dim {dim}"
            rows.append([data, label, f"{100 * last['eval/codebook_usage']:.1f}%", last["eval/codebook_perplexity"],
                         int(last["eval/dead_codes"]), last["eval/psnr"], last["eval/recon_l2"], round(sec)])  # fmt: skip
            if dim:
                xs.append(dim)
                usage.append(100 * last["eval/codebook_usage"])
            else:
                series[f"{data}: plain"] = ([min(dims), max(dims)], [100 * last["eval/codebook_usage"]] * 2)
        series[f"{data}: factorized l2"] = (xs, usage)
    header = ["data", "quantizer", "usage/256 img", "perplexity", "dead codes", "PSNR dB", "recon L2", "seconds"]
    init = f"k-means init at step {min(a.init_step, a.steps - 1)}" if a.init == "kmeans" else "random init"
    title = (f"ViT-VQGAN Table 4 direction: tiny tokenizer, 512 codes, {a.steps} steps each, {init}, dead-code restart "
             f"{a.restart or 'off'}")  # fmt: skip
    prefix = "smoke_" if a.smoke else ""
    write_results(f"{prefix}{a.name}", header, rows, a.out, title=title, extra={"args": vars(a)})
    png = plot_lines(Path(a.out) / f"{prefix}{a.name}.png", series, "lookup dim", "codebook usage per 256 images (%)",
                     "Codebook usage vs lookup dim (plain quantizer as a flat line)", logx=True)  # fmt: skip
    if png:
        print(f"plot: {png}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
