"""VIM's linear probe at small scale: top-1 per block of a frozen VIM on mnist5k tokens, and where the best block is.

    python bench/studies/probe.py                          # trains an unconditional tiny VIM (400 steps), probes all blocks
    python bench/studies/probe.py --checkpoint runs/vim_mnist/final    # probe an existing VIM instead
    python bench/studies/probe.py --smoke                  # seconds: a micro VIM, 4 steps, 40 held-out digits
    # several VIMs side by side on the recipes' shards (4,482 train / 518 held-out digits; docs/BENCHMARKS.md 5):
    python bench/studies/probe.py --checkpoint runs/vim_mnist/final --checkpoint runs/vim_mnist_uncond/final \
        --shards runs/vim_mnist_shards/train --val-shards runs/vim_mnist_shards/val

The claim (VIM, arXiv 2110.04627, section 4.3 / Table 5): features averaged over the tokens
of an intermediate block classify better than those of the last block (the best block sits around the middle of
the stack), and beat a probe on raw pixels. Protocol: `vimtool.probe.probe` (the `vimtool probe` command): a
softmax classifier per block on features of the training rows, top-1 on held-out rows (--val-shards, else 10% of
the mnist5k training split, a fixed seeded draw), with the same classifier on raw pixels and on a bag of token ids
as baselines (computed once: every checkpoint is probed on the same rows).
The VIM trained here is unconditional (the paper's probe setting) through `vimtool.train.lm.train_lm`.
Writes bench/studies/results/probe.{json,md,png}.
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


def train_vim(shards: list[Path], out_dir: Path, a) -> Path:
    from vimtool.train.lm import LMRunConfig, train_lm

    cfg = load_config(LMRunConfig, None, {
        "shards": [str(s) for s in shards], "size": a.size, "conditional": "no", "val_fraction": 0.05,
        "model": {"dropout": 0.0} | ({"dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64} if a.smoke else {}),
        "train": {"out_dir": str(out_dir), "steps": a.steps, "batch_size": a.batch, "lr": a.lr, "min_lr": a.lr / 10,
                  "warmup_steps": max(1, a.steps // 20), "schedule": "cosine", "eval_every": a.steps, "save_every": 0,
                  "log_every": max(1, a.steps // 10), "progress": False, "seed": 0, "weight_decay": 0.0},
    })  # fmt: skip
    return Path(train_lm(cfg))


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        help="a VIM trained on mnist5k tokens (repeatable: probed side by side; default: train one here)",
    )
    ap.add_argument(
        "--shards", action="append", default=None, help="labelled token shards (default: tokenize mnist5k train)"
    )
    ap.add_argument("--val-shards", action="append", default=None, help="held-out shards (default: 10%% of --shards)")
    ap.add_argument("--tokenizer", default=None, help="default: runs/tok_mnist/final if present, else train one")
    ap.add_argument("--tokenizer-steps", type=int, default=1000)
    ap.add_argument("--size", default="tiny", help="VIM size when training here (tiny: width 128, 6 blocks)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--max-iter", type=int, default=300, help="L-BFGS iterations per probe (vimtool probe's default: 200)"
    )
    ap.add_argument("--work", default=None, help="folder for the run (default: a temp folder, deleted)")
    a = setup(ap.parse_args())
    fx.quiet()
    limit = None
    if a.smoke:
        a.steps, a.batch, a.tokenizer_steps, limit = 4, 8, 4, 120
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="study_probe_"))
    default_tok = fx.REPO / "runs" / "tok_mnist" / "final"
    given = a.tokenizer or (str(default_tok) if not a.smoke and (default_tok / "model.safetensors").exists() else None)
    if a.checkpoint:  # probe with the tokenizer the (first) checkpoint records
        meta = json.loads((Path(a.checkpoint[0]) / "config.json").read_text())
        given = a.tokenizer or meta.get("tokenizer_path") or given
    tok = fx.tokenizer("mnist5k", a.tokenizer_steps, fx.CACHE / ("smoke" if a.smoke else ""), given)
    shards = [Path(s) for s in a.shards] if a.shards else fx.shards(tok, "mnist5k", "train", limit=limit)
    if a.smoke and not a.val_shards:  # held-out shards, so that CI runs the paired test too
        a.val_shards = [str(s) for s in fx.shards(tok, "mnist5k", "val", fx.CACHE / "smoke", limit=40)]
    t0 = time.perf_counter()
    ckpts = [Path(c) for c in a.checkpoint] if a.checkpoint else [train_vim(shards, work / "vim", a)]
    train_s = time.perf_counter() - t0

    from vimtool.probe import ProbeConfig, probe

    t0 = time.perf_counter()
    reports = []
    for i, ckpt in enumerate(ckpts):  # baselines once: they read the same rows whatever the LM
        paths = probe(ProbeConfig(checkpoint=str(ckpt), shards=[str(s) for s in shards], val_shards=a.val_shards or [],
                                  out=str(work / f"probe{i}"), device="cpu", max_iter=50 if a.smoke else a.max_iter,
                                  baselines=["pixels", "tokens"] if i == 0 else [], pixel_classifier=False))  # fmt: skip
        reports.append(json.loads(Path(paths[0]).read_text()))
    probe_s = time.perf_counter() - t0
    names = [_label(c) for c in ckpts]
    paired = {}
    if a.val_shards:  # the same held-out digits for every head: a paired test of best block vs raw pixels
        for i, (n, ckpt) in enumerate(zip(names, ckpts)):
            paired[n] = paired_vs_pixels(
                ckpt, work / f"probe{i}" / "head_best", work / "probe0" / "head_pixels", a.val_shards
            )
    depth = max(r["depth"] for r in reports)
    rows = [[f"block {b}", *[_cell(r, b) for r in reports]] for b in range(1, depth + 1)]
    rows += [[f"raw {k}", f"{100 * v:.1f}%", *[""] * (len(reports) - 1)] for k, v in reports[0]["baselines"].items()]
    rep = reports[0]
    bests = ", ".join(
        f"{n}: block {r['best_block']} of {r['depth']} ({100 * r['best_top1']:.1f}%)" for n, r in zip(names, reports)
    )
    what = "given" if a.checkpoint else f"{a.size}, {a.steps} steps"
    title = (
        f"VIM linear probe on mnist5k ({rep['n_train']} train / {rep['n_val']} held-out rows), VIM {what}; best {bests}"
    )
    prefix = "smoke_" if a.smoke else ""
    rows += [["best vs pixels", *[_paired_cell(paired.get(n)) for n in names]]] if paired else []
    # the block chosen on a tenth of the training rows (not on the held-out digits): an unbiased held-out number
    rows += [["picked on train", *[_picked_cell(r) for r in reports]]]
    write_results(f"{prefix}probe", ["features", *names], rows, a.out, title=title,
                  extra={"reports": dict(zip(names, reports)), "paired_vs_pixels": paired, "train_seconds": train_s,
                         "probe_seconds": probe_s, "args": vars(a)})  # fmt: skip
    if paired:
        print(
            "best vs pixels: +b/-c = held-out digits only the best block's head / only the raw-pixel head gets right; "
            "p = exact two-sided McNemar (sign) test. The best block is picked on these same digits (optimistic); "
            "'picked on train' = the block that scores best on a tenth of the training rows, and its held-out top-1."
        )
    series = {}
    for n, r in zip(names, reports):
        blocks = list(range(1, r["depth"] + 1))
        series[f"{n} (best: block {r['best_block']})"] = (blocks, [100 * r["top1"][f"block{b}"] for b in blocks])
    for k, v in rep["baselines"].items():
        series[f"raw {k}"] = ([1, depth], [100 * v] * 2)
    png = plot_lines(Path(a.out) / f"{prefix}probe.png", series, "block (1 = first)", "held-out top-1 (%)",
                     "Linear probe per block (held-out digits)")  # fmt: skip
    if png:
        print(f"plot: {png}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


def paired_vs_pixels(ckpt: Path, lm_head: Path, pixel_head: Path, val_shards: list[str]) -> dict:
    """McNemar's exact test of two heads on the same held-out digits: b = only the LM head right, c = only pixels."""
    import torch

    from vimtool.checkpoint import load_model, read_config
    from vimtool.data.shards import load_token_table
    from vimtool.probe import load_probe_head
    from vimtool.sampling.decode import load_paired_tokenizer

    tokens, labels, _, _ = load_token_table(val_shards)
    tokenizer, _ = load_paired_tokenizer(read_config(ckpt), None, str(ckpt), torch.device("cpu"))
    lm_ok = load_probe_head(lm_head).probabilities(tokens, lm=load_model(ckpt)).argmax(1) == labels
    px_ok = load_probe_head(pixel_head).probabilities(tokens, tokenizer=tokenizer).argmax(1) == labels
    return {
        "n": len(labels),
        "lm_top1": float(lm_ok.float().mean()),
        "pixels_top1": float(px_ok.float().mean()),
        **fx.mcnemar(lm_ok.tolist(), px_ok.tolist()),
    }


def _paired_cell(t: dict | None) -> str:
    return "" if t is None else f"+{t['b']}/-{t['c']} (p {t['p']:.2f})"


def _picked_cell(report: dict) -> str:
    b = report.get("block_picked_on_train")
    return "" if b is None else f"block {b}: {100 * report['picked_top1']:.1f}%"


def _label(ckpt: Path) -> str:
    """runs/vim_mnist/final -> vim_mnist, runs/x/checkpoints/step_000300 -> x@step_000300 (the run folder names it)."""
    if ckpt.name in ("final", "latest"):
        return ckpt.parent.name
    return f"{ckpt.parent.parent.name}@{ckpt.name}" if ckpt.parent.name == "checkpoints" else ckpt.name


def _cell(report: dict, block: int) -> str:
    acc = report["top1"].get(f"block{block}")
    return "" if acc is None else f"{100 * acc:.1f}%" + (" *" if block == report["best_block"] else "")


if __name__ == "__main__":
    main()
