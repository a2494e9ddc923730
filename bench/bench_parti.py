"""Parti sampling throughput: image tokens/s with classifier-free guidance, KV cache on vs off.

    python bench/bench_parti.py                 # the quickstart's tiny model (8x8 grid), 8 prompts x 4 samples
    python bench/bench_parti.py --size 350M --grid 32 --prompts 1 --samples 2 --device cuda
    python bench/bench_parti.py --smoke         # seconds: the micro model, checks that it all runs

Prints one table. Each row generates `prompts x samples` images (guidance doubles the model batch: conditional
and null rows in one pass) with random weights -- speed does not depend on what the weights say. "cache on"
decodes one position per step with self K/V cached and the prompt's cross K/V computed once; "cache off"
recomputes the whole prefix every step, as a generator without a cache does. tokens/s counts generated image
tokens (not the doubled guidance rows). Each setting runs `--rounds` times and the table shows the best round
(on a shared machine best-of compares the code rather than the neighbours' load) and the median.

Peer comparison (the benchmarks issue): `peer_tokens_per_s()` below is the hook for lucidrains' parti-pytorch
generator at equal model size; it reports "n/a" unless that package is installed and wired in there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from vimtool.data.text import TextTokenizer  # noqa: E402
from vimtool.models.parti import Parti, size_config  # noqa: E402
from vimtool.sampling.logits import SamplingParams  # noqa: E402
from vimtool.sampling.parti import generate  # noqa: E402

PROMPTS = ["a small red circle in the top left", "a large blue square in the center", "a green triangle in the bottom right",
           "a yellow circle to the left of a purple square"]  # fmt: skip


def peer_tokens_per_s(config, prompts: int, samples: int, guidance: float, device: str) -> float | None:
    """Hook: tokens/s of parti-pytorch's generator at the same size, or None when it is not available here."""
    try:
        import parti_pytorch  # noqa: F401
    except ImportError:
        return None
    return (
        None  # to be wired by the benchmarks issue: build parti_pytorch.Parti with `config`'s sizes and time .generate
    )


def run(
    model: Parti, tok: TextTokenizer, prompts: list[str], samples: int, guidance: float, use_cache: bool, rounds: int
) -> list[float]:
    params = SamplingParams(guidance_scale=guidance)
    generate(model, tok, prompts[:1], 1, params, use_cache=use_cache)  # warm-up: first-call allocations, kernels
    rates = []
    for r in range(rounds):
        t0 = time.perf_counter()
        out = generate(
            model, tok, prompts, samples, params, seed=r, batch_size=len(prompts) * samples, use_cache=use_cache
        )
        if out.is_cuda:
            torch.cuda.synchronize()
        rates.append(out.numel() / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="tiny", help="a named Parti size (tiny, micro, 350M, ...)")
    ap.add_argument("--grid", type=int, default=8, help="image token grid side (8 -> 64 tokens; the paper: 32)")
    ap.add_argument("--codebook", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt")
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="micro model, 1 round: seconds")
    a = ap.parse_args()
    if a.smoke:
        a.size, a.grid, a.codebook, a.prompts, a.samples, a.rounds = "micro", 4, 64, 2, 2, 1
    tok = TextTokenizer.train(PROMPTS * 4, vocab_size=300, max_length=32)
    cfg = size_config(
        a.size,
        text_vocab_size=tok.vocab_size,
        codebook_size=a.codebook,
        grid=(a.grid, a.grid),
        max_text_len=32,
        dropout=0.0,
    )
    torch.manual_seed(0)
    model = Parti(cfg).to(a.device).eval()
    prompts = (PROMPTS * a.prompts)[: a.prompts]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Parti {a.size} ({n_params / 1e6:.1f}M params), grid {a.grid}x{a.grid}, {a.prompts} prompts x {a.samples} samples, "
          f"device {a.device}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'setting':<34}{'best tokens/s':>15}{'median':>10}")
    rows = [(f"guidance {a.guidance:.1f}, cache on", a.guidance, True), (f"guidance {a.guidance:.1f}, cache off", a.guidance, False),
            ("no guidance, cache on", 1.0, True)]  # fmt: skip
    best = {}
    for name, g, cache in rows:
        rates = run(model, tok, prompts, a.samples, g, cache, a.rounds)
        best[name] = max(rates)
        print(f"{name:<34}{max(rates):>15.1f}{statistics.median(rates):>10.1f}")
    on, off = best[rows[0][0]], best[rows[1][0]]
    print(f"KV cache speed-up with guidance: {on / off:.2f}x")
    peer = peer_tokens_per_s(cfg, a.prompts, a.samples, a.guidance, a.device)
    print(f"{'parti-pytorch (peer), guidance':<34}{f'{peer:.1f}' if peer else 'n/a':>15}")


if __name__ == "__main__":
    main()
