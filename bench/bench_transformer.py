"""Training throughput of the causal decoder (issue 9 "Done when"): tokens/s, MFU, NOBLE overhead.

    python bench/bench_transformer.py            # ~25M-param decoder (width 512, depth 8), seq 256, batch 8
    python bench/bench_transformer.py --smoke    # seconds: a tiny decoder, 2 steps each, checks it all runs

Prints one table. MFU = model FLOPs per second / a matmul rate measured in this same run (1024^3 matmuls in the
same dtype, with the same thread count, measured before and after each row). This machine is shared, so both the
step time and the matmul rate are the BEST of several repetitions (the median step is printed too): best-of
compares the code with the hardware rather than with the neighbours' load. `--threads 1` gives the steadiest
numbers on a loaded machine (with 2 threads each op waits for both cores: OpenMP barriers).
Model FLOPs per token (PaLM appendix B convention): 6 * N_matmul + 12 * depth * seq * width, where N_matmul
counts the weights of every matmul (blocks and output head, not embedding lookups, norms or biases); the
NOBLE rows use the same base count so their MFU drop is their overhead. A training step is forward, backward
and an AdamW step with `vimtool.nn.param_groups` (so the NOBLE lr multipliers are in play).
Targets (issue 9): fp32 MFU >= 70%; bf16 tokens/s >= 1.5x the peer parti-pytorch's 742 tokens/s at this size;
NOBLE rank 32/64 step-time overhead < 10%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from vimtool.nn import CausalDecoder, LearnedPos1D, NobleConfig, noble_param_count, param_groups  # noqa: E402

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


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    """Best-of-`reps` rate of an n^3 matmul in `dtype` (GFLOP/s)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def matmul_params(model: BenchLM) -> int:
    """Weights that take part in matmuls, without NOBLE branches (the base model's FLOP count)."""
    n = model.head.weight.numel()
    for m in model.decoder.modules():
        if isinstance(m, nn.Linear):
            n += m.weight.numel()
    return n


def time_training(
    model: BenchLM, batch: int, seq: int, vocab: int, bf16: bool, steps: int, warmup: int
) -> tuple[float, float]:
    """(best, median) seconds per training step (forward + backward + AdamW)."""
    opt = torch.optim.AdamW(param_groups(model, 3e-4, 0.1), lr=3e-4, betas=(0.9, 0.96))
    ids = torch.randint(0, vocab, (batch, seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    model.train()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with ctx:
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks the script runs (seconds)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192, help="codebook size (ViT-VQGAN: 8192)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ranks", default="32,64", help="NOBLE ranks to compare against rank 0")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast rows")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.dim, args.depth, args.heads, args.seq, args.batch, args.vocab = 64, 2, 4, 32, 2, 128
        args.steps, args.warmup, args.ranks = 2, 1, "8"
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    bf16_ok = not args.no_bf16 and _bf16_supported()
    dtypes = [False, True] if bf16_ok else [False]

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; decoder width {args.dim}, depth "
          f"{args.depth}, heads {args.heads}, seq {args.seq}, batch {args.batch}, vocab {args.vocab}")
    rows = []
    base_time: dict[bool, float] = {}
    for bf16 in dtypes:
        for rank in [0, *ranks]:
            torch.manual_seed(0)
            noble = NobleConfig(rank=rank) if rank else None
            model = BenchLM(args.vocab, args.seq, args.dim, args.depth, args.heads, noble)
            total, noble_n = noble_param_count(model)
            dec_total, _ = noble_param_count(model.decoder)
            flops_per_token = 6 * matmul_params(model) + 12 * args.depth * args.seq * args.dim
            rate = matmul_gflops(torch.bfloat16 if bf16 else torch.float32)
            step, median = time_training(model, args.batch, args.seq, args.vocab, bf16, args.steps, args.warmup)
            rate = max(rate, matmul_gflops(torch.bfloat16 if bf16 else torch.float32))  # before and after
            tokens = args.batch * args.seq / step
            achieved = tokens * flops_per_token / 1e9
            if rank == 0:
                base_time[bf16] = step
            rows.append(
                (
                    "bf16" if bf16 else "fp32",
                    rank,
                    f"{dec_total / 1e6:.2f}M / {total / 1e6:.2f}M",
                    f"{100 * noble_n / (total - noble_n):.1f}%" if rank else "-",
                    f"{1000 * step:.0f} / {1000 * median:.0f}",
                    f"{tokens:.0f}",
                    f"{tokens / PEER_TOKENS_PER_S:.2f}x",
                    f"{achieved:.0f}",
                    f"{rate:.0f}",
                    f"{100 * achieved / rate:.0f}%",
                    f"{100 * (step / base_time[bf16] - 1):+.1f}%" if rank else "-",
                )
            )
            del model
    head = ("dtype", "noble r", "params dec/all", "+params", "step ms best/med", "tok/s", "vs peer", "GFLOP/s",
            "matmul", "MFU", "step +")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def _bf16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.mm(torch.randn(8, 8), torch.randn(8, 8))
        return True
    except RuntimeError:
        return False


if __name__ == "__main__":
    main()
