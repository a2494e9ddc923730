"""NOBLE vs baseline, a fair and resumable study: each arm at its own best LR, 3 seeds, steps and wall-clock to the
baseline's final validation loss.

    python bench/studies/noble.py                        # vim, parti, dec512; baseline / noble-paper / noble-reference
    python bench/studies/noble.py --ablations            # then activation, rank, multiplier and init ablations
    python bench/studies/noble.py --models parti --downstream   # what each arm's Parti draws (shapes adherence)
    python bench/studies/noble.py --models vim --arms baseline --lrs 1e-3 --seeds 0 --steps 200   # one slice
    python bench/studies/noble.py --device cuda          # on a GPU (bf16 autocast: --precision auto)
    python bench/studies/noble.py --report               # table, conclusions and plots from the results; no training
    python bench/studies/noble.py --smoke                # seconds: a micro VIM, 3 steps, one LR, one seed

The claim (NOBLE paper, docs/PAPERS.md section 4): a nonlinear low-rank branch on every linear layer reaches the
baseline's loss in up to 1.47x fewer steps, enough to win in wall-clock after its ~7% step-time overhead.

Protocol. Models (MODELS): VIM on mnist5k tokens at the recipe's width 256 (recipes/vim_mnist.yaml, 1200 steps);
Parti on the quickstart's `shapes` at its size (recipes/parti_shapes.yaml, 1500 steps); a width-512, 8-block VIM
decoder on the same tokens (1200 steps). Arms (ARMS): the baseline (NOBLE off), NOBLE as the paper describes it
("paper" preset, rank 32, CosNet) and as the authors' runs did it ("reference": their main init, M at lr x1).
Every arm first sweeps --lrs on the first seed; once its sweep is complete, its best LR (lowest final validation
loss) runs the other seeds. With --ablations, each ablation (ABLATIONS: one change to a main arm given in --arms)
then runs at that arm's best LR, on --ablation-seeds. Schedule, batch, warmup and the rest come from the model's
recipe; min_lr keeps the recipe's ratio to lr. All arms of a model see the same data order for a seed. The target
is the baseline's final validation loss at its best LR (median over seeds); each run's steps_to_baseline is the
first evaluation at or below it (interpolated). The report (bench/studies/noble_report.py) states its conclusions
only as far as the seeds go.

Resuming: each finished run appends one entry to bench/studies/results/noble_study.json (rewritten atomically,
with the table and conclusions recomputed), and a run whose (model, arm, lr, seed, steps) is already there is
skipped, so the study can be stopped and started again. Several processes may share the file (one per core): each
claims a run before training it (a lock file per run), so none trains a run another is training or has finished,
and each rereads the file under a lock before adding its run. A tokenizer the study trained is kept in a
tokenizers/ folder beside the results folder (bench/studies/tokenizers/noble_study_<data>/, ~1 MB, committed with
the results; not inside results/, which holds only results), so a study resumed on another machine runs on the
same tokens.
Entry: {"model", "arm", "lr", "seed", "steps", "final_val_loss", "steps_to_baseline" (null if never), "wall_s",
"curve": [[step, val_loss], ...]} plus "sec_per_step", "noble" (the arm's settings), "tokenizer" (its id: runs are
only added on the same tokens), "device", "cpu" (its model name), "precision", "date" and, with --downstream,
"downstream" (Parti's shapes adherence: bench/studies/noble_downstream.py). The plots are noble_study.png (loss vs
steps) and noble_study_wall.png (vs seconds): the main arms at their best LR, shaded across seeds, with a second row
zoomed into the second half of training.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout: python bench/studies/X.py

from bench.harness import REPO, command_line, cpu_name, format_table, machine, markdown, parser, setup  # noqa: E402
from bench.harness import STUDY_RESULTS as RESULTS  # noqa: E402
from bench.studies import fixtures as fx  # noqa: E402
from bench.studies import noble_downstream as downstream  # noqa: E402
from bench.studies import noble_report as report  # noqa: E402
from vimtool.atomic import write_bytes, write_json, write_text  # noqa: E402
from vimtool.config import load_config  # noqa: E402

NAME = "noble_study"
RANK = 32  # the paper's default rank
REFERENCE_INIT = "0.5/sqrt(d_in)"

# name -> how to train it: task (lm = VIM, t2i = Parti), token data, recipe, model overrides of the recipe, steps
MODELS: dict[str, dict[str, Any]] = {
    "vim": {"task": "lm", "data": "mnist5k", "recipe": "vim_mnist.yaml", "model": {}, "steps": 1200},
    "parti": {"task": "t2i", "data": "shapes", "recipe": "parti_shapes.yaml", "model": {}, "steps": 1500},
    "dec512": {"task": "lm", "data": "mnist5k", "recipe": "vim_mnist.yaml", "steps": 1200,
               "model": {"dim": 512, "depth": 8, "heads": 8, "mlp_dim": 2048}},
}  # fmt: skip
# arm -> the model's `noble` section. The baseline keeps NOBLE off; main_init also reaches its plain projections.
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"rank": 0},
    "noble-paper": {"rank": RANK, "preset": "paper"},
    "noble-reference": {"rank": RANK, "preset": "reference"},
}
NO_MULTIPLIERS = {"lr_mult_down": 1.0, "lr_mult_up_power": 0.0, "lr_mult_mix_power": 0.0, "lr_mult_freq": 1.0,
                  "lr_mult_phase": 1.0}  # fmt: skip
ABLATIONS: dict[str, dict[str, Any]] = {
    "noble-paper-gelu": {"rank": RANK, "activation": "gelu"},
    "noble-paper-identity": {"rank": RANK, "activation": "identity"},
    "noble-paper-r16": {"rank": 16},
    "noble-paper-r64": {"rank": 64},
    "noble-paper-no-multipliers": {"rank": RANK, **NO_MULTIPLIERS},
    "baseline-reference-init": {"rank": 0, "main_init": REFERENCE_INIT},
    "noble-paper-reference-init": {"rank": RANK, "main_init": REFERENCE_INIT},
    "noble-reference-house-init": {"rank": RANK, "preset": "reference", "main_init": "0.02"},
}
SMOKE_MODEL = {"lm": {"dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64},
               "t2i": {"dim": 32, "dec_depth": 1, "enc_depth": 1, "heads": 2, "mlp_dim": 64}}  # fmt: skip


def steps_of(model: str, a) -> int:
    return a.steps or MODELS[model]["steps"]


def eval_every_of(model: str, a) -> int:
    return max(1, steps_of(model, a) // a.evals)


def task_of(model: str) -> tuple[type, Any]:
    """(run config class, training function) of a model's task."""
    # deferred: the training modules import torch, which --report does not need
    if MODELS[model]["task"] == "lm":
        from vimtool.train.lm import LMRunConfig, train_lm

        return LMRunConfig, train_lm
    from vimtool.train.t2i import T2IRunConfig, train_t2i

    return T2IRunConfig, train_t2i


