"""Training throughput of the causal decoder: tokens/s, MFU, NOBLE overhead.

    python bench/bench_transformer.py            # ~25M-param decoder (width 512, depth 8), seq 256, batch 8
    python bench/bench_transformer.py --smoke    # seconds: a tiny decoder, 2 steps each, checks it all runs
    python bench/bench_transformer.py --ranks "" --no-decode --clock cpu --threads 1 --profile 12
                                                 # the train_mfu table alone, with each dtype's step profiled by op

Prints one table. MFU = model FLOPs per second / a matmul rate measured in this same run: the fastest of four
bursts of 1024^3 matmuls in the same dtype and thread count, each doing a quarter of one step's FLOPs, timed in
every round. Each round runs one training step of every model (rank 0, 32, 64) and the bursts, so the machine's
load hits all of them alike;
the table shows the BEST round of each (the median step too): on a shared machine best-of compares the code with
the hardware rather than with the neighbours' load. `--threads 1` gives the steadiest
numbers on a loaded machine (with 2 threads each op waits for both cores: OpenMP barriers), and with
`--clock cpu` the times are this process's CPU seconds, which the neighbours' load barely changes (tokens/s
then means tokens per CPU-second of one core).
Model FLOPs per token (PaLM appendix B convention): 6 * N_matmul + 12 * depth * seq * width, where N_matmul
counts the weights of every matmul (blocks and output head, not embedding lookups, norms or biases); the
NOBLE rows use the same base count so their MFU drop is their overhead. A training step is forward, backward
and an AdamW step with `vimtool.train.optim.param_groups` (so the NOBLE lr multipliers are in play).
Targets: fp32 MFU >= 70%; bf16 tokens/s >= 1.5x the peer parti-pytorch's 742 tokens/s at this size;
NOBLE rank 32/64 step-time overhead < 10%. A last line times greedy decoding with and without the KV cache.
"step +" is NOBLE's step-time overhead from the best rounds; "step + med" the median over rounds of the same
round's ratio (each round runs both models back to back, so this pairs them under the same load).
`--compile` adds a row per rank under `torch.compile` (what `train.compile` does): "step +" of a compiled NOBLE row
is against the compiled base, and the compiled base row's is against the eager base (what compiling buys it).
`--op-by-op` adds rows running NOBLE's op-by-op forward (`NobleLinear.fused_cosnet = False`: CosNet through autograd
op by op, weights concatenated per call) beside the fused default, in the same rounds; `--ungrouped` adds rows with
the fused per-layer `_CosNetNobleFn` on q, k and v one by one (`Attention.group_qkv = False`) instead of the grouped
q/k/v Function (vimtool/nn/noble_fused.py).
Also writes train_mfu.json: one row per dtype for the base model (NOBLE off, eager) -- tokens/s, MFU and the matmul
rate measured in the same run; `--profile N` adds that model's N costliest ops of one step per dtype (torch.profiler,
self CPU time; shares of the step) to its notes.
"""

from __future__ import annotations

import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, bf16_supported, fmt, now, parser, setup, write_results  # noqa: E402
from vimtool.devices import keep_freed_memory  # noqa: E402
from vimtool.nn import (  # noqa: E402
    CausalDecoder,
    LearnedPos1D,
    NobleConfig,
    NobleLinear,
    noble_param_count,
)
from vimtool.train.optim import param_groups  # noqa: E402

PEER_TOKENS_PER_S = 742.0  # parti-pytorch, 26M decoder, width 512, depth 8, 256 tokens, batch 8, this machine


class BenchLM(nn.Module):
    """Token embedding + learned positions + CausalDecoder + linear head: the VIM shape without class tokens."""

    def __init__(self, vocab: int, seq: int, dim: int, depth: int, heads: int, noble: NobleConfig | None) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.pos = LearnedPos1D(seq, dim)
        self.decoder = CausalDecoder(dim, depth, heads, 4 * dim, noble=noble)
        self.head = nn.Linear(dim, vocab, bias=False)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(ids.shape[1])  # (B, T, D)
        return self.head(self.decoder(x))  # (B, T, V)


def matmul_burst_seconds(dtype: torch.dtype, flops: float, n: int = 1024) -> float:
    """Seconds to do `flops` worth of n^3 matmuls in `dtype`: the same work as a step, in the best GEMM shape."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    reps = max(1, round(flops / (2 * n**3)))
    t0 = now()
    for _ in range(reps):
        torch.mm(a, b)
    return (now() - t0) * flops / (reps * 2 * n**3)


def matmul_params(model: BenchLM) -> int:
    """Weights that take part in matmuls, without NOBLE branches (the base model's FLOP count)."""
    n = model.head.weight.numel()
    for m in model.decoder.modules():
        if isinstance(m, nn.Linear):
            n += m.weight.numel()
    return n


class Trainer:
    """One model with its optimizer and a fixed batch; `step()` returns the seconds of one training step."""

    def __init__(self, model: BenchLM, batch: int, seq: int, vocab: int, bf16: bool, compiled: bool = False) -> None:
        self.model = model.train()
        self.forward = torch.compile(model) if compiled else model  # as train.compile: the same parameters
        self.opt = torch.optim.AdamW(
            param_groups(model, 3e-4, 0.1), lr=3e-4, betas=(0.9, 0.96), fused=True
        )  # as the engine
        ids = torch.randint(0, vocab, (batch, seq + 1))
        self.x, self.y = ids[:, :-1], ids[:, 1:]
        self.bf16 = bf16

    def step(self) -> float:
        t0 = now()
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext():
            logits = self.forward(self.x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), self.y.flatten())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return now() - t0


