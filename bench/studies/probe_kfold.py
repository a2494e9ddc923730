"""Is VIM's linear-probe edge over raw pixels real? 5-fold cross-validation on all 5,000 mnist5k digits.

    OMP_NUM_THREADS=1 nice -n 5 python bench/studies/probe_kfold.py                 # all 5 folds (~22 CPU-min each)
    OMP_NUM_THREADS=1 nice -n 5 python bench/studies/probe_kfold.py --folds 3,4     # some folds (another process)
    python bench/studies/probe_kfold.py --report-only                 # pool whatever folds have finished
    python bench/studies/probe_kfold.py --smoke                       # seconds: micro models, 1 fold of 60 held-out digits
    # a variant (its own runs and results): the tokenizer settings that made runs/tok_mnist/final
    python bench/studies/probe_kfold.py --runs runs/OT --out bench/studies/results/probe_kfold_oldtok \
        --tokenizer-set model.lookup_dim=32 --tokenizer-set codebook_init=random --tokenizer-set dead_code_restart=50
    # VIM variants: --lm-set KEY=VALUE (extra train-lm --set), --shifts K [--max-shift P] (K shifted copies of each
    # training digit for the VIM, as the recipe's tokenize-dataset --shifts; the probe fits on the originals)

Why: on the recipe's single split (518 held-out digits) VIM's best block beat raw pixels by 1.0 point, McNemar
p = 0.56 -- too few digits to tell. Here fold k = `mnist5k:val_fraction=0.2,fold=k` (~1,000 digits) is held out
from BOTH the tokenizer and the VIM of that fold, so the five folds pool to 5,000 held-out digits.

Per fold, exactly what a user runs (the training commands as subprocesses -- one process per run, as accelerate
wants -- tokenizing and probing through the library functions behind their commands; these overrides only):
    vimtool train-tokenizer --config recipes/tokenizer_mnist.yaml --set data=mnist5k:val_fraction=0.2,fold=k \\
        --set train.out_dir=runs/G5_fold{k}/tok
    vimtool tokenize-dataset --tokenizer runs/G5_fold{k}/tok/final --data mnist5k:val_fraction=0.2,fold=k \\
        --split train --out runs/G5_fold{k}/shards/train          # and --split val --out .../shards/val
    vimtool train-lm --config recipes/vim_mnist.yaml --set shards=[...train] --set val_shards=[...val] \\
        --set train.out_dir=runs/G5_fold{k}/vim
    vimtool probe -c runs/G5_fold{k}/vim/final --shards .../train --val-shards .../val --out runs/G5_fold{k}/probe
Then per-digit predictions (probe.json has only accuracies): each block's softmax head is refit with the L2 that
the probe chose for it (`vimtool.probe.fit_softmax`, deterministic L-BFGS: the same head, checked against
probe.json's top-1), the saved pixel / token-bag heads are applied, and predictions are saved per fold.

Pooled: per-block top-1 over all held-out digits, pixels, token bag; the block picked on training rows in each
fold (`block_picked_on_train`: no held-out peeking; the honest number) and its pooled top-1; McNemar's exact test
(two-sided binomial on the discordant digits) of (a) the block best on the pooled held-out digits (optimistic) and
(b) the per-fold training-row pick, each against the raw-pixel probe. Every step is skipped when its output
exists, so an interrupted study resumes. Writes bench/studies/results/probe_kfold.{json,md} (smoke: smoke_probe_kfold.*).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout: python bench/studies/X.py

from bench.harness import STUDY_RESULTS as RESULTS  # noqa: E402
from bench.harness import parser, setup, write_results  # noqa: E402
from bench.studies import fixtures as fx  # noqa: E402

TOKENIZER_RECIPE = fx.REPO / "recipes" / "tokenizer_mnist.yaml"
VIM_RECIPE = fx.REPO / "recipes" / "vim_mnist.yaml"
# --smoke: the recipes' structure at micro size, so that CI runs every step (and the pooling) in seconds
SMOKE_TOKENIZER = {
    "size": "micro",
    "codebook_init": "random",
    "eval_images": 16,
    "limit": 120,
    "train": {"steps": 3, "batch_size": 8, "eval_every": 3, "save_every": 0, "log_every": 1, "warmup_steps": 1},
}
SMOKE_VIM = {"size": "micro", "model": {"dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64},
             "train": {"steps": 3, "batch_size": 8, "eval_every": 3, "save_every": 0, "log_every": 1, "warmup_steps": 1,
                       "precision": "fp32"}}  # fmt: skip


def spec_of(fold: int, val_fraction: float) -> str:
    return f"mnist5k:val_fraction={val_fraction:g},fold={fold}"


def vimtool(args: list[str], log_path: Path, threads: int) -> None:
    """Run `vimtool [--threads N] ARGS` in a fresh process (its stderr -> log_path); a failure stops the study."""
    cmd = [sys.executable, "-m", "vimtool", *(["--threads", str(threads)] if threads else []), *args]
    print("  $ " + shlex.join(["vimtool", *cmd[3:]]), file=sys.stderr)
    with open(log_path, "w") as log:
        res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=fx.REPO)
    if res.returncode:
        tail = log_path.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-3:]
        raise SystemExit(f"vimtool {args[0]} failed ({res.returncode}); see {log_path}: {' | '.join(tail)}")


def dotted(d: dict, prefix: str = "") -> list[str]:
    """{"train": {"steps": 3}} -> ["--set", "train.steps=3"]: a nested override as the CLI's --set items."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += dotted(v, f"{prefix}{k}.")
        else:
            out += ["--set", f"{prefix}{k}={v}"]
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the training subprocesses)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU seconds (user + sys, children included) of each step of a fold, kept in FOLD/times.json (a
    resumed run keeps earlier ones)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, fn):
        w0, c0 = time.perf_counter(), cpu_seconds()
        out = fn()
        self.times[name] = {"wall_s": round(time.perf_counter() - w0, 1), "cpu_s": round(cpu_seconds() - c0, 1)}
        self.path.write_text(json.dumps(self.times, indent=2) + "\n")
        print(
            f"  {name}: {self.times[name]['wall_s']:.0f} s wall, {self.times[name]['cpu_s']:.0f} s CPU", file=sys.stderr
        )
        return out


