"""NOBLE vs baseline at small scale: steps and wall-clock to reach the baseline's final validation loss.

    python bench/studies/noble.py                   # VIM on mnist5k tokens + Parti on shapes; ranks 32, 64; 3 seeds
    python bench/studies/noble.py --smoke           # seconds: micro models, 1 seed, a handful of steps
    python bench/studies/noble.py --models vim --seeds 0,1,2,3,4 --steps 600

The claim (NOBLE paper): a nonlinear low-rank branch on every linear layer (CosNet,
rank 32/64) reaches the baseline's loss in fewer steps, enough to win in wall-clock after its ~7% step-time
overhead. Protocol: for each model and seed, the baseline (rank 0) trains `--steps` steps and its final
validation loss L* is the target; each NOBLE run of the same seed (same data order, same init of the shared
weights' RNG stream) trains the same number of steps, and the first evaluation at or below L* (linearly
interpolated between evaluations) gives its steps-to-target; wall-clock to target = that many steps at the run's
own median seconds per step. Speedup = baseline steps (or seconds) / NOBLE steps (or seconds); reported as the
median [min, max] over seeds, and "not reached" when a NOBLE run never gets to L* (then there is no speedup).
Runs go through the shared engine (`vimtool.train.lm.train_lm`, `vimtool.train.t2i.train_t2i`) with the
NOBLE learning-rate multipliers it applies.

Data: VIM (class-conditional) on the mnist5k digits tokenized by the MNIST tokenizer (runs/tok_mnist/final when
present, else one trained here); Parti on the quickstart's shapes set tokenized by the shapes tokenizer.
Writes bench/studies/results/noble.{json,md,png}.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout: python bench/studies/X.py

from bench.harness import STUDY_RESULTS as RESULTS  # noqa: E402
from bench.harness import parser, setup, spread, write_results  # noqa: E402
from bench.plots import plot_lines  # noqa: E402
from bench.studies import fixtures as fx  # noqa: E402
from vimtool.config import load_config  # noqa: E402


def train_one(model: str, shards: list[Path], out_dir: Path, rank: int, seed: int, a) -> dict:
    """Train one run; -> {"curve": [(step, val_loss)], "sec_per_step": float, "params": ...}."""
    noble = {"rank": rank, "activation": a.activation}
    arch = {"dim": a.dim, "heads": a.heads, "mlp_dim": 4 * a.dim, "dropout": 0.0, "noble": noble}
    train = {"out_dir": str(out_dir), "steps": a.steps, "batch_size": a.batch, "lr": a.lr, "min_lr": a.lr / 10,
             "warmup_steps": max(1, a.steps // 20), "schedule": "cosine", "eval_every": a.eval_every,
             "save_every": 0, "log_every": a.eval_every, "progress": False, "seed": seed, "weight_decay": 0.0}  # fmt: skip
    t0 = time.perf_counter()
    if model == "vim":
        from vimtool.train.lm import LMRunConfig, train_lm

        cfg = load_config(LMRunConfig, None, {"shards": [str(s) for s in shards], "size": "tiny", "val_fraction": 0.1,
                                              "model": arch | {"depth": a.depth}, "train": train})  # fmt: skip
        train_lm(cfg)
    else:
        from vimtool.train.t2i import T2IRunConfig, train_t2i

        cfg = load_config(T2IRunConfig, None, {"shards": [str(s) for s in shards], "size": "tiny", "val_fraction": 0.05,
                                               "val_rows": 256, "text_vocab_size": 512,
                                               "model": arch | {"dec_depth": a.depth, "enc_depth": max(1, a.depth // 2)},
                                               "train": train})  # fmt: skip
        train_t2i(cfg)
    wall = time.perf_counter() - t0
    lines = fx.metric_lines(out_dir)
    curve = [(int(r["step"]), float(r["eval/val_loss"])) for r in lines if "eval/val_loss" in r]
    rates = [float(r["steps_per_s"]) for r in lines if "steps_per_s" in r]
    sec_per_step = 1 / statistics.median(rates) if rates else wall / a.steps
    return {"curve": curve, "sec_per_step": sec_per_step, "wall": wall}


def steps_to(curve: list[tuple[int, float]], target: float) -> float | None:
    """First (interpolated) step at which the validation loss is <= target; None when never."""
    prev = None
    for step, loss in curve:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(step)
            s0, l0 = prev
            return s0 + (step - s0) * (l0 - target) / (l0 - loss)
        prev = (step, loss)
    return None


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--models", default="vim,parti")
    ap.add_argument("--ranks", default="32,64")
    ap.add_argument("--activation", default="cosnet")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mnist-tokenizer", default=None, help="default: runs/tok_mnist/final if present, else train one")
    ap.add_argument(
        "--shapes-tokenizer", default=None, help="default: runs/tok_shapes/final if present, else train one"
    )
    ap.add_argument("--tokenizer-steps", type=int, default=1000, help="when a tokenizer has to be trained here")
    ap.add_argument("--name", default="noble", help="results file name (bench/studies/results/NAME.json/.md/.png)")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temp folder, deleted)")
    a = setup(ap.parse_args())
    fx.quiet()
    ranks = [int(r) for r in a.ranks.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    limit = None
    if a.smoke:
        a.steps, a.eval_every, a.batch, a.dim, a.depth, a.heads, a.tokenizer_steps = 6, 2, 8, 32, 1, 2, 4
        ranks, seeds, limit = [8], [0], 96
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="study_noble_"))
    rows, series, record = [], {}, {}
    for model in a.models.split(","):
        data = "mnist5k" if model == "vim" else "shapes"
        given = a.mnist_tokenizer if model == "vim" else a.shapes_tokenizer
        default = fx.REPO / "runs" / ("tok_mnist" if model == "vim" else "tok_shapes") / "final"
        if not given and not a.smoke and (default / "model.safetensors").exists():
            given = str(default)
        tok = fx.tokenizer(data, a.tokenizer_steps, fx.CACHE / ("smoke" if a.smoke else ""), given)
        shards = fx.shards(tok, data, "train", limit=limit)
        per_rank: dict[int, dict[str, list]] = {
            r: {"steps": [], "wall": [], "final": [], "overhead": []} for r in ranks
        }
        base_final = []
        for seed in seeds:
            base = train_one(model, shards, work / f"{model}_r0_s{seed}", 0, seed, a)
            target = base["curve"][-1][1]
            base_final.append(target)
            base_steps = steps_to(base["curve"], target)
            record[f"{model}/0/{seed}"] = base
            if seed == seeds[0]:
                series[f"{model} baseline"] = tuple(zip(*base["curve"]))
            for r in ranks:
                run = train_one(model, shards, work / f"{model}_r{r}_s{seed}", r, seed, a)
                record[f"{model}/{r}/{seed}"] = run
                if seed == seeds[0]:
                    series[f"{model} NOBLE r{r}"] = tuple(zip(*run["curve"]))
                s = steps_to(run["curve"], target)
                d = per_rank[r]
                d["final"].append(run["curve"][-1][1])
                d["overhead"].append(run["sec_per_step"] / base["sec_per_step"] - 1)
                d["steps"].append(base_steps / s if s else None)
                d["wall"].append((base_steps * base["sec_per_step"]) / (s * run["sec_per_step"]) if s else None)
        for r in ranks:
            d = per_rank[r]
            reached = [x for x in d["steps"] if x is not None]
            walls = [x for x in d["wall"] if x is not None]
            rows.append([model, r, len(seeds), spread(base_final), spread(d["final"]), f"{len(reached)}/{len(seeds)}",
                         spread(reached) if reached else "not reached", spread(walls) if walls else "not reached",
                         f"{100 * statistics.median(d['overhead']):+.0f}%"])  # fmt: skip
    header = ["model", "NOBLE rank", "seeds", "baseline final val loss", "NOBLE final val loss", "reached target",
              "step speedup", "wall speedup", "step time +"]  # fmt: skip
    title = (f"NOBLE ({a.activation}) vs baseline: width {a.dim}, depth {a.depth}, {a.steps} steps, batch {a.batch}, "
             f"lr {a.lr}; median [min, max] over seeds")  # fmt: skip
    prefix = "smoke_" if a.smoke else ""
    write_results(f"{prefix}{a.name}", header, rows, a.out, title=title, extra={"runs": record, "args": vars(a)})
    png = plot_lines(Path(a.out) / f"{prefix}{a.name}.png", series, "step", "validation loss (nats/token)",
                     f"NOBLE vs baseline, seed {seeds[0]}")  # fmt: skip
    if png:
        print(f"plot: {png}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