def profile_step(trainer: Trainer, top: int) -> list[tuple[str, float]]:
    """The `top` ops of one training step by self CPU time, as (op name, share of the step's total)."""
    from torch.profiler import ProfilerActivity, profile  # deferred: only with --profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [(e.key, e.self_cpu_time_total / total) for e in events[:top]]


def decode_seconds(model: BenchLM, batch: int, seq: int, vocab: int) -> tuple[float, float]:
    """(cached, uncached) seconds to run `seq` autoregressive positions (greedy) with and without the KV cache.

    The uncached time runs the full prefix at every 8th length and multiplies by 8 (same sum, an eighth of the
    wait). Both use fp32 eval mode under inference_mode, as a sampler would.
    """
    model.eval()
    ids = torch.randint(0, vocab, (batch, seq))
    with torch.inference_mode():
        cache = model.decoder.new_cache(batch, seq)
        t0 = now()
        for i in range(seq):
            x = model.tok(ids[:, i : i + 1]) + model.pos(1, offset=i)  # (B, 1, D)
            model.head(model.decoder(x, cache=cache)).argmax(-1)
        cached = now() - t0
        t0 = now()
        for n in range(1, seq + 1, 8):
            model(ids[:, :n])[:, -1].argmax(-1)
        uncached = (now() - t0) * 8
    model.train()
    return cached, uncached


