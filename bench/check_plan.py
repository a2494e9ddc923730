"""Check `vimtool plan`'s estimates (vimtool/plan.py) against real training steps on this CPU.

    python bench/check_plan.py            # 3 VIM sizes + Parti tiny + tokenizer tiny, ~1 minute on one core
    python bench/check_plan.py --smoke    # one tiny VIM, seconds

For each configuration, in a fresh subprocess (so no earlier run's tensors or allocator state count):
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over a real forward + backward of one micro-batch, with
  torch's own SDPA formulas registered for the CPU flash-attention kernels (`plan.cpu_sdpa_flop_formulas`:
  the counter has none and would count attention as 0), against `plan().flops_per_sample` x micro-batch
  (+ `flops_recompute_per_sample` with checkpointing, whose recomputed forward the counter sees). Target: 5%.
- Peak memory of a training step, in fp32 and under bf16 autocast (fp32 weights, as the engine trains), with
  AdamW and 2 micro-batches of gradient accumulation (the case the
  plan sums: gradients alive while the second micro-batch's activations are), after one warm-up step so that
  the optimizer state exists. Measured with the torch profiler's memory timeline (`profile_memory=True`,
  `torch.profiler._memory_profiler`): the peak of the bytes of live torch tensors on the CPU (parameters,
  gradients, optimizer state, activations, temporaries), which is what the plan estimates. Also recorded, not
  judged: the process's RSS high-water mark over the same steps without the profiler, minus the RSS before the
  first step, plus the parameters' bytes (includes malloc's overhead and the interpreter's own growth).
  With and without per-block activation checkpointing (`torch.utils.checkpoint`, non-reentrant, applied to every
  block here: the engine has no such option yet). Target: within 15%.
Dropout is 0: on a CPU a non-zero attention dropout sends SDPA to the math kernel, which keeps the T x T
attention matrix the plan (fused kernels, as on GPUs) does not count.

Writes bench/results/plan_check.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from anywhere in a checkout

from vimtool.atomic import write_json  # noqa: E402
from vimtool.plan import PlanConfig, cpu_sdpa_flop_formulas, model_configs, plan  # noqa: E402

MICRO, ACCUM = 8, 2
CONFIGS = {
    "vim d64 x2": dict(model="vim-micro", overrides={"model": dict(dim=64, depth=2, heads=2, mlp_dim=256)},
                       codebook_size=256, token_grid=8),
    "vim d128 x4": dict(model="vim-tiny", overrides={"model": dict(dim=128, depth=4, heads=4, mlp_dim=512)},
                        codebook_size=512, token_grid=8),
    "vim d256 x6": dict(model="vim-tiny", overrides={"model": dict(dim=256, depth=6, heads=8, mlp_dim=1024)},
                        codebook_size=1024, token_grid=16),
    "parti tiny": dict(model="parti-tiny", overrides={"text_vocab_size": 512}, codebook_size=512, token_grid=8),
    # the tiny recipes' loss: no discriminator, no perceptual network
    "tokenizer tiny": dict(model="tokenizer-tiny", overrides={"loss": {"adversarial": 0.0, "perceptual": 0.0}}),
}  # fmt: skip
SMOKE = ["vim d64 x2"]


def plan_config(name: str, checkpointing: bool, precision: str = "fp32") -> PlanConfig:
    spec = dict(CONFIGS[name])
    overrides = dict(spec.pop("overrides"))
    overrides["model"] = {**overrides.get("model", {}), "dropout": 0.0}
    if spec["model"].startswith("vim"):
        overrides["conditional"] = "no"
    return PlanConfig(
        **spec, overrides=overrides, precision=precision, micro_batch=MICRO, global_batch=MICRO * ACCUM,
        activation_checkpointing=checkpointing, device_memory_gb=1000.0,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- the worker
def _build(name: str):
    """(model, loss function of a batch, a batch of MICRO samples) for configuration `name`, fp32 on the CPU."""
    torch.manual_seed(0)
    config = model_configs(plan_config(name, False))["model"]
    family = CONFIGS[name]["model"].split("-")[0]
    if family == "vim":
        from vimtool.models.vim import VIM

        model = VIM(config)
        batch = torch.randint(0, config.vocab_size, (MICRO, config.num_tokens))
        return model, lambda b: model.loss(b), batch
    if family == "parti":
        import torch.nn.functional as F

        from vimtool.models.parti import Parti

        model = Parti(config)
        ids = torch.randint(0, config.text_vocab_size, (MICRO, config.max_text_len))
        tokens = torch.randint(0, config.codebook_size, (MICRO, config.num_image_tokens))
        mask = torch.ones_like(ids, dtype=torch.bool)

        def parti_loss(b):
            return F.cross_entropy(model(b[0], b[1], b[2]).float().transpose(1, 2), b[2])

        return model, parti_loss, (ids, mask, tokens)
    from vimtool.models.losses import l2_loss, logit_laplace_nll
    from vimtool.models.vitvqgan import ViTVQGAN

    model = ViTVQGAN(config)
    images = torch.rand(MICRO, config.channels, config.image_size, config.image_size) * 2 - 1

    def tokenizer_loss(x):  # the generator loss without discriminator and perceptual terms (the tiny recipes')
        recon, aux = model(x)
        loss = aux["vq_loss"] + l2_loss(recon, x)
        return loss + 0.1 * logit_laplace_nll((x + 1) / 2, aux["mu"], aux["log_scale"]) if "mu" in aux else loss

    return model, tokenizer_loss, images


def _checkpoint_blocks(model: torch.nn.Module) -> None:
    """Per-block activation checkpointing on every transformer stack of the model."""
    from torch.utils.checkpoint import checkpoint

    from vimtool.nn.transformer import Block

    class Checkpointed(torch.nn.Module):
        def __init__(self, block: Block) -> None:
            super().__init__()
            self.block = block

        def forward(self, *args):
            return checkpoint(self.block, *args, use_reentrant=False)

    for module in list(model.modules()):
        blocks = getattr(module, "blocks", None)
        if isinstance(blocks, torch.nn.ModuleList) and all(isinstance(b, Block) for b in blocks):
            for i, b in enumerate(blocks):
                blocks[i] = Checkpointed(b)


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(name: str, checkpointing: bool, precision: str) -> dict:
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    model, loss_fn, batch = _build(name)
    if checkpointing:
        _checkpoint_blocks(model)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        for _ in range(ACCUM):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(batch) / ACCUM
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rss_before = _current_rss()
    step()  # warm-up: creates the optimizer state
    step()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    peak = max(sum(row) for row in sizes)
    counter = FlopCounterMode(display=False, custom_mapping=cpu_sdpa_flop_formulas())
    with counter:
        loss_fn(batch).backward()
    return {"peak_bytes": peak, "rss_bytes": rss_peak - rss_before + 4 * params, "flops": counter.get_total_flops()}


# ---------------------------------------------------------------------------------------------- the check
def check(name: str, checkpointing: bool, precision: str = "fp32") -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--precision", precision]
        + (["--checkpointing"] if checkpointing else []),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode:
        raise RuntimeError(f"worker {name} failed:\n{res.stderr[-3000:]}")
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    est = plan(plan_config(name, checkpointing, precision))
    # checkpointing runs each block's forward twice: the counter sees the recompute
    flops = (est.flops_per_sample + (est.flops_recompute_per_sample if checkpointing else 0.0)) * MICRO
    mem = est.chosen.total_gb * 1e9
    return {
        "config": name, "precision": precision, "activation_checkpointing": checkpointing, "params": est.total_params,
        "micro_batch": MICRO, "grad_accum": ACCUM,
        "flops_plan": flops, "flops_measured": measured["flops"], "flops_error": flops / measured["flops"] - 1,
        "peak_plan_bytes": mem, "peak_measured_bytes": measured["peak_bytes"],
        "peak_error": mem / measured["peak_bytes"] - 1, "rss_measured_bytes": measured["rss_bytes"],
        "rss_error": mem / measured["rss_bytes"] - 1,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one tiny configuration")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "plan_check.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.checkpointing, args.precision)))
        return
    names = SMOKE if args.smoke else CONFIGS
    rows = [check(name, ck, prec) for name in names for prec in ("fp32", "bf16") for ck in (False, True)]
    print(f"{'config':<16}{'prec':<6}{'ckpt':<6}{'params':>9}{'FLOPs plan':>13}{'measured':>11}{'err':>7}"
          f"{'peak MB plan':>14}{'profiler':>10}{'err':>7}{'RSS':>8}{'err':>7}")  # fmt: skip
    for r in rows:
        print(
            f"{r['config']:<16}{r['precision']:<6}{'yes' if r['activation_checkpointing'] else 'no':<6}{r['params']:>9,}"
            f"{r['flops_plan']:>13.4g}{r['flops_measured']:>11.4g}{r['flops_error']:>+7.1%}"
            f"{r['peak_plan_bytes'] / 1e6:>14.1f}{r['peak_measured_bytes'] / 1e6:>10.1f}{r['peak_error']:>+7.1%}"
            f"{r['rss_measured_bytes'] / 1e6:>8.1f}{r['rss_error']:>+7.1%}"
        )
    ok = all(abs(r["flops_error"]) <= 0.05 and abs(r["peak_error"]) <= 0.15 for r in rows)
    print(f"targets (FLOPs within 5%, profiler peak within 15%): {'met' if ok else 'NOT met'}")
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, {"micro_batch": MICRO, "grad_accum": ACCUM, "rows": rows})
        print(args.out)


if __name__ == "__main__":
    main()
