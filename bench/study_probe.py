"""VIM's linear probe at small scale: top-1 per block of a frozen VIM on mnist5k tokens, and where the best block is.

    python bench/study_probe.py                          # trains an unconditional tiny VIM (400 steps), probes all blocks
    python bench/study_probe.py --checkpoint runs/vim_mnist/final    # probe an existing VIM instead
    python bench/study_probe.py --smoke                  # seconds: a micro VIM, 4 steps

The claim (VIM, arXiv 2110.04627, section 4.3 / Table 5; PAPERS.md section 2): features averaged over the tokens
of an intermediate block classify better than those of the last block (the best block sits around the middle of
the stack), and beat a probe on raw pixels. Protocol: `vimtool.probe.probe` (the `vimtool probe` command): a
softmax classifier per block on features of the training rows, top-1 on held-out rows (10% of the mnist5k
training split, a fixed seeded draw), with the same classifier on raw pixels and on a bag of token ids as baselines.
The VIM trained here is unconditional (the paper's probe setting) through `vimtool.train.lm.train_lm`.
Writes bench/results/probe.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import study_fixtures as fx  # noqa: E402
from plots import RESULTS, plot_lines, write_results  # noqa: E402

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--checkpoint", default=None, help="a VIM trained on mnist5k tokens (default: train one here)")
    ap.add_argument("--tokenizer", default=None, help="default: runs/tok_mnist/final if present, else train one")
    ap.add_argument("--tokenizer-steps", type=int, default=1000)
    ap.add_argument("--size", default="tiny", help="VIM size when training here (tiny: width 192, 6 blocks)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--work", default=None, help="folder for the run (default: a temp folder, deleted)")
    a = ap.parse_args()
    fx.quiet(a.threads)
    limit = None
    if a.smoke:
        a.steps, a.batch, a.tokenizer_steps, limit = 4, 8, 4, 120
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="study_probe_"))
    default_tok = fx.REPO / "runs" / "tok_mnist" / "final"
    given = a.tokenizer or (str(default_tok) if not a.smoke and (default_tok / "model.safetensors").exists() else None)
    if a.checkpoint:  # probe with the tokenizer the checkpoint records
        meta = json.loads((Path(a.checkpoint) / "config.json").read_text())
        given = a.tokenizer or meta.get("tokenizer_path") or given
    tok = fx.tokenizer("mnist5k", a.tokenizer_steps, fx.CACHE / ("smoke" if a.smoke else ""), given)
    shards = fx.shards(tok, "mnist5k", "train", limit=limit)
    t0 = time.perf_counter()
    ckpt = Path(a.checkpoint) if a.checkpoint else train_vim(shards, work / "vim", a)
    train_s = time.perf_counter() - t0

    from vimtool.probe import ProbeConfig, probe

    t0 = time.perf_counter()
    paths = probe(ProbeConfig(checkpoint=str(ckpt), shards=[str(s) for s in shards], out=str(work / "probe"), device="cpu",
                              max_iter=50 if a.smoke else 300))  # fmt: skip
    probe_s = time.perf_counter() - t0
    report = json.loads(Path(paths[0]).read_text())
    depth, best = report["depth"], report["best_block"]
    rows = [[f"block {b}", f"{100 * report['top1'][f'block{b}']:.1f}%", "<- best" if b == best else ""] for b in range(1, depth + 1)]
    rows += [[f"raw {k}", f"{100 * v:.1f}%", "baseline"] for k, v in report["baselines"].items()]
    title = (f"VIM linear probe on mnist5k ({report['n_train']} train / {report['n_val']} held-out rows), depth {depth}: "
             f"best block {best} of {depth}; VIM {'given' if a.checkpoint else f'{a.size}, {a.steps} steps'}")  # fmt: skip
    prefix = "smoke_" if a.smoke else ""
    write_results(f"{prefix}probe", ["features", "top-1", ""], rows, a.out, title=title,
                  extra={"report": report, "train_seconds": train_s, "probe_seconds": probe_s, "args": vars(a)})  # fmt: skip
    blocks = list(range(1, depth + 1))
    series = {"VIM block features": (blocks, [100 * report["top1"][f"block{b}"] for b in blocks])}
    for k, v in report["baselines"].items():
        series[f"raw {k}"] = ([1, depth], [100 * v] * 2)
    png = plot_lines(Path(a.out) / f"{prefix}probe.png", series, "block (1 = first)", "held-out top-1 (%)",
                     f"Linear probe per block (best: {best} of {depth})")  # fmt: skip
    if png:
        print(f"plot: {png}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
