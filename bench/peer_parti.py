"""Time the peer `parti-pytorch` (lucidrains, PyPI 0.2.0) in ITS OWN virtual environment; print one JSON line.

Run by bench/bench_peers.py as `bench/.peer-venv/bin/python bench/peer_parti.py ...` (it never imports vimtool,
and vimtool never imports it). By hand:

    HF_HUB_OFFLINE=1 bench/.peer-venv/bin/python bench/peer_parti.py sample --tokens 256 --batch 4
    HF_HUB_OFFLINE=1 bench/.peer-venv/bin/python bench/peer_parti.py train --tokens 256 --batch 8

How the peer is run (its code untouched; three things are bypassed here, in this process only):
- torchvision 0.28 (pulled in by parti-pytorch) registers fake kernels for its compiled ops at import; beside a
  CPU-only torch those ops do not exist and the import fails ("operator torchvision::nms does not exist"). The peer
  uses only `torchvision.transforms`, so the one module that does the registration is pre-seeded empty.
- Its constructor calls `get_encoded_dim(t5_name)` (a Hub download of the T5 config) even when `text_embed_dim`
  is given (`default()` evaluates both arguments): that lookup is replaced by the given width.
- Its constructor reads the grid side from `vae.get_encoded_fmap_size` even when only `vae_codebook_size` is
  given, so a stub VAE module supplies the grid; it is removed after construction (`generate` then returns the
  token ids instead of decoding them, which is what vimtool's sampler is timed on too).
- The text: `generate(texts)` encodes the prompts with a T5 it downloads; here `encode_texts` returns fixed
  random embeddings (B, text_len, text_embed_dim) and a full mask. The T5 pass is outside the timed loop for the
  peer; vimtool's own text encoder stays inside its timing (a cost the peer is spared).

sample: `Parti.generate(texts, cond_scale, filter_thres=0.9)`, the peer's own loop -- each of the T steps runs
`forward_with_cond_scale`, i.e. two full forward passes (conditional, then null) over the whole prefix. Timed as
median wall seconds of `--repeats` full calls after a warm-up of a few forward passes. With `--estimate K`, the
full loop is NOT run: the cost of one step is timed at K prefix lengths spread over [0, T) (median of repeats
each) and summed over all T steps by linear interpolation (a step's cost is affine in the prefix length plus a
small quadratic attention term; `bench_peers.py` checks the estimate against a full run at a length where both fit).
train: one step = `parti(text_token_embeds=..., image_token_ids=..., return_loss=True)`, backward, Adam step
(the peer's README training call), median over `--repeats` after a warm-up step (`--clock cpu`: CPU seconds); model FLOPs of a step counted by
torch.utils.flop_counter in this process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import types

# torchvision's fake-kernel registrations fail beside a CPU-only torch; the peer never uses those ops.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import parti_pytorch.parti_pytorch as peer  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

CLOCK = [time.perf_counter]  # --clock cpu: time.process_time (this process's CPU seconds; needs 1 thread)


class _GridStub(nn.Module):
    """Stands in for the VAE at construction: the peer reads codebook size, image size and grid side from it."""

    def __init__(self, side: int, codebook_size: int) -> None:
        super().__init__()
        self.codebook_size, self.image_size, self.side = codebook_size, side, side
        self.anchor = nn.Parameter(torch.zeros(1))  # the peer moves itself to next(vae.parameters()).device

    def get_encoded_fmap_size(self, image_size: int) -> int:
        return self.side


def build(a) -> peer.Parti:
    side = math.isqrt(a.tokens)
    if side * side != a.tokens:
        raise SystemExit(f"--tokens must be a square (the peer's grid is square), got {a.tokens}")
    peer.get_encoded_dim = lambda name: a.dim  # no Hub lookup of the T5 config
    torch.manual_seed(0)
    model = peer.Parti(dim=a.dim, depth=a.depth, heads=a.heads, dim_head=a.dim // a.heads, text_embed_dim=a.dim,
                       vae=_GridStub(side, a.vocab), cond_drop_prob=0.25, max_text_len=a.text_len)  # fmt: skip
    model.vae = None  # generate() returns token ids; nothing else of the VAE is used
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(a.batch, a.text_len, a.dim, generator=g)

    def encode_texts(texts, output_device=None):  # stands in for the T5 encoder (see the module docstring)
        n = len(texts)
        return embeds[:n].to(output_device), torch.ones(n, a.text_len, dtype=torch.bool, device=output_device)

    model.encode_texts = encode_texts
    model.embeds = embeds
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_sample(a) -> dict:
    model = build(a).eval()
    texts = ["a prompt"] * a.batch
    emb, mask = model.encode_texts(texts)

    def step(prefix_len: int) -> float:
        ids = torch.randint(0, a.vocab, (a.batch, prefix_len))
        t0 = CLOCK[0]()
        with torch.no_grad():
            model.forward_with_cond_scale(
                text_token_embeds=emb, text_mask=mask, image_token_ids=ids, cond_scale=a.guidance
            )
        return CLOCK[0]() - t0

    for n in (0, a.tokens // 2, a.tokens - 1):  # warm-up: allocator, oneDNN kernels, at short and long prefixes
        step(n)
    out = {"peer": "parti-pytorch", "mode": "sample", "tokens": a.tokens, "batch": a.batch, "dim": a.dim, "depth": a.depth,
           "heads": a.heads, "vocab": a.vocab, "guidance": a.guidance, "params": count_params(model),
           "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    if a.estimate:
        points = sorted({round(i * (a.tokens - 1) / (a.estimate - 1)) for i in range(a.estimate)})
        cost = {n: statistics.median(step(n) for _ in range(a.repeats)) for n in points}
        total = 0.0
        for t in range(a.tokens):  # step t feeds a prefix of t tokens: interpolate between the timed lengths
            hi = next(p for p in points if p >= t)
            lo = max(p for p in points if p <= t)
            w = 0.0 if hi == lo else (t - lo) / (hi - lo)
            total += (1 - w) * cost[lo] + w * cost[hi]
        out.update(
            seconds=total,
            method=f"estimated from {len(points)} timed steps",
            step_seconds={str(k): v for k, v in cost.items()},
        )
    else:
        times = []
        for r in range(a.repeats):
            torch.manual_seed(r)
            t0 = CLOCK[0]()
            ids = model.generate(texts, cond_scale=a.guidance, filter_thres=0.9)
            times.append(CLOCK[0]() - t0)
        assert ids.shape == (a.batch, math.isqrt(a.tokens), math.isqrt(a.tokens)), ids.shape
        out.update(seconds=statistics.median(times), times=times, method=f"median of {a.repeats} full generate() calls")
    out["tokens_per_s"] = a.batch * a.tokens / out["seconds"]
    return out


def run_train(a) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model = build(a).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)  # the peer ships no trainer for Parti; plain Adam
    ids = torch.randint(0, a.vocab, (a.batch, a.tokens))
    emb = model.embeds[: a.batch]
    mask = torch.ones(a.batch, a.text_len, dtype=torch.bool)

    def step() -> float:
        t0 = CLOCK[0]()
        loss = model(text_token_embeds=emb, text_mask=mask, image_token_ids=ids, return_loss=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return CLOCK[0]() - t0

    with FlopCounterMode(display=False) as counter:  # one step's forward + backward FLOPs (also the warm-up)
        loss = model(text_token_embeds=emb, text_mask=mask, image_token_ids=ids, return_loss=True)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    step()
    times = [step() for _ in range(a.repeats)]
    sec = statistics.median(times)
    return {"peer": "parti-pytorch", "mode": "train", "tokens": a.tokens, "batch": a.batch, "dim": a.dim, "depth": a.depth,
            "heads": a.heads, "vocab": a.vocab, "params": count_params(model), "step_flops": counter.get_total_flops(),
            "seconds": sec, "times": times, "tokens_per_s": a.batch * a.tokens / sec, "threads": torch.get_num_threads(),
            "torch": torch.__version__}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("sample", "train"))
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tokens", type=int, default=256, help="image tokens (a square: 64, 256, 1024)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--text-len", type=int, default=16)
    ap.add_argument("--guidance", type=float, default=3.0, help="cond_scale (the peer's default is 3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--estimate", type=int, default=0, help="sample: time K prefix lengths instead of the full loop")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.clock == "cpu":
        CLOCK[0] = time.process_time
    out = run_sample(a) if a.mode == "sample" else run_train(a)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
