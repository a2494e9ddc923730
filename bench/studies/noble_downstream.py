"""The NOBLE study's downstream score: what a trained Parti draws, not only its loss.

Loss differences of a few thousandths of a nat per token are hard to read; the share of generated pictures that
show what their prompt says is what a user of the model sees. For a Parti run of bench/studies/noble.py this
module samples `SAMPLES` pictures for each of `PROMPTS` seen prompts (the `val` split, which never contains a
held-out colour-shape pair) and `PROMPTS` held-out prompts (each has one of the pairs training left out), at the
sampler's defaults (temperature 0.6, guidance 1.5) with no reranking, and grades every picture with the shapes
checker (vimtool.data.shapes.check): the scores are pass rates over all samples, i.e. of the generator alone.

Checkpoints are not kept by the study (each is deleted once its curve is read), so `--downstream` trains a run
again when its entry has no score yet: the entry then records the retrained run's final validation loss next to
the stored one (the data order and initialisation come from the seed, so they differ only where the kernels round
differently: another CPU, another thread count). VIM's
downstream score (a linear probe of its features) is not measured by the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.studies import fixtures as fx

PROMPTS = 64  # per group; 4 samples each: 256 pictures per group, a prompt ~1.6 points
SAMPLES = 4
PROMPT_SEED = 1  # the quickstart's graded prompts are the first 128 of this seed


def shapes_adherence(checkpoint: Path, seed: int = 0) -> dict[str, Any]:
    """{"seen": pass rate, "heldout": pass rate, "prompts", "samples", ...} of a Parti checkpoint on shapes."""
    import vimtool
    from vimtool.data.shapes import captions, check

    pipe = vimtool.load(checkpoint, device="cpu")
    out: dict[str, Any] = {"metric": "shapes checker pass rate, all samples (no reranking)", "prompts": PROMPTS,
                           "samples_per_prompt": SAMPLES, "prompt_seed": PROMPT_SEED, "sampling_seed": seed}  # fmt: skip
    for group, split in (("seen", "val"), ("heldout", "holdout")):
        prompts = captions(PROMPTS, split, seed=PROMPT_SEED, objects=(1,), holdout=fx.HOLDOUT)
        images = pipe.generate(prompts, SAMPLES, seed=seed, rerank_by="none")  # SAMPLES per prompt, in prompt order
        passed = [check(image, prompts[i // SAMPLES]).ok for i, image in enumerate(images)]
        out[group] = sum(passed) / len(passed)
    return out
