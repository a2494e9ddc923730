"""Check `vimtool plan`'s estimates (vimtool/plan/) against real training steps.

    python bench/bench_plan.py                 # 3 VIM sizes (one with NOBLE) + Parti tiny + tokenizer tiny, CPU
    python bench/bench_plan.py --device cuda   # the papers' shapes (VIM small/base, Parti 350M, tokenizer SS), bf16
    python bench/bench_plan.py --smoke         # one tiny VIM in fp32 (two subprocesses, seconds)

For each configuration, in a fresh subprocess (so no earlier run's tensors or allocator state count):
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over a real forward + backward of one micro-batch, with
  torch's own SDPA formulas registered for the CPU flash-attention kernels (`plan.cpu_sdpa_flop_formulas`:
  the counter has none and would count attention as 0), against `plan().flops_per_sample` x micro-batch
  (+ `flops_recompute_per_sample` with checkpointing, whose recomputed forward the counter sees). Target: 5%.
- Peak memory of a training step, in fp32 and under bf16 autocast (fp32 weights, as the engine trains), with
  AdamW and 2 micro-batches of gradient accumulation (the case the plan sums: gradients alive while the second
  micro-batch's activations are), after one warm-up step so that the optimizer state exists. On a CPU: the torch
  profiler's memory timeline (`profile_memory=True`, `torch.profiler._memory_profiler`), the peak of the bytes of
  live torch tensors, which is what the plan estimates; also recorded, not judged: the RSS high-water mark over the
  same steps without the profiler, minus the RSS before the first step, plus the parameters' bytes (includes
  malloc's overhead and the interpreter's growth). On CUDA: `torch.cuda.max_memory_allocated()`, plus the median
  time of 3 steps and the MFU it implies. With and without per-block activation checkpointing
  (`torch.utils.checkpoint`, non-reentrant, applied to every block here: `checkpoint_blocks`). Target: 15%.
Dropout is 0 on a CPU: there a non-zero attention dropout sends SDPA to the math kernel, which keeps the T x T
attention matrix the plan (fused kernels, as on GPUs) does not count. On CUDA the sizes keep their dropout (0.1).

Writes plan_check (CPU) or plan_check_gpu (CUDA) under --out. bench/bench_paper_shapes.py reuses `measure`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

import torch  # noqa: E402

from bench.harness import parser, setup, write_results  # noqa: E402
from vimtool.plan import GPUS, PlanConfig, cpu_sdpa_flop_formulas, model_configs, plan  # noqa: E402

MICRO, ACCUM = 8, 2
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
# --device cuda: the paper's shapes at 1024 tokens, with their dropout (0.1; on a GPU the fused attention kernel
# keeps no dropout mask, so the plan's count holds), bf16 autocast only
GPU_CONFIGS = {
    "vim small": dict(model="vim-small", overrides={}),
    "vim base": dict(model="vim-base", overrides={}),
    "parti 350M": dict(model="parti-350m", overrides={}),
    "tokenizer SS": dict(model="tokenizer-ss", overrides={"loss": {"adversarial": 0.0, "perceptual": 0.0}}),
}
HEADER_CPU = ["config", "precision", "checkpointing", "parameters", "FLOPs plan", "FLOPs measured", "FLOPs error %",
              "peak plan MB", "peak measured MB", "peak error %", "RSS delta MB"]  # fmt: skip
HEADER_GPU = ["config", "precision", "checkpointing", "parameters", "FLOPs plan", "FLOPs measured", "FLOPs error %",
              "peak plan GB", "peak measured GB", "peak error %", "ms/step", "TFLOP/s", "MFU"]  # fmt: skip


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
def build_training(family: str, config: Any, micro: int, device: str):
    """(model, loss function of a batch, a batch of `micro` samples) of one family's model config, fp32 weights.

    The loss is the training task's (VIM's next-token loss; Parti's cross-entropy on the image tokens; the
    tokenizer's generator loss without discriminator and perceptual terms, as the tiny recipes train it)."""
    torch.manual_seed(0)
    torch.set_default_device(device)  # build and init on the device (a 700M model inits slowly on a CPU)
    if family == "vim":
        from vimtool.models.vim import VIM

        model = VIM(config)
        batch = torch.randint(0, config.vocab_size, (micro, config.num_tokens))
        return model, lambda b: model.loss(b), batch
    if family == "parti":
        import torch.nn.functional as F

        from vimtool.models.parti import Parti

        model = Parti(config)
        ids = torch.randint(0, config.text_vocab_size, (micro, config.max_text_len))
        tokens = torch.randint(0, config.codebook_size, (micro, config.num_image_tokens))
        mask = torch.ones_like(ids, dtype=torch.bool)

        def parti_loss(b):
            return F.cross_entropy(model(b[0], b[1], b[2]).float().transpose(1, 2), b[2])

        return model, parti_loss, (ids, mask, tokens)
    from vimtool.models.losses import l2_loss, logit_laplace_nll
    from vimtool.models.vitvqgan import ViTVQGAN

    model = ViTVQGAN(config)
    images = torch.rand(micro, config.channels, config.image_size, config.image_size) * 2 - 1

    def tokenizer_loss(x):
        recon, aux = model(x)
        loss = aux["vq_loss"] + l2_loss(recon, x)
        return loss + 0.1 * logit_laplace_nll((x + 1) / 2, aux["mu"], aux["log_scale"]) if "mu" in aux else loss

    return model, tokenizer_loss, images