def run_config(model: str, arm: str, lr: float, seed: int, shards: list[Path], out_dir: Path, a) -> Any:
    """The typed run config of one run: the model's recipe, its shards, the arm's NOBLE section, lr and seed."""
    spec = MODELS[model]
    recipe = REPO / "recipes" / spec["recipe"]
    config_class = task_of(model)[0]
    base = load_config(config_class, recipe, {}).train
    model_over = (SMOKE_MODEL[spec["task"]] if a.smoke else spec["model"]) | {"noble": {**(ARMS | ABLATIONS)[arm]}}
    steps, every = steps_of(model, a), eval_every_of(model, a)
    train = {"out_dir": str(out_dir), "steps": steps, "lr": lr, "min_lr": lr * base.min_lr / base.lr,
             "warmup_steps": min(base.warmup_steps, steps // 10), "eval_every": every, "save_every": 0,
             "keep_last": 1, "log_every": every, "progress": False, "seed": seed, "precision": a.precision,
             "cpu": a.device == "cpu"}  # fmt: skip
    if a.batch:
        train["batch_size"] = a.batch
    over = {"shards": [str(s) for s in shards], "val_shards": [], "model": model_over, "train": train}
    if spec["task"] == "lm":
        over["val_fraction"] = 0.1  # mnist5k's train split; the recipe's own val shards are not built here
    return load_config(config_class, recipe, over)


def train_run(model: str, arm: str, lr: float, seed: int, shards: list[Path], work: Path, a, score=None) -> dict:
    """Train one run (a function call into the library's training) and return its entry; `score(final checkpoint)`,
    when given, adds the entry's "downstream" before the run's folder is deleted."""
    out_dir = work / f"{model}_{arm}_lr{lr:g}_s{seed}"
    shutil.rmtree(out_dir, ignore_errors=True)  # a run stopped half-way starts over
    cfg = run_config(model, arm, lr, seed, shards, out_dir, a)
    t0 = time.perf_counter()
    final = task_of(model)[1](cfg)
    wall = time.perf_counter() - t0
    scored = {"downstream": score(final)} if score else {}
    lines = fx.metric_lines(out_dir)
    curve = [[int(r["step"]), float(r["eval/val_loss"])] for r in lines if "eval/val_loss" in r]
    rates = [float(r["steps_per_s"]) for r in lines if "steps_per_s" in r]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"model": model, "arm": arm, "lr": lr, "seed": seed, "steps": cfg.train.steps,
            "final_val_loss": curve[-1][1], "steps_to_baseline": None, "wall_s": round(wall, 2), "curve": curve,
            "sec_per_step": 1 / statistics.median(rates) if rates else wall / cfg.train.steps,
            "noble": (ARMS | ABLATIONS)[arm], "device": device_name(a.device), "cpu": cpu_name(),
            "precision": a.precision,
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())} | scored  # fmt: skip