def claim(folder: Path) -> bool:
    """Take fold `folder` for this process (folder/RUNNING holds our pid), unless a live process holds it: two
    processes given the same folds (`--folds 0,1,2,3,4` and `--folds 4,3`) then share them without clashing."""
    lock = folder / "RUNNING"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text().strip() or 0), 0)
                return False  # alive: that process runs this fold
            except (ProcessLookupError, ValueError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # left by a process that died: take it over
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def run_fold(k: int, root: Path, a) -> Path | None:
    """Tokenizer, shards, VIM, probe and per-digit predictions of fold k under root/G5_fold{k}; -> preds.json
    (None when another live process is running this fold)."""
    folder = root / f"G5_fold{k}"
    folder.mkdir(parents=True, exist_ok=True)
    preds = folder / "preds.json"
    if preds.exists():
        return preds
    if not claim(folder):
        print(f"fold {k}: another process runs it ({folder / 'RUNNING'}); skipped here", file=sys.stderr)
        return None
    try:
        return _run_fold(k, folder, preds, a)
    finally:
        (folder / "RUNNING").unlink(missing_ok=True)


def _run_fold(k: int, folder: Path, preds: Path, a) -> Path:
    spec = spec_of(k, a.val_fraction)
    clock = Clock(folder / "times.json")
    print(f"fold {k} ({spec}) -> {folder}", file=sys.stderr)

    tok = folder / "tok" / "final"
    if not (tok / "model.safetensors").exists():
        args = ["train-tokenizer", "--config", str(TOKENIZER_RECIPE), "--data", spec, "--out-dir", str(folder / "tok"),
                *(dotted(SMOKE_TOKENIZER) if a.smoke else []), *[x for kv in a.tokenizer_set for x in ("--set", kv)]]  # fmt: skip
        clock.run("tokenizer", lambda: vimtool(args, folder / "tokenizer.log", a.threads))

    shard_dirs = {}
    for split in ("train", "val"):
        out = folder / "shards" / split
        shard_dirs[split] = out
        if not (out / "DONE").exists():
            from vimtool.tokenize import TokenizeConfig, tokenize_dataset

            if out.exists():  # a half-written folder from an interrupted run
                shutil.rmtree(out)
            limit = (120 if split == "train" else 60) if a.smoke else None
            shifts = a.shifts if split == "train" else 0  # augmented copies train the LM; the probe skips them
            cfg = TokenizeConfig(tokenizer=str(tok), data=spec, out=str(out), split=split, limit=limit, progress=False,
                                 shifts=shifts, max_shift=a.max_shift)  # fmt: skip
            paths = clock.run(f"tokenize_{split}", lambda cfg=cfg: tokenize_dataset(cfg))
            (out / "DONE").write_text("\n".join(str(p) for p in paths) + "\n")

    vim = folder / "vim" / "final"
    if not (vim / "model.safetensors").exists():
        args = ["train-lm", "--config", str(VIM_RECIPE), "--shards", str(shard_dirs["train"]), "--val-shards",
                str(shard_dirs["val"]), "--out-dir", str(folder / "vim"), *(dotted(SMOKE_VIM) if a.smoke else []),
                *[x for kv in a.lm_set for x in ("--set", kv)]]  # fmt: skip
        clock.run("train_lm", lambda: vimtool(args, folder / "train_lm.log", a.threads))

    report_path = folder / "probe" / "probe.json"
    if not report_path.exists():
        from vimtool.probe import ProbeConfig, probe

        cfg = ProbeConfig(checkpoint=str(vim), shards=[str(shard_dirs["train"])], val_shards=[str(shard_dirs["val"])],
                          out=str(folder / "probe"), device="cpu", pixel_classifier=False,
                          max_iter=50 if a.smoke else 200)  # fmt: skip
        clock.run("probe", lambda: probe(cfg))
    record = clock.run("predictions", lambda: predictions(vim, shard_dirs, folder / "probe", a))
    record.update(fold=k, spec=spec, times=clock.times)
    tmp = preds.with_name(".tmp-preds.json")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(preds)
    return preds


def predictions(vim: Path, shard_dirs: dict[str, Path], probe_dir: Path, a) -> dict:
    """Per held-out digit: its label, and the class each block's head / the pixel head / the token-bag head gives."""
    import torch

    from vimtool.checkpoint import load_model, read_config
    from vimtool.probe import fit_softmax, labelled_rows, lm_block_features, load_probe_head, predict_proba
    from vimtool.sampling.decode import load_paired_tokenizer

    report = json.loads((probe_dir / "probe.json").read_text())
    settings = report["settings"]
    keep = settings.get("augmented_rows", True)  # the rows probe() fit on (before the option: every row)
    tokens, labels, _, _ = labelled_rows([str(shard_dirs["train"])], "token shard", keep)
    vtok, vlab, _, ids = labelled_rows([str(shard_dirs["val"])], "validation token shard", keep)
    lm = load_model(vim).eval()
    blocks = list(range(1, report["depth"] + 1))
    ftrain = lm_block_features(lm, tokens, blocks, settings["batch_size"])
    fval = lm_block_features(lm, vtok, blocks, settings["batch_size"])
    pred: dict[str, list[int]] = {}
    for b in blocks:  # the probe's head for block b, refit exactly as probe() fit it (same rows, L2, iterations)
        head = fit_softmax(ftrain[b], labels, report["num_classes"], report["l2"][f"block{b}"], settings["max_iter"])
        p = predict_proba(head, fval[b]).argmax(1)
        acc = float((p == vlab).float().mean())
        if abs(acc - report["top1"][f"block{b}"]) > 1e-9:  # same math, other run: should never differ
            print(
                f"  warning: block {b} refit {acc:.4f} vs probe.json {report['top1'][f'block{b}']:.4f}", file=sys.stderr
            )
        pred[f"block{b}"] = p.tolist()
    tokenizer, _ = load_paired_tokenizer(read_config(vim), None, str(vim), torch.device("cpu"))
    for kind in report["baselines"]:
        head = load_probe_head(probe_dir / f"head_{kind}")
        pred[kind] = head.probabilities(vtok, tokenizer=tokenizer).argmax(1).tolist()
    return {"source_ids": ids, "labels": vlab.tolist(), "pred": pred, "depth": report["depth"],
            "block_picked_on_train": report["block_picked_on_train"], "best_block": report["best_block"],
            "top1": report["top1"], "baselines": report["baselines"], "n_train": report["n_train"], "n_val": report["n_val"]}  # fmt: skip


def add_raw_pixels(record: dict, folder: Path) -> bool:
    """Give a fold's record the raw-pixel probe (the ORIGINAL digits behind the shard rows, `vimtool.probe`'s
    raw_pixels baseline), fit as `probe` fits a baseline (L2 picked on a tenth of the training rows from the same
    grid, same iterations); per held-out digit in the order of `pred`. False when it was there already."""
    if "raw_pixels" in record["pred"]:
        return False
    from vimtool.probe import fit_probe, labelled_rows, predict_proba, raw_pixel_features

    report = json.loads((folder / "probe" / "probe.json").read_text())
    settings = report["settings"]
    size = int(json.loads((folder / "tok" / "final" / "config.json").read_text())["config"]["image_size"])
    shards = {s: str(folder / "shards" / s) for s in ("train", "val")}
    keep = settings.get("augmented_rows", True)  # the rows probe() fit on (before the option: every row)
    # labelled_rows resolves the folder and skips copies as raw_pixel_features does: the same rows, same order
    _, labels, _, _ = labelled_rows([shards["train"]], "token shard", keep)
    xtr = raw_pixel_features([shards["train"]], size, "token shard", keep)
    xva = raw_pixel_features([shards["val"]], size, "validation token shard", keep)
    head, l2 = fit_probe(xtr, labels, int(report["num_classes"]), settings["l2"], settings["max_iter"])
    pred = predict_proba(head, xva).argmax(1).tolist()
    record["pred"]["raw_pixels"] = pred
    record["baselines"]["raw_pixels"] = sum(p == y for p, y in zip(pred, record["labels"])) / len(pred)
    record["raw_pixels_l2"] = l2
    return True


def pool(records: list[dict]) -> dict:
    """Pooled held-out top-1 per feature set, the training-row pick, and the McNemar tests against the reference
    (raw pixels when every fold has them, else the decoded pixels)."""
    depth = records[0]["depth"]
    ref = reference(records)
    keys = [f"block{b}" for b in range(1, depth + 1)] + list(records[0]["baselines"])
    ok = {k: [p == y for r in records for p, y in zip(r["pred"][k], r["labels"])] for k in keys}
    picked_ok = [p == y for r in records for p, y in zip(r["pred"][f"block{r['block_picked_on_train']}"], r["labels"])]
    n = len(picked_ok)
    top1 = {k: sum(v) / n for k, v in ok.items()}
    best = max(range(1, depth + 1), key=lambda b: top1[f"block{b}"])
    ids = [i for r in records for i in r["source_ids"]]
    return {"n": n, "distinct_digits": len(set(ids)), "folds": [r["fold"] for r in records], "top1": top1,
            "best_block": best, "picked_top1": sum(picked_ok) / n, "reference": ref,
            "best_vs_ref": fx.mcnemar(ok[f"block{best}"], ok[ref]) if ref else None,
            "picked_vs_ref": fx.mcnemar(picked_ok, ok[ref]) if ref else None,
            # every block against the reference (six tests: read with a multiple-comparison eye; json only)
            "blocks_vs_ref": {f"block{b}": fx.mcnemar(ok[f"block{b}"], ok[ref]) for b in range(1, depth + 1)}
            if ref else None}  # fmt: skip


def reference(records: list[dict]) -> str | None:
    """What the probe is tested against: raw pixels where every fold has them, else decoded pixels."""
    for kind in ("raw_pixels", "pixels"):
        if all(kind in r["pred"] for r in records):
            return kind
    return None


def last_eval(metrics: Path) -> dict:
    """The last evaluation line of a run's metrics.jsonl ({} when there is none)."""
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if '"eval/' in x] if metrics.exists() else []
    return {k.split("/", 1)[1]: v for k, v in lines[-1].items() if k.startswith("eval/")} if lines else {}


