"""From next-token logits to token ids: temperature, top-k, top-p, classifier-free guidance, and the decode loop.

Shared by every autoregressive sampler (VIM in sampling/vim.py, Parti in sampling/parti.py); nothing here knows
which model produced the logits. All functions work on logits of shape (B, V) (one row per sequence).

- `SamplingParams(temperature=1.0, top_k=0, top_p=1.0, guidance_scale=1.0)`: the knobs, validated. Defaults
  are VIM's (docs/PAPERS.md section 2: temperature 1.0, no top-k / top-p); Parti uses `guidance_scale` ~1.2.
  temperature 0 means greedy (argmax), as does top_k 1.
- `guided_logits(cond, uncond, scale)` = u + s (c - u): classifier-free guidance (Parti's eq. for
  G(z) + lambda (G(z, c) - G(z)); Ho & Salimans 2022). scale 1 -> the conditional logits, 0 -> unconditional.
- `filter_logits(logits, top_k, top_p)`: masks everything outside the top-k and the top-p nucleus with -inf.
- `sample_from_logits(logits, params, generator)` -> (B,) ids. Draws ONE uniform per row from `generator` and
  inverts the CDF, so (a) a seed fixes the result, (b) every step consumes the same random numbers whatever
  the filtering, and (c) two code paths whose logits agree up to float rounding (KV-cached vs recomputed)
  pick the same tokens unless a uniform falls within rounding of a CDF boundary.
- `row_uniforms(seed, first_row, rows, num_tokens)`: per-sample random numbers, so sample i of a run does not
  depend on the batch size (pass them as `uniforms=` below).
- `autoregressive_sample(step, batch_size, num_tokens, params, generator, guided=False, uniforms=None)`:
  the decode loop. `step(new_tokens)` is the model: called first with `None` (prefill the prompt/start token),
  then with the (rows, 1) ids just sampled; it returns the (rows, V) logits of the next position. With
  `guided=True` the model batch holds 2B rows -- B conditional then B unconditional (ONE forward pass for
  both) -- the loop mixes them with `guided_logits` and feeds each sampled id to both halves. With
  `logprobs=[]` it also appends a (rows, ) float32 tensor: each model row's log-probability of the tokens drawn,
  at temperature 1 and before guidance (for a guided batch, log p(x | prompt) then log p(x | null)): what a
  teacher-forced pass over the finished rows would compute, up to float rounding, so a reranker can skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vimtool.errors import VimtoolError

# A model step: None (prefill) or (rows, 1) new ids -> (rows, V) logits of the next position.
StepFn = Callable[[torch.Tensor | None], torch.Tensor]


@dataclass
class SamplingParams:
    """How logits become tokens. temperature 0 = greedy; top_k 0 = off; top_p 1.0 = off; guidance 1.0 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise VimtoolError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise VimtoolError(f"top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise VimtoolError(f"top-p must be in (0, 1] (1 = off), got {self.top_p}")
        if not self.guidance_scale >= 0:
            raise VimtoolError(f"guidance scale must be >= 0 (1 = no guidance), got {self.guidance_scale}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def guided(self) -> bool:
        """True when unconditional rows are needed (any scale but exactly 1)."""
        return self.guidance_scale != 1.0


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: u + s (c - u), in float32 (bf16 differences of large logits lose bits)."""
    c, u = cond.float(), uncond.float()
    return u + scale * (c - u)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k logits and/or the smallest set whose probability reaches top_p; the rest become -inf.

    The most likely token always survives (top_p nucleus of at least one token, Holtzman et al. 2020).
    """
    logits = logits.float()
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        # the k-th largest value: the min of an unsorted top-k (the same element; ~40% cheaper than sorted)
        kth = torch.topk(logits, top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # mass strictly before each token: a token is kept while the mass before it is < top_p
        before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_from_logits(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, V) logits -> (B,) int64 ids by inverse-CDF sampling: one uniform per row, given as `uniforms` (B,)
    or drawn from `generator`."""
    if uniforms is None:
        uniforms = torch.rand(logits.shape[0], generator=generator, device=_gen_device(generator, logits))
    u = uniforms.reshape(-1, 1).to(device=logits.device, dtype=torch.float32).contiguous()  # (B, 1)
    if params.greedy:
        return logits.float().argmax(dim=-1)
    logits = logits.float()
    scaled = filter_logits(
        logits if params.temperature == 1.0 else logits / params.temperature, params.top_k, params.top_p
    )
    probs = torch.softmax(scaled, dim=-1)  # (B, V)
    cdf = torch.cumsum(probs, dim=-1)
    cdf = cdf / cdf[..., -1:]  # exact 1.0 at the end: u < 1 always lands inside the vocabulary
    ids = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first index with cdf > u
    # a zero-probability token can never be chosen: searchsorted on a flat cdf segment returns its right end
    return ids.clamp_(max=logits.shape[-1] - 1)


def _gen_device(generator: torch.Generator | None, logits: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else logits.device


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator. CPU by default: the same seed gives the same draws on any machine."""
    return torch.Generator(device=device).manual_seed(int(seed))


def row_uniforms(seed: int, first_row: int, rows: int, num_tokens: int) -> torch.Tensor:
    """(rows, num_tokens) uniforms where row j depends only on (seed, first_row + j): sample i of a run is the
    same whatever the batch size or the batch it lands in. Drawn on the CPU (identical on every machine)."""
    out = torch.empty(rows, num_tokens)
    for j in range(rows):
        # a fixed odd multiplier spreads (seed, index) pairs over the generator's 64-bit seed space
        g = torch.Generator().manual_seed((int(seed) * 0x9E3779B97F4A7C15 + first_row + j) % (1 << 63))
        out[j] = torch.rand(num_tokens, generator=g)
    return out


@torch.no_grad()
def autoregressive_sample(
    step: StepFn,
    batch_size: int,
    num_tokens: int,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    guided: bool = False,
    uniforms: torch.Tensor | None = None,
    logprobs: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The decode loop (see module doc): -> (batch_size, num_tokens) int64 ids; `logprobs`, a list, receives the
    rows' summed log-probabilities of their own tokens (rows = 2 x batch_size when guided, conditional first).

    Randomness: `uniforms` (batch_size, num_tokens) (e.g. from `row_uniforms`) if given, else `generator`.
    `guided=True`: `step` returns (2 * batch_size, V) logits, conditional rows first, and receives the sampled
    ids duplicated for both halves. Mixing uses `params.guidance_scale` (so scale 1 with guided=True is a
    plain conditional sample computed alongside an unused unconditional one: the equivalence the tests check).
    """
    if num_tokens < 1:
        raise VimtoolError(f"nothing to sample: num_tokens={num_tokens}")
    if uniforms is not None and tuple(uniforms.shape) != (batch_size, num_tokens):
        raise ValueError(f"uniforms must be ({batch_size}, {num_tokens}), got {tuple(uniforms.shape)}")
    out: list[torch.Tensor] = []
    new: torch.Tensor | None = None
    total: torch.Tensor | None = None  # (rows,) summed log-probabilities of the drawn tokens, when asked for
    for t in range(num_tokens):
        logits = step(new)
        if uniforms is not None and uniforms.device != logits.device:
            uniforms = uniforms.to(logits.device)  # once: no host->device copy per step
        rows = logits.shape[0]
        raw = logits
        if guided:
            if rows != 2 * batch_size:
                raise ValueError(f"guided step returned {rows} rows, expected 2 x {batch_size}")
            logits = guided_logits(logits[:batch_size], logits[batch_size:], params.guidance_scale)  # (B, V)
        elif rows != batch_size:
            raise ValueError(f"step returned {rows} rows, expected {batch_size}")
        ids = sample_from_logits(logits, params, generator, None if uniforms is None else uniforms[:, t])  # (B,)
        out.append(ids)
        new = ids[:, None]  # (B, 1)
        if guided:
            new = torch.cat([new, new], dim=0)  # (2B, 1): the same token continues both halves
        if logprobs is not None:
            step_lp = raw.float().log_softmax(-1).gather(1, new if guided else ids[:, None])[:, 0]  # (rows,)
            total = step_lp if total is None else total + step_lp
    if logprobs is not None and total is not None:
        logprobs.append(total)
    return torch.stack(out, dim=1)  # (B, num_tokens)


__all__ = [
    "SamplingParams",
    "StepFn",
    "autoregressive_sample",
    "filter_logits",
    "guided_logits",
    "make_generator",
    "row_uniforms",
    "sample_from_logits",
]
