"""Sampling speed of VIM and Parti: generated tokens/s with the KV cache against recomputing the prefix.

    python bench/bench_sample.py            # width 256, depth 4, batch 8, at 64 (8x8) and 256 (16x16) tokens
    python bench/bench_sample.py --smoke    # seconds: a micro model at 16 and 64 tokens, checks it all runs
    python bench/bench_sample.py --models parti --guidance 1.5 --threads 0   # Parti only, torch's threads

One row per (model, tokens): tokens/s of the sampler (`vimtool.sampling.vim.generate_batch`, or
`vimtool.sampling.parti.generate_batch` with a short random prompt) with `use_cache=True` (prefill, then one
position per step; Parti's cross K/V computed once) and `use_cache=False` (the whole prefix through the model every
step, the naive sampler), the speed-up (median of the per-round ratios: both samplers run in every round), and
whether both produced the same tokens (they must: same seed, same uniforms). Classifier-free guidance is on
(`--guidance`, conditional and null rows in one batch); tokens/s counts generated image tokens, not the doubled
guidance rows. Random weights: speed does not depend on what they say.
Target: >= 10x at 256 tokens. Cost model: uncached decoding runs sum_t t = T^2 / 2 positions of the whole stack
per sequence against T cached ones, so the ratio grows ~linearly with T. The peer comparison at the paper-claim
size is bench/bench_peers.py.
Writes bench/results/sample.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, paired_ratio, paired_rounds, parser, setup, write_results  # noqa: E402
from vimtool.models.parti import Parti  # noqa: E402
from vimtool.models.parti import size_config as parti_size  # noqa: E402
from vimtool.models.vim import VIM  # noqa: E402
from vimtool.models.vim import size_config as vim_size  # noqa: E402
from vimtool.sampling import parti as parti_sampling  # noqa: E402
from vimtool.sampling import vim as vim_sampling  # noqa: E402
from vimtool.sampling.logits import SamplingParams, row_uniforms  # noqa: E402

TEXT_VOCAB, TEXT_LEN = 300, 16


def sampler(kind: str, a, side: int):
    """fn(use_cache) -> token ids of one batch, for a freshly built model of `kind` at a side x side grid."""
    torch.manual_seed(0)
    common = dict(dim=a.dim, heads=a.heads, mlp_dim=4 * a.dim, grid=(side, side), dropout=0.0)
    params = SamplingParams(guidance_scale=a.guidance)
    u = row_uniforms(0, 0, a.batch, side * side)
    if kind == "vim":
        model = VIM(vim_size("micro", depth=a.depth, vocab_size=a.vocab, num_classes=10, **common)).eval()
        labels = torch.arange(a.batch) % 10
        return lambda cache: vim_sampling.generate_batch(model, labels, params, u, use_cache=cache)
    cfg = parti_size("micro", dec_depth=a.depth, enc_depth=1, codebook_size=a.vocab, text_vocab_size=TEXT_VOCAB,
                     max_text_len=TEXT_LEN, **common)  # fmt: skip
    model = Parti(cfg).eval()
    ids = torch.randint(0, TEXT_VOCAB, (a.batch, TEXT_LEN), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(a.batch, TEXT_LEN, dtype=torch.bool)
    return lambda cache: parti_sampling.generate_batch(model, ids, mask, params, u, use_cache=cache)


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--models", default="vim,parti")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--grids", default="8,16", help="grid sides (tokens = side^2)")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    a = setup(ap.parse_args())
    if a.smoke:
        a.dim, a.depth, a.heads, a.vocab, a.batch, a.rounds, a.grids = 32, 2, 2, 64, 2, 1, "4,8"
    rows, timings = [], {}
    for kind in a.models.split(","):
        for side in (int(g) for g in a.grids.split(",")):
            run = sampler(kind, a, side)
            out = {}
            t = paired_rounds({"cached": lambda: out.update(c=run(True)), "uncached": lambda: out.update(u=run(False))},
                              a.rounds)  # fmt: skip
            n = a.batch * side * side
            rows.append([kind, side * side, a.batch, n / t["cached"].median, n / t["uncached"].median,
                         f"{paired_ratio(t['uncached'], t['cached']):.1f}x", bool(torch.equal(out["c"], out["u"]))])  # fmt: skip
            timings[f"{kind}/{side * side}"] = {k: v.as_dict() for k, v in t.items()}
    header = ["model", "tokens", "batch", "KV cache tok/s", "no cache tok/s", "speed-up", "same ids"]
    title = (f"Sampling with guidance {a.guidance}: width {a.dim}, depth {a.depth}, {a.heads} heads, {a.vocab} codes; "
             f"medians of {a.rounds} paired rounds after a warm-up")  # fmt: skip
    write_results("sample", header, rows, a.out, extra={"timings": timings, "args": vars(a)}, title=title)
    if not all(r[-1] for r in rows):
        sys.exit("cached and uncached sampling disagree")


if __name__ == "__main__":
    main()
