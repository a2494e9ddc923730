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
from vimtool.plan import GPUS, PlanConfig, cpu_sdpa_flop_formulas, model_configs, plan  # noqa: E402

MICRO, ACCUM = 8, 2
GPU_NAME = "h200"  # the accelerator --device cuda was run on (for the MFU column)
CONFIGS = {
    "vim d64 x2": dict(model="vim-micro", overrides={"model": dict(dim=64, depth=2, heads=2, mlp_dim=256)},
                       codebook_size=256, token_grid=8),
    "vim d128 x4": dict(model="vim-tiny", overrides={"model": dict(dim=128, depth=4, heads=4, mlp_dim=512)},
                        codebook_size=512, token_grid=8),
    "vim d256 x6": dict(model="vim-tiny", overrides={"model": dict(dim=256, depth=6, heads=8, mlp_dim=1024)},
                        codebook_size=1024, token_grid=16),
    "vim d128 x4 noble": dict(model="vim-tiny", overrides={"model": dict(dim=128, depth=4, heads=4, mlp_dim=512,
                              noble={"rank": 16})}, codebook_size=512, token_grid=8),
    "parti tiny": dict(model="parti-tiny", overrides={"text_vocab_size": 512}, codebook_size=512, token_grid=8),
    # the tiny recipes' loss: no discriminator, no perceptual network
    "tokenizer tiny": dict(model="tokenizer-tiny", overrides={"loss": {"adversarial": 0.0, "perceptual": 0.0}}),
}  # fmt: skip
SMOKE = ["vim d64 x2"]
# --device cuda: the paper's shapes at 1024 tokens, with their dropout (0.1; on a GPU the fused attention kernel
# keeps no dropout mask, so the plan's count holds), bf16 autocast only
GPU_CONFIGS = {
    "vim small": dict(model="vim-small", overrides={}),
    "vim base": dict(model="vim-base", overrides={}),
    "parti 350M": dict(model="parti-350m", overrides={}),
    "tokenizer SS": dict(model="tokenizer-ss", overrides={"loss": {"adversarial": 0.0, "perceptual": 0.0}}),
}