def fold_summary(r: dict, root: Path) -> dict:
    """A fold's record without its per-digit lists, plus its own McNemar tests (picked / best block vs pixels)
    and the last evaluation of its tokenizer (PSNR, codebook usage) and VIM (held-out bits per token)."""
    out = {k: v for k, v in r.items() if k not in ("pred", "labels", "source_ids")}
    folder = root / f"G5_fold{r['fold']}"
    out["tokenizer_eval"], out["vim_eval"] = (
        last_eval(folder / "tok" / "metrics.jsonl"),
        last_eval(folder / "vim" / "metrics.jsonl"),
    )
    ref = reference([r])
    if ref:
        px = [p == y for p, y in zip(r["pred"][ref], r["labels"])]
        for name, block in (("picked_vs_ref", r["block_picked_on_train"]), ("best_vs_ref", r["best_block"])):
            out[name] = fx.mcnemar([p == y for p, y in zip(r["pred"][f"block{block}"], r["labels"])], px)
    return out


def write_report(records: list[dict], a, title_extra: str = "") -> Path:
    pooled = pool(records)
    depth = records[0]["depth"]
    folds = [fold_summary(r, Path(a.runs)) for r in records]
    header = ["fold", "held out", *[f"block {b}" for b in range(1, depth + 1)], "raw pixels", "decoded pixels", "tokens", "best block",
              "picked on train", "tok PSNR / usage", "VIM bits/tok", "CPU min"]  # fmt: skip

    def pct(x):
        return f"{100 * x:.1f}"

    rows = []
    for r, f in zip(records, folds):
        pick = r["block_picked_on_train"]
        te, ve = f["tokenizer_eval"], f["vim_eval"]
        tok = f"{te['psnr']:.2f} dB / {100 * te['codebook_usage']:.0f}%" if "psnr" in te else ""
        bits = f"{ve['val_bits_per_token']:.3f}" if "val_bits_per_token" in ve else ""
        cpu = sum(t["cpu_s"] for t in r["times"].values()) / 60
        rows.append([str(r["fold"]), r["n_val"], *[pct(r["top1"][f"block{b}"]) for b in range(1, depth + 1)],
                     pct(r["baselines"].get("raw_pixels", 0)), pct(r["baselines"].get("pixels", 0)),
                     pct(r["baselines"].get("tokens", 0)), str(r["best_block"]),
                     f"{pick}: {pct(r['top1'][f'block{pick}'])}", tok, bits, f"{cpu:.1f}"])  # fmt: skip
    t = pooled["top1"]
    rows.append(["pooled", pooled["n"], *[pct(t[f"block{b}"]) for b in range(1, depth + 1)], pct(t.get("raw_pixels", 0)),
                 pct(t.get("pixels", 0)),
                 pct(t.get("tokens", 0)), str(pooled["best_block"]), f"per fold: {pct(pooled['picked_top1'])}", "", "",
                 f"{sum(sum(x['cpu_s'] for x in r['times'].values()) for r in records) / 60:.1f}"])  # fmt: skip
    tests = []
    ref = {"raw_pixels": "raw pixels", "pixels": "decoded pixels"}.get(pooled["reference"])
    for name, key in (("pooled best block", "best_vs_ref"), ("block picked on train rows", "picked_vs_ref")):
        m = pooled[key]
        if m:
            tests.append(f"{name} vs {ref}: +{m['b']}/-{m['c']} digits, McNemar exact p = {m['p']:.3g}")
    title = (
        f"VIM linear probe, {len(records)}-fold cross-validation on mnist5k ({pooled['n']} held-out digits, "
        f"{pooled['distinct_digits']} distinct; top-1 %){title_extra}"
    )
    name = ("smoke_" if a.smoke else "") + "probe_kfold"
    path = write_results(name, header, rows, a.out, title=title,
                         extra={"pooled": pooled, "tests": tests, "folds": folds,
                                "args": vars(a)})  # fmt: skip
    md = Path(a.out) / f"{name}.md"
    md.write_text(md.read_text() + "\n" + "\n".join(f"- {s}" for s in tests) + "\n")
    print("\n".join(tests))
    return path


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--folds", default=None, help="comma-separated folds to run (default: all, 0..1/val_fraction-1)")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="width of a fold (0.2: 5 folds of ~1,000 digits)")
    ap.add_argument("--runs", default=str(fx.REPO / "runs"), help="where the folds' folders go (G5_fold{k}/)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: pool the folds that have finished")
    ap.add_argument(
        "--tokenizer-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for train-tokenizer (a variant study: use its own --runs and --out)",
    )
    ap.add_argument(
        "--lm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for train-lm (a variant study: use its own --runs and --out)",
    )
    ap.add_argument(
        "--shifts",
        type=int,
        default=0,
        help="tokenize each training digit with K shifted copies too "
        "(tokenize-dataset --shifts: they train the VIM; the probe fits on the originals)",
    )
    ap.add_argument("--max-shift", type=int, default=2, help="tokenize-dataset --max-shift for --shifts")
    a = setup(ap.parse_args())
    fx.quiet()
    n_folds = int(1 / a.val_fraction + 1e-9)
    folds = [int(f) for f in a.folds.split(",")] if a.folds else list(range(n_folds))
    tmp = None
    if a.smoke:
        folds = [int(f) for f in a.folds.split(",")] if a.folds else [0]
        tmp = Path(tempfile.mkdtemp(prefix="study_probe_kfold_"))
        a.runs = str(tmp)
    root = Path(a.runs)
    done = []
    for k in folds:
        path = root / f"G5_fold{k}" / "preds.json"
        if a.report_only:
            if path.exists():
                done.append(path)
            continue
        path = run_fold(k, root, a)
        if path is not None:
            done.append(path)
    if not done:
        raise SystemExit(f"no finished fold under {root} (G5_fold*/preds.json); run without --report-only first")
    records = []
    for p in done:
        r = json.loads(p.read_text())
        if add_raw_pixels(r, p.parent):
            tmp_p = p.with_name(".tmp-preds.json")
            tmp_p.write_text(json.dumps(r) + "\n")
            tmp_p.replace(p)
        records.append(r)
    records.sort(key=lambda r: r["fold"])
    missing = sorted(set(range(n_folds)) - {r["fold"] for r in records})
    write_report(records, a, f"; folds missing: {missing}" if missing and not a.smoke else "")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
