"""vimtool against the peer `parti-pytorch`: sampling and training throughput, same run.

    python bench/bench_peers.py                  # width 512, depth 8, 8 heads, 8192 codes; 64/256/1024 tokens
    python bench/bench_peers.py --smoke          # ~1 min: tiny sizes, the whole harness (the peer when its venv exists;
                                                 # --setup-peer creates it)
    python bench/bench_peers.py --no-peer        # vimtool only (no peer venv)
    python bench/bench_peers.py --only sample    # or: --only train

The peer lives in its own virtual environment, bench/.peer-venv (git-ignored), created on first use with
`python -m venv` + `pip install torch==<this torch> parti-pytorch==0.2.0` (~35 s on a fast link, a large download);
it runs in a subprocess, bench/peer_parti.py, which prints JSON. Both sides run on the same torch build with the
same thread count (`--threads`, default 1: on a loaded 2-core machine a 2-thread op waits for both cores at every
OpenMP barrier, which swamps small ops; pass 0 for torch's default). `--clock cpu` times each process's CPU seconds
instead of wall seconds (with one thread: the time the code needs, nearly independent of the neighbours' load; the
matmul rate is then a CPU-time rate too, so MFU compares like with like).

Sampling (item 1): batch `--batch` prompts, classifier-free guidance on (scale 3, the peer's default), top-k of
10% of the codebook (the peer's filter_thres=0.9), random weights (speed does not depend on them). Rows:
- parti-pytorch `Parti.generate` (re-runs the whole prefix every step, two forward passes for guidance);
- vimtool Parti (`vimtool.sampling.parti.generate_batch`: text encoder + decoder with self/cross KV cache,
  conditional and null rows in one batch), decoder depth = the peer's depth, a 1-layer text encoder (the peer
  uses an external T5 whose cost is not timed; vimtool's encoder pass IS inside its time);
- vimtool VIM (`vimtool.sampling.vim.generate_batch`, class-conditional, same guidance): no cross-attention.
Each vimtool sampler runs twice: with fp32 decode weights (the default: fp32 GEMMs from oneDNN-packed weights,
vimtool/sampling/packed_linear.py; the same function as the peer's fp32) and, unless --no-bf16, with bf16 decode
weights (`decode_dtype="bf16"`, an option: not bit-equal). The target is read on the fp32 rows.
Medians of `--repeats` after a warm-up. The peer's full loop takes tens of minutes at 256 tokens and hours at 1024
here, so at lengths in `--peer-estimate` (default 256, 1024) the peer's time is the sum over all T steps of its
per-step cost, timed at several prefix lengths and interpolated (peer_parti.py --estimate); at `--check-estimate`
(default 64) the peer is measured both ways as a check of the method.
Target: vimtool >= 50x the peer at 256 tokens, the gap growing with length.

Training (item 2): one step = forward, cross-entropy, backward, optimizer step, batch `--train-batch`, `--tokens`
256 by default. Model FLOPs of a step are counted by torch.utils.flop_counter in each process (each model's own
useful FLOPs), MFU = FLOPs / step time / the matmul rate of a 1024^3 GEMM burst measured in this run (fp32 for
fp32 rows, bf16 for bf16-autocast rows). Targets: fp32 MFU >= 70%; bf16 >= 1.5x the peer's tokens/s.

Writes bench/results/peers_sampling.{json,md,png} and peers_training.{json,md} (or --out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # runnable from a checkout without installing: python bench/X.py

from bench.harness import RESULTS, bf16_supported, median_seconds, parser, setup, write_results  # noqa: E402
from bench.plots import plot_lines  # noqa: E402
from vimtool.models.parti import Parti  # noqa: E402
from vimtool.models.parti import size_config as parti_size  # noqa: E402
from vimtool.models.vim import VIM  # noqa: E402
from vimtool.models.vim import size_config as vim_size  # noqa: E402
from vimtool.sampling import parti as parti_sampling  # noqa: E402
from vimtool.sampling import vim as vim_sampling  # noqa: E402
from vimtool.sampling.logits import SamplingParams, row_uniforms  # noqa: E402
from vimtool.train.optim import param_groups  # noqa: E402

PEER_VENV = HERE / ".peer-venv"
PEER_PIN = "parti-pytorch==0.2.0"
TEXT_VOCAB = 1000


# ------------------------------------------------------------------------------------------------------ the peer
def peer_python(venv: Path = PEER_VENV, create: bool = True) -> Path | None:
    """The peer venv's python, creating the venv when missing; None when it cannot be had (reported, not fatal)."""
    py = venv / "bin" / "python"
    check = [
        str(py),
        "-c",
        "import sys, types; sys.modules['torchvision._meta_registrations'] = types.ModuleType('x'); import parti_pytorch",
    ]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    if not create:
        return None
    print(
        f"creating the peer venv {venv} ({PEER_PIN}, torch=={torch.__version__.split('+')[0]}): a large download...",
        file=sys.stderr,
    )
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # the torch pin first so pip keeps this process's torch version (a CPU build when that is what we have)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}", PEER_PIN], check=True
        )
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"peer venv could not be created ({e}); peer columns will read n/a", file=sys.stderr)
        return None
    return py if subprocess.run(check, capture_output=True).returncode == 0 else None


