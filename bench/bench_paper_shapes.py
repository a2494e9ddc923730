"""Training steps of the papers' models on this CPU, beside `vimtool plan`'s memory estimate.

    python bench/bench_paper_shapes.py                        # the four paper recipes' models (VIM base: ~12 GB)
    python bench/bench_paper_shapes.py --only "tokenizer SS"  # a subset (comma-separated names)
    python bench/bench_paper_shapes.py --smoke                # tokenizer SS at 64 px (64 tokens), seconds

The models are built from the model sections of the paper recipes (recipes/tokenizer_imagenet_ss.yaml, _bb,
vim_imagenet_base.yaml, parti_coco_350m.yaml, with the data facts `vimtool plan` assumes: 8192 codes, 32x32
tokens, 1000 classes, 128 text positions), each in a fresh process, and trained at micro-batch 1 in fp32 with a
plain AdamW step (multi-tensor, torch's default on GPUs, which the plan models) and `torch.utils.checkpoint` on every transformer block (`bench_plan.checkpoint_blocks`: applied
here, so it needs no engine option). Each row: one warm-up step, then `--steps` timed steps (median s/step; their
RSS high-water mark, minus the RSS before the warm-up, plus the parameters' bytes), then one step under the torch
profiler whose memory timeline gives the peak bytes of live tensors, which is what `vimtool plan --config RECIPE
--micro-batch 1 --activation-checkpointing --precision fp32` estimates (`bench_plan.measure`).
Deviations from the recipes, so that a CPU can measure what plan counts: dropout 0 (on a CPU a non-zero attention
dropout falls back to a kernel that keeps the T x T probabilities), AdamW for Parti (the recipe's Adafactor), and
tokenizers without discriminator and LPIPS (their weights are not shipped; the plan is told the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

import torch  # noqa: E402

from bench.bench_plan import build_training, checkpoint_blocks, measure, run_worker  # noqa: E402
from bench.harness import REPO, parser, setup, write_results  # noqa: E402
from vimtool.plan import PlanConfig, model_configs, plan  # noqa: E402

# name -> (recipe, family, overrides of the recipe for this measurement)
_TOKENIZER = {"loss": {"adversarial": 0.0, "perceptual": 0.0}, "model": {"dropout": 0.0}}
MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tokenizer SS": ("recipes/tokenizer_imagenet_ss.yaml", "tokenizer", _TOKENIZER),
    "tokenizer BB": ("recipes/tokenizer_imagenet_bb.yaml", "tokenizer", _TOKENIZER),
    "parti 350M": ("recipes/parti_coco_350m.yaml", "parti", {"model": {"dropout": 0.0}}),
    "vim base": ("recipes/vim_imagenet_base.yaml", "vim", {"model": {"dropout": 0.0}}),
}
SMOKE = {"tokenizer SS": {"image_size": 64}}  # patch 8: 8x8 = 64 tokens instead of 1024
HEADER = ["model", "recipe", "parameters", "tokens", "s/step", "peak plan MB", "peak measured MB", "peak error %",
          "RSS high-water MB"]  # fmt: skip


def plan_config(name: str, smoke: bool) -> PlanConfig:
    recipe, _, overrides = MODELS[name]
    overrides = {**overrides, "train": {"optimizer": "adamw"}, **(SMOKE.get(name, {}) if smoke else {})}
    return PlanConfig(
        recipe=str(REPO / recipe), overrides=overrides, micro_batch=1, global_batch=1, precision="fp32",
        activation_checkpointing=True, device_memory_gb=1000.0,
    )  # fmt: skip


def worker(name: str, smoke: bool, steps: int) -> dict:
    torch.set_num_threads(1)
    config = model_configs(plan_config(name, smoke))["model"]
    model, loss_fn, batch = build_training(MODELS[name][1], config, 1, "cpu")
    checkpoint_blocks(model)
    # the multi-tensor AdamW step, as on a GPU: at micro-batch 1 its fp32 temporary (4 B per parameter) is the peak
    return measure(model, loss_fn, batch, "fp32", "cpu", accum=1, timed_steps=steps, foreach=True)


def tokens(config: Any) -> int:
    """Positions per sample of the model's longest stack (image tokens; Parti's text adds its own)."""
    if hasattr(config, "num_tokens"):
        return config.num_tokens
    if hasattr(config, "num_image_tokens"):
        return config.num_image_tokens
    return (config.image_size // config.patch_size) ** 2


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--only", help="comma-separated model names (default: all; --smoke: tokenizer SS at 64 px)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per model after the warm-up (default 2)")
    ap.add_argument("--worker", help="(internal) measure one model and print JSON")
    args = setup(ap.parse_args())
    if args.worker:
        print(json.dumps(worker(args.worker, args.smoke, args.steps)))
        return
    names = args.only.split(",") if args.only else list(SMOKE if args.smoke else MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; use names from {list(MODELS)}")
    steps = 1 if args.smoke else args.steps
    rows = []
    for name in names:
        flags = ["--worker", name, "--steps", str(steps)] + (["--smoke"] if args.smoke else [])
        measured = run_worker(__file__, flags)
        cfg = plan_config(name, args.smoke)
        est = plan(cfg)
        mem = est.chosen.total_gb * 1e9
        rows.append([name, MODELS[name][0], est.trainable_params, tokens(model_configs(cfg)["model"]),
                     measured["step_seconds"], mem / 1e6, measured["peak_bytes"] / 1e6,
                     100 * (mem / measured["peak_bytes"] - 1), measured["rss_bytes"] / 1e6])  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    notes = [
        "micro-batch 1, fp32, AdamW, torch.utils.checkpoint on every block, dropout 0; tokenizers without "
        "discriminator and LPIPS; errors are plan / measured - 1",
        f"median of {steps} timed step(s) after one warm-up step, one torch thread",
    ]
    write_results("paper_shapes", HEADER, rows, args.out, extra={"notes": notes, "models": names},
                  title="The papers' models, a few CPU training steps at micro-batch 1, beside `vimtool plan`")  # fmt: skip


if __name__ == "__main__":
    main()