def device_name(option: str) -> str:
    """What the engine runs on for --device (auto: the GPU when torch sees one, as accelerate picks)."""
    import torch  # deferred: --report needs no torch

    if option == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name(0)


def run_key(e: dict[str, Any]) -> tuple:
    return (e["model"], e["arm"], f"{e['lr']:.6g}", int(e["seed"]), int(e["steps"]))


# ---------------------------------------------------------------------------------------------- the results file
def load_entries(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def save(path: Path, entries: list[dict[str, Any]], smoke: bool, new_runs: bool = True) -> None:
    """Rewrite the results file (atomically): the entries, with steps_to_baseline, table and conclusions recomputed.

    The command and machine recorded are those of the last invocation that added runs (new_runs=False, as for
    --report, keeps the file's)."""
    report.refresh_steps_to_baseline(entries)
    header, rows, notes = report.summarize(entries)
    models = ", ".join(dict.fromkeys(e["model"] for e in entries))
    devices = ", ".join(dict.fromkeys(e.get("device", "?") for e in entries))
    title = (f"NOBLE study ({models}; runs on {devices}): each arm at its best LR of the sweep (picked on the first "
             f"seed); median [min, max] over seeds; target = the baseline's final validation loss at its best LR")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() and not new_runs else {}
    record = {"title": title, "command": old.get("command") or command_line(), "machine": old.get("machine") or machine(),
              "header": header, "rows": rows, "smoke": smoke, "notes": notes, "runs": entries}  # fmt: skip
    write_json(path, record)
    write_text(path.with_suffix(".md"), markdown(record))


def plan(a) -> list[tuple[str, str]]:
    arms = [s.strip() for s in a.arms.split(",") if s.strip()]
    unknown = [x for x in arms if x not in ARMS]  # an ablation runs at its main arm's LR: --ablations
    models = [s.strip() for s in a.models.split(",") if s.strip()]
    unknown += [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown arm or model {', '.join(unknown)}; arms: {', '.join(ARMS)} (the ablations come "
                         f"with --ablations); models: {', '.join(MODELS)}")  # fmt: skip
    return [(m, arm) for m in models for arm in dict.fromkeys(arms)]


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list from {', '.join(MODELS)}")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma list from {', '.join(ARMS)}")
    ap.add_argument("--ablations", action="store_true",
                    help="then the ablations (ABLATIONS) of those arms, each at its arm's best LR, on --ablation-seeds")  # fmt: skip
    ap.add_argument("--ablation-seeds", default=None, help="the ablations' seeds (default: the sweep seed only)")
    ap.add_argument("--downstream", action="store_true",
                    help="then the downstream score (Parti: shapes adherence, bench/studies/noble_downstream.py) of "
                         "each main arm at its best LR on --downstream-seeds, retraining runs stored without one")  # fmt: skip
    ap.add_argument("--downstream-seeds", default=None, help="the downstream scores' seeds (default: the sweep seed)")
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="the LR sweep of every arm (on the first seed)")
    ap.add_argument("--seeds", default="0,1,2", help="the first one sweeps the LRs; the rest run at the best LR")
    ap.add_argument("--steps", type=int, default=None, help="steps of every run (default: each model's, MODELS)")
    ap.add_argument("--evals", type=int, default=24, help="validation evaluations per run (the curve's points)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the model's recipe)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="auto: bf16 autocast on GPUs that have it, fp32 on CPU (the same for every arm)")  # fmt: skip
    ap.add_argument("--report", action="store_true", help="only rebuild the table, conclusions and plots")
    ap.add_argument("--mnist-tokenizer", default=None, help="default: runs/tok_mnist/final if present, else train one")
    ap.add_argument(
        "--shapes-tokenizer", default=None, help="default: runs/tok_shapes/final if present, else train one"
    )
    ap.add_argument("--tokenizer-steps", type=int, default=1000, help="when a tokenizer has to be trained here")
    ap.add_argument("--work", default=None, help="folder for the runs in progress (default: a temp folder, deleted)")
    a = setup(ap.parse_args())
    fx.quiet()
    lrs = [float(x) for x in a.lrs.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    limit = None
    if a.smoke:
        a.steps, a.evals, a.batch, a.tokenizer_steps, lrs, seeds, limit = 3, 3, 8, 4, lrs[1:2] or lrs, seeds[:1], 96
        a.models = "vim" if a.models == ",".join(MODELS) else a.models
    if a.device == "cuda":
        import torch  # deferred: --report needs no torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here; use --device cpu or auto")
    path = Path(a.out) / f"{a.prefix}{NAME}.json"
    todo = plan(a)
    if not a.report:
        entries = load_entries(path)
        work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="study_noble_"))
        datas = dict.fromkeys(MODELS[m]["data"] for m, _ in todo)
        shards_of_data = {data: fixture_shards(data, a, limit) for data in datas}
        shards_of = {m: shards_of_data[MODELS[m]["data"]] for m, _ in todo}
        for model, (_, tok_id) in shards_of.items():
            check_same_tokenizer(entries, model, steps_of(model, a), tok_id)
        # every arm's sweep first (on the first seed), then the other seeds at each arm's best LR: a study stopped
        # part-way has compared every arm at some LR rather than finished one arm
        for model, arm in todo:
            for lr in lrs:
                run_once(model, arm, lr, seeds[0], *shards_of[model], work, entries, path, a)
        for model, arm in todo:
            lr = swept_best_lr(entries, path, model, arm, lrs, seeds[0], a)
            for seed in seeds[1:] if lr is not None else []:
                run_once(model, arm, lr, seed, *shards_of[model], work, entries, path, a)
        if a.ablations:
            ablation_seeds = [int(s) for s in a.ablation_seeds.split(",")] if a.ablation_seeds else seeds[:1]
            run_ablations(todo, shards_of, work, entries, path, lrs, seeds[0], ablation_seeds, a)
        if a.downstream:
            downstream_seeds = [int(s) for s in a.downstream_seeds.split(",")] if a.downstream_seeds else seeds[:1]
            run_downstream(todo, shards_of, work, entries, path, lrs, seeds[0], downstream_seeds, a)
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    with locked(path):  # other study processes may be adding runs meanwhile
        entries = load_entries(path)
        if not entries:
            raise SystemExit(f"{path} holds no runs yet; run the study first")
        save(path, entries, a.smoke, new_runs=False)
    header, rows, notes = report.summarize(entries)
    print(format_table(header, rows))
    print("\n".join(f"- {n}" for n in notes))
    for png in report.plot(entries, path.with_suffix(".png")):
        print(f"plot: {png}")
    print(path)


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock beside the results file: several study processes (say one per core, each on its own
    arms) then read, add to and rewrite it in turn instead of overwriting each other's runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