def run_peer(py: Path | None, mode: str, timeout: float, **kw) -> dict | None:
    if py is None:
        return None
    cmd = [str(py), str(HERE / "peer_parti.py"), mode] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"peer timed out after {timeout:.0f} s: {' '.join(cmd)}", file=sys.stderr)
        return None
    if res.returncode != 0:
        print(f"peer failed: {' '.join(cmd)}\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- vimtool models
def make_parti(a, tokens: int) -> Parti:
    side = int(tokens**0.5)
    cfg = parti_size("micro", dim=a.dim, heads=a.heads, dec_depth=a.depth, enc_depth=1, mlp_dim=4 * a.dim, dropout=0.0,
                     codebook_size=a.vocab, grid=(side, side), text_vocab_size=TEXT_VOCAB, max_text_len=a.text_len)  # fmt: skip
    torch.manual_seed(0)
    return Parti(cfg)


def make_vim(a, tokens: int) -> VIM:
    side = int(tokens**0.5)
    cfg = vim_size("micro", dim=a.dim, depth=a.depth, heads=a.heads, mlp_dim=4 * a.dim, vocab_size=a.vocab,
                   grid=(side, side), num_classes=10, dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    return VIM(cfg)


def vimtool_sampling(a, tokens: int, dtype: str = "fp32") -> dict[str, float]:
    """Median tokens/s of vimtool's Parti and VIM samplers at `tokens` image tokens (guidance on), with
    `dtype` ("fp32" | "bf16") decode weights."""
    params = SamplingParams(temperature=1.0, top_k=max(1, a.vocab // 10), guidance_scale=a.guidance)
    u = row_uniforms(0, 0, a.batch, tokens)
    parti = make_parti(a, tokens).eval()
    ids = torch.randint(0, TEXT_VOCAB, (a.batch, a.text_len), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(a.batch, a.text_len, dtype=torch.bool)
    t_parti = median_seconds(
        lambda: parti_sampling.generate_batch(parti, ids, mask, params, u, decode_dtype=dtype), a.repeats
    ).median
    vim = make_vim(a, tokens).eval()
    labels = torch.arange(a.batch) % 10
    t_vim = median_seconds(
        lambda: vim_sampling.generate_batch(vim, labels, params, u, decode_dtype=dtype), a.repeats
    ).median
    n = a.batch * tokens
    return {"parti": n / t_parti, "vim": n / t_vim, "parti_params": sum(p.numel() for p in parti.parameters()),
            "vim_params": sum(p.numel() for p in vim.parameters())}  # fmt: skip


def ratio(r: float | None) -> str:
    """'49.6x' (one decimal below 100, so a ratio just under a target never prints as the target), '230x', 'n/a'."""
    return "n/a" if not r else (f"{r:.1f}x" if r < 100 else f"{r:.0f}x")


def bench_sampling(a, py: Path | None) -> None:
    dtypes = ["fp32"] + ([] if a.no_bf16 or not bf16_supported() else ["bf16"])
    rows, peer_json = [], []
    series = {"parti-pytorch": ([], []), "vimtool Parti": ([], []), "vimtool VIM": ([], [])}
    if "bf16" in dtypes:
        series["vimtool Parti, bf16 weights"] = ([], [])
    notes: dict[str, list[str]] = {"vimtool Parti": []}
    for tokens in a.lengths:
        estimate = tokens in a.peer_estimate
        common = dict(dim=a.dim, depth=a.depth, heads=a.heads, vocab=a.vocab, tokens=tokens, batch=a.batch,
                      text_len=a.text_len, guidance=a.guidance, repeats=a.peer_repeats, threads=a.threads, clock=a.clock)  # fmt: skip
        peer = run_peer(py, "sample", a.peer_timeout, estimate=a.estimate_points if estimate else 0, **common)
        peer_tps = peer["tokens_per_s"] if peer else None
        method = ("estimated" if estimate else "measured") if peer else "n/a"
        peer_json.append(peer)
        series["parti-pytorch"][0].append(tokens)
        series["parti-pytorch"][1].append(peer_tps)
        for dtype in dtypes:
            ours = vimtool_sampling(a, tokens, dtype)
            r_parti = ours["parti"] / peer_tps if peer_tps else None
            r_vim = ours["vim"] / peer_tps if peer_tps else None
            rows.append(
                [tokens, a.batch, peer_tps, method, dtype, ours["parti"], ratio(r_parti), ours["vim"], ratio(r_vim)]
            )
            picks = (
                (("vimtool Parti", ours["parti"]), ("vimtool VIM", ours["vim"]))
                if dtype == "fp32"
                else (("vimtool Parti, bf16 weights", ours["parti"]),)
            )
            for name, v in picks:
                series[name][0].append(tokens)
                series[name][1].append(v)
            if dtype == "fp32":
                notes["vimtool Parti"].append(ratio(r_parti) if r_parti else "")
        if tokens in a.check_estimate and py is not None and not estimate:  # the estimate method against a full run
            est = run_peer(py, "sample", a.peer_timeout, estimate=a.estimate_points, **common)
            if est and peer:
                rows.append([tokens, a.batch, est["tokens_per_s"], "estimated (check)", "", None, "", None, ""])
    header = ["tokens", "batch", "parti-pytorch tok/s", "peer timing", "vimtool decode weights", "vimtool Parti tok/s",
              "Parti / peer", "vimtool VIM tok/s", "VIM / peer"]  # fmt: skip
    title = (f"Sampling with guidance {a.guidance}: width {a.dim}, depth {a.depth}, {a.heads} heads, {a.vocab} codes, "
             f"top-k {a.vocab // 10}; medians of {a.repeats} (vimtool) / {a.peer_repeats} (peer) after warm-up")  # fmt: skip
    write_results(
        f"{a.prefix}peers_sampling", header, rows, a.out, extra={"peer": peer_json, "args": vars(a)}, title=title
    )
    png = plot_lines(Path(a.out) / f"{a.prefix}peers_sampling.png", series, "image tokens per sample", "generated tokens/s",
                     f"Sampling, guidance on, width {a.dim} depth {a.depth}, batch {a.batch} (ratios: vimtool Parti / peer)",
                     logx=True, logy=True, annotate=notes)  # fmt: skip
    if png:
        print(f"plot: {png}")


# ------------------------------------------------------------------------------------------------------ training
def matmul_rate(dtype: torch.dtype, repeats: int, n: int = 1024, reps: int = 8) -> float:
    """FLOP/s of square GEMMs in `dtype` (median of repeats): the ceiling MFU is measured against."""
    x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

    def burst():
        for _ in range(reps):
            torch.mm(x, y)

    sec = median_seconds(burst, repeats).median
    return 2 * n**3 * reps / sec


def step_fn(model, kind: str, a, bf16: bool):
    """A closure doing one training step of `model` (kind parti|vim) on a fixed random batch."""
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 3e-4, 0.0), lr=3e-4)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, a.vocab, (a.train_batch, a.tokens), generator=g)
    text = torch.randint(0, TEXT_VOCAB, (a.train_batch, a.text_len), generator=g)
    mask = torch.ones_like(text, dtype=torch.bool)
    labels = torch.arange(a.train_batch) % 10

    def loss_fn():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            if kind == "parti":  # as vimtool/train/t2i.py's train_step
                logits = model(text, mask, tokens)
            else:  # as vimtool/train/lm.py's train_step
                logits = model(tokens[:, :-1], labels)
        return F.cross_entropy(logits.float().transpose(1, 2), tokens)

    def step():
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, loss_fn


def count_flops(loss_fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_fn().backward()
    return counter.get_total_flops()


def bench_training(a, py: Path | None) -> None:
    bf16_ok = not a.no_bf16 and bf16_supported()
    rates = {"fp32": matmul_rate(torch.float32, a.repeats)}
    if bf16_ok:
        rates["bf16"] = matmul_rate(torch.bfloat16, a.repeats)
    peer = run_peer(py, "train", a.peer_timeout, dim=a.dim, depth=a.depth, heads=a.heads, vocab=a.vocab, tokens=a.tokens,
                    batch=a.train_batch, text_len=a.text_len, repeats=a.peer_repeats, threads=a.threads, clock=a.clock)  # fmt: skip
    rows = []
    peer_tps = peer["tokens_per_s"] if peer else None
    if peer:
        mfu = peer["step_flops"] / peer["seconds"] / rates["fp32"]
        rows.append(["parti-pytorch", "fp32", f"{peer['params'] / 1e6:.1f}M", peer["seconds"] * 1e3, peer_tps, "1.00x",
                     peer["step_flops"] / peer["seconds"] / 1e9, rates["fp32"] / 1e9, f"{100 * mfu:.0f}%"])  # fmt: skip
    for kind, make in (("vimtool Parti", make_parti), ("vimtool VIM", make_vim)):
        for dtype in ["fp32"] + (["bf16"] if bf16_ok else []):
            model = make(a, a.tokens)
            step, loss_fn = step_fn(model, "parti" if "Parti" in kind else "vim", a, dtype == "bf16")
            flops = count_flops(loss_fn)
            model.zero_grad(set_to_none=True)
            sec = median_seconds(step, a.repeats).median
            tps = a.train_batch * a.tokens / sec
            mfu = flops / sec / rates[dtype]
            rows.append([kind, dtype, f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M", sec * 1e3, tps,
                         f"{tps / peer_tps:.2f}x" if peer_tps else "n/a", flops / sec / 1e9, rates[dtype] / 1e9, f"{100 * mfu:.0f}%"])  # fmt: skip
    header = ["model", "dtype", "params", "step ms", "tokens/s", "vs peer", "GFLOP/s", "matmul GFLOP/s", "MFU"]
    title = (f"Training step: width {a.dim}, depth {a.depth}, {a.heads} heads, {a.vocab} codes, {a.tokens} tokens, "
             f"batch {a.train_batch}; medians of {a.repeats} (peer {a.peer_repeats}) after a warm-up step")  # fmt: skip
    write_results(f"{a.prefix}peers_training", header, rows, a.out, extra={"peer": peer, "args": vars(a)}, title=title)


def main() -> None:
    ap = parser(__doc__, RESULTS)
    # --clock: cpu by default with one thread (each process's CPU seconds, steady on a loaded machine), else wall
    ap.set_defaults(clock=None)
    ap.add_argument("--only", choices=("sample", "train"), default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip the peer (no venv, peer columns n/a)")
    ap.add_argument(
        "--setup-peer", action="store_true", help="with --smoke: create the peer venv when missing (a large download)"
    )
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--lengths", default="64,256,1024", help="image tokens per sample (squares)")
    ap.add_argument("--batch", type=int, default=4, help="sampling batch (prompts)")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--text-len", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256, help="training sequence length")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--peer-repeats", type=int, default=1, help="full peer runs at 256 tokens take minutes each")
    ap.add_argument(
        "--peer-estimate", default="256,1024", help="lengths where the peer's time is estimated from timed steps"
    )
    ap.add_argument("--check-estimate", default="64", help="lengths where the estimate is also run beside a full run")
    ap.add_argument("--estimate-points", type=int, default=6)
    ap.add_argument("--peer-timeout", type=float, default=3600)
    ap.add_argument("--no-bf16", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.dim, a.depth, a.heads, a.vocab, a.lengths, a.batch, a.tokens, a.train_batch = 32, 2, 2, 64, "16,64", 2, 16, 2
        a.repeats, a.peer_repeats, a.peer_estimate, a.check_estimate, a.estimate_points, a.text_len = (
            1,
            1,
            "64",
            "16",
            3,
            8,
        )
    a.lengths = [int(x) for x in str(a.lengths).split(",") if x]
    a.peer_estimate = {int(x) for x in str(a.peer_estimate).split(",") if x}
    a.check_estimate = {int(x) for x in str(a.check_estimate).split(",") if x}
    if a.threads:
        torch.set_num_threads(a.threads)
    a.threads = torch.get_num_threads()  # the peer subprocess gets the same count
    a.clock = a.clock or ("cpu" if a.threads == 1 else "wall")
    setup(a)
    # a smoke run (CI) uses the peer venv when it is there and never downloads it unless asked
    py = None if a.no_peer else peer_python(create=not a.smoke or a.setup_peer)
    if py is None and not a.no_peer:
        print(
            "parti-pytorch venv not available: peer columns read n/a (run without --smoke, or with --setup-peer)",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    if a.only in (None, "sample"):
        bench_sampling(a, py)
    if a.only in (None, "train"):
        bench_training(a, py)
    print(f"# done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