def checkpoint_blocks(model: torch.nn.Module) -> None:
    """Per-block activation checkpointing on every transformer stack of the model (the engine's option is not
    used, so this measures the same thing whether or not the engine has one)."""
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


def measure(
    model: torch.nn.Module,
    loss_fn,
    batch,
    precision: str,
    device: str,
    accum: int,
    timed_steps: int = 3,
    profile_memory: bool = True,
    foreach: bool | None = None,
) -> dict[str, float]:
    """Peak memory and step time of AdamW training steps with `accum` micro-batches, after one warm-up step.

    After the warm-up, `timed_steps` steps (at least one) are timed (`step_seconds`: their median) and give the
    CUDA allocator's peak (`peak_bytes`) or, on a CPU, the RSS high-water mark over them minus the RSS before the
    warm-up plus the parameters' bytes (`rss_bytes`); on a CPU with `profile_memory`, one more step under the profiler
    gives `peak_bytes` from its memory timeline. `foreach`: AdamW's multi-tensor step (None: torch's default, on
    for CUDA tensors, off on a CPU), whose fp32 temporary of the parameters' size the plan counts."""
    import time

    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=foreach)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        for _ in range(accum):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(batch) / accum
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out: dict[str, float] = {}
    rss_before = _current_rss()
    step()  # warm-up: creates the optimizer state
    if device == "cuda":  # the caching allocator's own count of live tensor bytes (cuBLAS workspaces included)
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(max(1, timed_steps)):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if timed_steps:
        out["step_seconds"] = sorted(times)[len(times) // 2]
    if device == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
        return out
    out["rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before + 4 * params
    if profile_memory:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
            step()
        _, sizes = MemoryProfileTimeline(p._memory_profile())._coalesce_timeline(torch.device("cpu"))
        out["peak_bytes"] = max(sum(row) for row in sizes)
    return out


def count_flops(model: torch.nn.Module, loss_fn, batch, precision: str, device: str) -> int:
    """FLOPs of one forward + backward as FlopCounterMode counts them (NOBLE and q/k/v op by op: the fused paths
    accumulate in place with addmm_, which the counter has no formula for)."""
    from torch.utils.flop_counter import FlopCounterMode

    from vimtool.nn.layers import Attention
    from vimtool.nn.noble import NobleLinear

    for module in model.modules():
        if isinstance(module, NobleLinear):
            module.fused_cosnet = False
        if isinstance(module, Attention):
            module.group_qkv = False
    counter = FlopCounterMode(display=False, custom_mapping=cpu_sdpa_flop_formulas())
    with counter:  # one context: entering the counter again would reset it
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(batch)
        loss.backward()
    return counter.get_total_flops()


def worker(name: str, checkpointing: bool, precision: str, device: str) -> dict:
    torch.set_num_threads(1)
    config = model_configs(plan_config(name, False))["model"]
    family = (GPU_CONFIGS.get(name) or CONFIGS[name])["model"].split("-")[0]
    model, loss_fn, batch = build_training(family, config, MICRO, device)
    if checkpointing:
        checkpoint_blocks(model)
    out = measure(model, loss_fn, batch, precision, device, ACCUM, timed_steps=3 if device == "cuda" else 0)
    out["flops"] = count_flops(model, loss_fn, batch, precision, device)
    return out


# ---------------------------------------------------------------------------------------------- the check
def run_worker(script: str, args: list[str]) -> dict:
    """Run `script --worker ...` in a fresh process; its last stdout line is the JSON it measured."""
    res = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"worker {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def gpu_key(device_name: str) -> str:
    """The GPUS entry of a CUDA device name ('NVIDIA H200' -> 'h200'); h100 when none matches."""
    name = device_name.lower().replace(" ", "-")
    return next((k for k in sorted(GPUS, key=len, reverse=True) if k in name), "h100")


def check(name: str, checkpointing: bool, precision: str, device: str, gpu: str) -> list:
    args = ["--worker", name, "--precision", precision, "--device", device]
    measured = run_worker(__file__, args + (["--checkpointing"] if checkpointing else []))
    est = plan(plan_config(name, checkpointing, precision))
    # checkpointing runs each block's forward twice: the counter sees the recompute
    flops = (est.flops_per_sample + (est.flops_recompute_per_sample if checkpointing else 0.0)) * MICRO
    mem = est.chosen.total_gb * 1e9
    scale = 1e9 if device == "cuda" else 1e6
    row = [name, precision, "yes" if checkpointing else "no", est.total_params, flops, measured["flops"],
           100 * (flops / measured["flops"] - 1), mem / scale, measured["peak_bytes"] / scale,
           100 * (mem / measured["peak_bytes"] - 1)]  # fmt: skip
    if device == "cuda":  # the model FLOPs of a step (no recompute) over its time: achieved MFU
        achieved = est.flops_per_sample * MICRO * ACCUM / measured["step_seconds"]
        row += [1000 * measured["step_seconds"], achieved / 1e12, achieved / (GPUS[gpu].bf16_tflops * 1e12)]
    else:
        row.append(measured["rss_bytes"] / 1e6)
    return row


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: the paper sizes in bf16")
    ap.add_argument("--worker", help="(internal) measure one configuration and print JSON")
    ap.add_argument("--checkpointing", action="store_true", help="(internal, with --worker)")
    ap.add_argument("--precision", default="fp32", help="(internal, with --worker)")
    args = setup(ap.parse_args())
    if args.worker:
        print(json.dumps(worker(args.worker, args.checkpointing, args.precision, args.device)))
        return
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    names = list(GPU_CONFIGS if on_gpu else CONFIGS)[: 1 if args.smoke else None]
    precisions = ("bf16",) if on_gpu else ("fp32",) if args.smoke else ("fp32", "bf16")
    gpu = gpu_key(torch.cuda.get_device_name()) if on_gpu else ""
    rows = []
    for name in names:
        for precision in precisions:
            for checkpointing in (False, True):
                rows.append(check(name, checkpointing, precision, args.device, gpu))
                print(rows[-1], file=sys.stderr, flush=True)  # progress, and the rows if a later one fails
    met = all(abs(r[6]) <= 5 and abs(r[9]) <= 15 for r in rows)
    extra: dict[str, Any] = {"micro_batch": MICRO, "grad_accum": ACCUM, "device": args.device, "targets_met": met}
    if on_gpu:
        extra.update(gpu=torch.cuda.get_device_name(), mfu_peak_tflops=GPUS[gpu].bf16_tflops)
    extra["notes"] = [
        f"micro-batch {MICRO} x {ACCUM} accumulation steps, AdamW, one warm-up step; errors are plan / measured - 1",
        f"targets (FLOPs within 5%, measured peak within 15%): {'met' if met else 'NOT met'} in every row",
    ]
    write_results(
        "plan_check_gpu" if on_gpu else "plan_check", HEADER_GPU if on_gpu else HEADER_CPU, rows, args.out,
        extra=extra, title=f"`vimtool plan` against measured training steps ({args.device})",
    )  # fmt: skip


if __name__ == "__main__":
    main()