def main() -> None:
    ap = parser(__doc__, RESULTS, threads=None)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192, help="codebook size (ViT-VQGAN: 8192)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (each: one step per model + matmul bursts)")
    ap.add_argument("--ranks", default="32,64", help="NOBLE ranks to compare against rank 0")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast rows")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 rows (and the decode line)")
    ap.add_argument("--no-decode", action="store_true", help="skip the cached-vs-uncached decoding line")
    ap.add_argument(
        "--op-by-op",
        action="store_true",
        help="also time NOBLE's op-by-op autograd path (the pre-fusion forward) at each rank",
    )
    ap.add_argument(
        "--ungrouped",
        action="store_true",
        help="also time NOBLE with q, k, v as three fused layers instead of one grouped Function",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time every row under torch.compile (train.compile; NOBLE then runs op by op, fused by inductor)",
    )
    ap.add_argument(
        "--malloc",
        choices=("kept", "default"),
        default="kept",
        help="kept: glibc keeps freed memory (vimtool.devices.keep_freed_memory, what vimtool's training "
        "runs with); default: glibc's own settings (every step page-faults its large tensors anew)",
    )
    ap.add_argument("--name", default="transformer", help="results file name (bench/results/NAME.json/.md)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile one base step per dtype: top N ops")
    args = setup(ap.parse_args())
    malloc = "glibc default"
    if args.malloc == "kept":
        malloc = "freed memory kept" if keep_freed_memory() else "glibc default (not glibc: left alone)"
    if args.smoke:
        args.dim, args.depth, args.heads, args.seq, args.batch, args.vocab = 64, 2, 4, 32, 2, 128
        args.rounds, args.ranks = 2, "8"
    ranks = [0] + [int(r) for r in args.ranks.split(",") if r.strip()]
    extra = ([" ungrouped"] if args.ungrouped else []) + ([" op-by-op"] if args.op_by_op else [])
    variants = [(0, "")] + [(r, v) for r in ranks[1:] for v in ["", *extra]]
    if args.compile:
        variants += [(r, " compiled") for r in ranks]
    dtypes = [False, True] if (not args.no_bf16 and bf16_supported()) else [False]
    if args.no_fp32:
        if dtypes == [False]:
            ap.error("--no-fp32 leaves nothing to run (no bf16 here, or --no-bf16)")
        dtypes, args.no_decode = [True], True

    rows, mfu_rows, profiles = [], [], {}
    for bf16 in dtypes:
        trainers, counts = [], []
        for rank, variant in variants:
            torch.manual_seed(0)
            model = BenchLM(args.vocab, args.seq, args.dim, args.depth, args.heads, NobleConfig(rank=rank))
            for m in model.modules():  # same parameters and math in every variant
                if variant == " op-by-op" and isinstance(m, NobleLinear):
                    m.fused_cosnet = False  # the pre-fusion path: CosNet op by op through autograd
                if variant == " ungrouped" and hasattr(m, "group_qkv"):
                    m.group_qkv = False  # q, k, v as three fused layers, one after the other
            counts.append((noble_param_count(model), noble_param_count(model.decoder)[0]))
            trainers.append(Trainer(model, args.batch, args.seq, args.vocab, bf16, compiled=variant == " compiled"))
        tokens = args.batch * args.seq
        step_flops = tokens * (6 * matmul_params(trainers[0].model) + 12 * args.depth * args.seq * args.dim)
        times: list[list[float]] = [[] for _ in variants]
        bursts = []
        for t in trainers:  # warm-up steps (allocator, autocast, oneDNN kernels; compiling takes two)
            t.step()
            if t.forward is not t.model:
                t.step()
        for _ in range(args.rounds):  # interleaved so the neighbours' load hits every row alike
            for i, t in enumerate(trainers):
                times[i].append(t.step())
            # four short bursts of a quarter of the step's work each, the best one the peak: on a shared cloud CPU
            # the fp32 GEMM rate swung 67-97 GFLOP/s between consecutive 2 s bursts (a slow one overstates MFU)
            dt = torch.bfloat16 if bf16 else torch.float32
            bursts += [4 * matmul_burst_seconds(dt, step_flops / 4) for _ in range(4)]
        rate = step_flops / min(bursts) / 1e9
        dtype = "bf16" if bf16 else "fp32"
        base_best = min(times[0])
        mfu_rows.append([dtype, tokens / base_best, step_flops / base_best / 1e9 / rate, rate])
        if args.profile:
            profiles[dtype] = profile_step(trainers[0], args.profile)
        for (rank, variant), ts, ((total, noble_n), dec_total) in zip(variants, times, counts):
            # compiled NOBLE rows against the compiled base; the compiled base against the eager one
            ref = times[variants.index((0, variant))] if rank and (0, variant) in variants else times[0]
            base, best = min(ref), min(ts)
            achieved = step_flops / best / 1e9
            paired = statistics.median(t / t0 for t, t0 in zip(ts, ref))
            rows.append(
                (
                    "bf16" if bf16 else "fp32",
                    f"{rank}{variant}",
                    f"{dec_total / 1e6:.2f}M / {total / 1e6:.2f}M",
                    f"{100 * noble_n / (total - noble_n):.1f}%" if rank else "-",
                    f"{1000 * best:.0f} / {1000 * statistics.median(ts):.0f}",
                    f"{tokens / best:.0f}",
                    f"{tokens / best / PEER_TOKENS_PER_S:.2f}x",
                    fmt(achieved),  # 3 significant digits: a smoke-size bf16 step can be under 1 GFLOP/s
                    fmt(rate),
                    f"{100 * achieved / rate:.0f}%",
                    f"{100 * (best / base - 1):+.1f}%" if rank or variant else "-",
                    f"{100 * (paired - 1):+.1f}%" if rank or variant else "-",
                )
            )
        if not bf16 and not args.no_decode:
            cached, uncached = decode_seconds(trainers[0].model, args.batch, args.seq, args.vocab)
        del trainers
    head = (
        "dtype",
        "noble r",
        "params dec/all",
        "+params",
        "step ms best/med",
        "tok/s",
        "vs peer",
        "GFLOP/s",
        "matmul",
        "MFU",
        "step +",
        "step + med",
    )
    notes = []
    if not args.no_decode:
        notes.append(
            f"decode (fp32, noble off, batch {args.batch}, {args.seq} positions): KV cache "
            f"{1000 * cached / args.seq:.1f} ms/position, no cache {1000 * uncached / args.seq:.1f} ms/position "
            f"-> {uncached / cached:.1f}x"
        )
    title = (f"Training step of the decoder: width {args.dim}, depth {args.depth}, {args.heads} heads, seq {args.seq}, "
             f"batch {args.batch}, vocab {args.vocab}; {args.rounds} interleaved rounds after a warm-up; malloc: {malloc}")  # fmt: skip
    write_results(args.name, list(head), rows, args.out, extra={"notes": notes, "args": vars(args)}, title=title)
    print("\n".join(notes))
    mfu_notes = [f"{dt} step by op (self CPU time): " + ", ".join(f"{op} {100 * share:.1f}%" for op, share in top)
                 for dt, top in profiles.items()]  # fmt: skip
    write_results("train_mfu", ["dtype", "tokens_per_s", "mfu", "matmul_gflops"], mfu_rows, args.out, title=(
        f"Training MFU of the base decoder (NOBLE off, eager): {title.split(': ', 1)[1]}; best round; MFU against "
        f"the same dtype's matmul rate (GFLOP/s) measured in the same rounds"),
        extra={"notes": mfu_notes, "profiles": profiles, "args": vars(args)})  # fmt: skip
    print("\n".join(mfu_notes))


if __name__ == "__main__":
    main()