@contextlib.contextmanager
def claimed(path: Path, key: tuple):
    """Claim one run for this process while it trains (yields False when another process holds it): two processes
    given the same arms then split the runs between them instead of training one twice."""
    name = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    claim = path.with_name(f"{path.stem}.run-{name}.lock")  # gitignored (*.lock)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(claim, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            claim.unlink(missing_ok=True)  # a process that opens it later finds the run in the results


def fresh(entries: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Refresh `entries` in place from the results file (other study processes may have added runs)."""
    with locked(path):
        entries[:] = load_entries(path)
    return entries


def swept_best_lr(entries, path, model, arm, lrs, sweep_seed, a) -> float | None:
    """The arm's best LR once its whole sweep (every --lrs on the sweep seed) is in the results; None before (another
    process is still sweeping it, or the sweep was stopped), so no seed runs at a provisional LR."""
    mine = [
        e for e in fresh(entries, path) if e["model"] == model and e["arm"] == arm and e["steps"] == steps_of(model, a)
    ]
    swept = {f"{e['lr']:.6g}" for e in mine if e["seed"] == sweep_seed}
    missing = [f"{lr:g}" for lr in lrs if f"{lr:.6g}" not in swept]
    if missing:
        print(f"[noble study] {model} {arm}: its LR sweep lacks lr {', '.join(missing)} on seed {sweep_seed}; "
              "its other seeds and ablations wait for it", file=sys.stderr)  # fmt: skip
        return None
    return report.best_lr(mine)


def run_ablations(todo, shards_of, work, entries, path, lrs, sweep_seed, seeds, a) -> None:
    """The ablations of the main arms in `todo`, each at the best LR of the arm it varies (once that arm's sweep is
    complete), on `seeds`: an ablation changes one thing against a tuned arm, not the LR too."""
    for model, parent in todo:
        lr = swept_best_lr(entries, path, model, parent, lrs, sweep_seed, a)
        for arm in [x for x in ABLATIONS if report.parent_of(x) == parent] if lr is not None else []:
            for seed in seeds:
                run_once(model, arm, lr, seed, *shards_of[model], work, entries, path, a)


def run_downstream(todo, shards_of, work, entries, path, lrs, sweep_seed, seeds, a) -> None:
    """The downstream score of each main arm in `todo` at its best LR on `seeds`, for runs the results hold without
    one: such a run trains again (checkpoints are not kept), and its entry gains "downstream" with the retrained
    run's final validation loss beside the stored one."""
    for model, arm in todo:
        if MODELS[model]["task"] != "t2i":
            print(f"[noble study] {model}: the study has no downstream score for it (Parti only)", file=sys.stderr)
            continue
        lr = swept_best_lr(entries, path, model, arm, lrs, sweep_seed, a)
        for seed in seeds if lr is not None else []:
            key = (model, arm, f"{lr:.6g}", seed, steps_of(model, a))
            with claimed(path, key + ("downstream",)) as mine:
                stored = [e for e in fresh(entries, path) if run_key(e) == key]
                if not mine or not stored or "downstream" in stored[0]:
                    continue
                print(f"[noble study] {model} {arm} lr {lr:g} seed {seed}: again, for its downstream score",
                      file=sys.stderr, flush=True)  # fmt: skip
                again = train_run(model, arm, lr, seed, shards_of[model][0], work, a, downstream.shapes_adherence)
                retrained = {"retrained_final_val_loss": again["final_val_loss"], "cpu": again["cpu"]}
                with locked(path):
                    entries[:] = load_entries(path)
                    for e in entries:
                        if run_key(e) == key:
                            e["downstream"] = again["downstream"] | retrained
                    save(path, entries, a.smoke)