def plan_config(name: str, checkpointing: bool, precision: str = "fp32") -> PlanConfig:
    on_gpu = name in GPU_CONFIGS
    spec = dict(GPU_CONFIGS[name] if on_gpu else CONFIGS[name])
    overrides = dict(spec.pop("overrides"))
    if not on_gpu:
        overrides["model"] = {**overrides.get("model", {}), "dropout": 0.0}
    if spec["model"].startswith("vim"):
        overrides["conditional"] = "no"
    return PlanConfig(
        **spec, overrides=overrides, precision=precision, micro_batch=MICRO, global_batch=MICRO * ACCUM,
        activation_checkpointing=checkpointing, device_memory_gb=1000.0,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- the worker
def _build(name: str, device: str):
    """(model, loss function of a batch, a batch of MICRO samples) for configuration `name`, fp32 weights."""
    torch.manual_seed(0)
    config = model_configs(plan_config(name, False))["model"]
    family = (GPU_CONFIGS.get(name) or CONFIGS[name])["model"].split("-")[0]
    torch.set_default_device(device)  # build and init on the device (a 700M model inits slowly on a CPU)
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


def worker(name: str, checkpointing: bool, precision: str, device: str) -> dict:
    import time

    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    model, loss_fn, batch = _build(name, device)
    if checkpointing:
        _checkpoint_blocks(model)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        for _ in range(ACCUM):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(batch) / ACCUM
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = {}
    rss_before = _current_rss()
    step()  # warm-up: creates the optimizer state
    if device == "cuda":
        # the caching allocator's own count of live tensor bytes (cuBLAS workspaces included)
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        out["step_seconds"] = sorted(times)[1]
    else:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        step()
        out["rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before + 4 * params
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
            step()
        _, sizes = MemoryProfileTimeline(p._memory_profile())._coalesce_timeline(torch.device("cpu"))
        out["peak_bytes"] = max(sum(row) for row in sizes)
    from vimtool.nn.layers import Attention
    from vimtool.nn.noble import NobleLinear

    for module in model.modules():  # NOBLE op by op for the count: the fused CosNet Function accumulates W_up's
        if isinstance(module, NobleLinear):  # product in place (addmm_), which the counter has no formula for
            module.fused_cosnet = False
        if isinstance(module, Attention):
            module.group_qkv = False
    counter = FlopCounterMode(display=False, custom_mapping=cpu_sdpa_flop_formulas())
    with counter:  # one context: entering the counter again would reset it
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(batch)
        loss.backward()
    out["flops"] = counter.get_total_flops()
    return out


# ---------------------------------------------------------------------------------------------- the check
def check(name: str, checkpointing: bool, precision: str = "fp32", device: str = "cpu") -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--precision", precision, "--device", device]
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
    row = {
        "config": name, "device": device, "precision": precision, "activation_checkpointing": checkpointing,
        "params": est.total_params, "micro_batch": MICRO, "grad_accum": ACCUM,
        "flops_plan": flops, "flops_measured": measured["flops"], "flops_error": flops / measured["flops"] - 1,
        "peak_plan_bytes": mem, "peak_measured_bytes": measured["peak_bytes"],
        "peak_error": mem / measured["peak_bytes"] - 1,
    }  # fmt: skip
    if "rss_bytes" in measured:
        row.update(rss_measured_bytes=measured["rss_bytes"], rss_error=mem / measured["rss_bytes"] - 1)
    if "step_seconds" in measured:  # the model FLOPs of a step (no recompute) over its time: achieved MFU
        achieved = est.flops_per_sample * MICRO * ACCUM / measured["step_seconds"]
        row.update(step_seconds=measured["step_seconds"], achieved_tflops=achieved / 1e12,
                   mfu=achieved / (GPUS[GPU_NAME].bf16_tflops * 1e12))  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one tiny configuration")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: the paper sizes in bf16")
    ap.add_argument("--out", type=Path, help="default bench/results/plan_check.json (plan_check_gpu.json on cuda)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.checkpointing, args.precision, args.device)))
        return
    gpu = args.device == "cuda"
    names = list(GPU_CONFIGS if gpu else CONFIGS)[:1] if args.smoke else list(GPU_CONFIGS if gpu else CONFIGS)
    precisions = ("bf16",) if gpu else ("fp32", "bf16")
    rows = []
    for name in names:
        for prec in precisions:
            for ck in (False, True):
                rows.append(check(name, ck, prec, args.device))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress, and the rows if a later one fails
    extra = f"{'s/step':>8}{'TFLOP/s':>9}{'MFU':>6}" if gpu else f"{'RSS':>8}{'err':>7}"
    print(f"{'config':<20}{'prec':<6}{'ckpt':<6}{'params':>13}{'FLOPs plan':>13}{'measured':>11}{'err':>7}"
          f"{'peak MB plan':>14}{'measured':>10}{'err':>7}" + extra)  # fmt: skip
    for r in rows:
        line = (
            f"{r['config']:<20}{r['precision']:<6}{'yes' if r['activation_checkpointing'] else 'no':<6}"
            f"{r['params']:>13,}{r['flops_plan']:>13.4g}{r['flops_measured']:>11.4g}{r['flops_error']:>+7.1%}"
            f"{r['peak_plan_bytes'] / 1e6:>14.1f}{r['peak_measured_bytes'] / 1e6:>10.1f}{r['peak_error']:>+7.1%}"
        )
        if gpu:
            line += f"{r['step_seconds']:>8.3f}{r['achieved_tflops']:>9.1f}{r['mfu']:>6.2f}"
        else:
            line += f"{r['rss_measured_bytes'] / 1e6:>8.1f}{r['rss_error']:>+7.1%}"
        print(line)
    ok = all(abs(r["flops_error"]) <= 0.05 and abs(r["peak_error"]) <= 0.15 for r in rows)
    print(f"targets (FLOPs within 5%, measured peak within 15%): {'met' if ok else 'NOT met'}")
    if not args.smoke:
        out = args.out or HERE / "results" / ("plan_check_gpu.json" if gpu else "plan_check.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"micro_batch": MICRO, "grad_accum": ACCUM, "device": args.device}
        if gpu:
            meta["gpu"] = torch.cuda.get_device_name()
        write_json(out, {**meta, "rows": rows})
        print(out)


if __name__ == "__main__":
    main()