def run_once(model, arm, lr, seed, shards, tokenizer, work, entries, path, a) -> None:
    """Train (model, arm, lr, seed) unless the results already hold it or another study process is training it;
    append its entry and rewrite the file. `entries` is refreshed from the file before the check and before the
    write, so runs that other processes added meanwhile are kept."""
    key = (model, arm, f"{lr:.6g}", seed, steps_of(model, a))
    with claimed(path, key) as mine:
        if not mine:
            print(f"[noble study] {model} {arm} lr {lr:g} seed {seed}: another process is training it", file=sys.stderr)
            return
        if key in {run_key(e) for e in fresh(entries, path)}:
            return
        print(f"[noble study] {model} {arm} lr {lr:g} seed {seed}", file=sys.stderr, flush=True)
        score = downstream.shapes_adherence if a.downstream and MODELS[model]["task"] == "t2i" and arm in ARMS else None
        entry = train_run(model, arm, lr, seed, shards, work, a, score) | {"tokenizer": tokenizer}
        with locked(path):
            entries[:] = load_entries(path) + [entry]
            save(path, entries, a.smoke)


def check_same_tokenizer(entries: list[dict[str, Any]], model: str, steps: int, tok_id: str) -> None:
    """Refuse to add runs of `model` on other tokens than the results' runs of it were trained on."""
    seen = {e.get("tokenizer") for e in entries if e["model"] == model and e["steps"] == steps} - {tok_id}
    if seen:
        raise SystemExit(
            f"the results' {model} runs were trained on tokenizer {', '.join(map(str, seen))}, this run's is "
            f"{tok_id}: pass the same one (--mnist-tokenizer / --shapes-tokenizer) or write elsewhere (--out)"
        )


def tokenizer_id(tok: Path) -> str:
    """A tokenizer checkpoint's identity: the first 12 hex digits of its weights' sha256."""
    return hashlib.sha256((Path(tok) / "model.safetensors").read_bytes()).hexdigest()[:12]


def fixture_shards(data: str, a, limit: int | None) -> tuple[list[Path], str]:
    """(token shards of `data`, the tokenizer's id), made with its tokenizer: given, else the one the results folder
    keeps (the study's own tokens, committed beside its results), else the project's trained one, else one trained
    here -- which is then kept beside the results folder, so a study resumed on another machine runs on the same tokens
    (runs are only added on the same tokenizer: check_same_tokenizer)."""
    given = a.mnist_tokenizer if data == "mnist5k" else a.shapes_tokenizer
    kept = Path(a.out).resolve().parent / "tokenizers" / f"{a.prefix}{NAME}_{data}"
    default = REPO / "runs" / ("tok_mnist" if data == "mnist5k" else "tok_shapes") / "final"
    if not given and not a.smoke:
        given = next((str(p) for p in (kept, default) if (p / "model.safetensors").exists()), None)
    tok = fx.tokenizer(data, a.tokenizer_steps, fx.CACHE / ("smoke" if a.smoke else ""), given)
    if not a.smoke and not given:  # trained here just now
        keep_tokenizer(tok, kept)
    return fx.shards(tok, data, "train", limit=limit), tokenizer_id(tok)


def keep_tokenizer(tok: Path, kept: Path) -> None:
    """Copy a tokenizer checkpoint's weights, config and card (not its training state: ~1 MB for the study's
    sizes) into `kept`; the weights are written last, so a half-copied folder is never taken for a tokenizer."""
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "README.md", "model.safetensors"):
        if (Path(tok) / name).exists():
            write_bytes(kept / name, (Path(tok) / name).read_bytes())


if __name__ == "__main__":
    main()
