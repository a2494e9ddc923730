"""GPU training and decoding at VIM-Base's shape, for bench/gpu_check.sh (which runs it with the other checks).

    python bench/gpu_steps.py --device cuda             # VIM-Base: bf16 steps (eager, compiled), FSDP2, decode
    python bench/gpu_steps.py --device cpu --smoke      # a micro VIM, eager step + decode: checks the code runs

Rows (each after warm-up calls, median of --repeats):
- `train eager` / `train compile`: one training step of VIM-Base (the `vim-base` size of `vimtool plan`: 1024
  tokens, 8192 codes, 1000 classes) at micro-batch --micro, bf16 autocast with fp32 weights, AdamW; MFU = the
  plan's model FLOPs of the step / time / the GPU's peak bf16 TFLOP/s (vimtool/plan/hardware.py). `compile`
  wraps the model in `torch.compile` as `train.compile` does (the compile time is printed, not in the median).
- `train fsdp2 (1 GPU)`: the same step with torch's `fully_shard` on every block and on the model (one rank),
  only when vimtool's engine has FSDP (`vimtool.train.distributed` exists); what the sharding wrapper costs.
- `decode batch 1` / `decode batch 64`: KV-cached sampling of whole 1024-token images
  (`vimtool.sampling.vim.generate_batch`, guidance off), generated tokens/s.
Rows that cannot run here print `skipped: ... (needs CUDA)` (or why) and are left out of the table.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

import torch  # noqa: E402

from bench.bench_plan import build_training, gpu_key  # noqa: E402
from bench.harness import median_seconds, parser, setup, write_results  # noqa: E402
from vimtool.plan import GPUS, PlanConfig, model_configs, plan  # noqa: E402

HEADER = ["row", "micro-batch", "ms/step", "tokens/s", "TFLOP/s", "MFU"]


def skipped(what: str, why: str = "needs CUDA") -> None:
    print(f"skipped: {what} ({why})", flush=True)


def plan_config(smoke: bool, micro: int) -> PlanConfig:
    if smoke:  # a micro VIM: the same code path in seconds
        return PlanConfig(model="vim-micro", codebook_size=64, token_grid=4, micro_batch=micro, global_batch=micro)
    return PlanConfig(model="vim-base", micro_batch=micro, global_batch=micro)


def train_rows(args, device: str) -> list[list]:
    cfg = plan_config(args.smoke, args.micro)
    est = plan(cfg)
    config = model_configs(cfg)["model"]
    peak = GPUS[gpu_key(torch.cuda.get_device_name())].bf16_tflops * 1e12 if device == "cuda" else float("nan")
    variants = ["eager", "compile", "fsdp2 (1 GPU)"]
    rows = []
    for variant in variants:
        if variant != "eager" and device != "cuda":
            skipped(f"train {variant} step")
            continue
        if variant.startswith("fsdp2") and importlib.util.find_spec("vimtool.train.distributed") is None:
            skipped(f"train {variant} step", "vimtool.train.distributed is not there yet: the engine has no FSDP2")
            continue
        rows.append(time_training(variant, config, args, device, est.flops_per_sample * args.micro, peak))
        if device == "cuda":
            torch.cuda.empty_cache()  # the variant's model and optimizer are gone with its function's frame
    return rows


def time_training(variant: str, config, args, device: str, flops: float, peak: float) -> list:
    """One row: the median time of a training step of VIM at `config` under `variant`."""
    model, loss_fn, batch = build_training("vim", config, args.micro, device)
    if variant == "compile":
        model.forward = torch.compile(model.forward)  # as train.compile: the same parameters
    if variant.startswith("fsdp2"):
        shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = loss_fn(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    start = time.perf_counter()
    step()  # the first call compiles under torch.compile
    print(f"train {variant}: first step {time.perf_counter() - start:.1f} s", flush=True)
    t = median_seconds(step, args.repeats, warmup=2)
    return [f"train {variant}", args.micro, 1000 * t.median, args.micro * config.num_tokens / t.median,
            flops / t.median / 1e12, flops / t.median / peak]  # fmt: skip


def shard(model: torch.nn.Module) -> None:
    """FSDP2 on one rank: `fully_shard` on every transformer block, then on the model (torchtitan's order)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from vimtool.nn.transformer import Block

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        dist.init_process_group("nccl", rank=0, world_size=1)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in list(model.modules()):
        if isinstance(module, Block):
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def decode_rows(args, device: str) -> list[list]:
    from vimtool.models.vim import VIM
    from vimtool.sampling import vim as vim_sampling
    from vimtool.sampling.logits import SamplingParams, row_uniforms

    # build_training made `device` the default; the sampler draws its uniforms on the CPU by design
    torch.set_default_device("cpu")
    config = model_configs(plan_config(args.smoke, 1))["model"]
    torch.manual_seed(0)
    model = VIM(config).to(device).eval()
    rows = []
    for batch in (1, 2) if args.smoke else (1, 64):
        labels = (torch.arange(batch) % max(1, config.num_classes)).to(device) if config.num_classes else None
        u = row_uniforms(0, 0, batch, config.num_tokens).to(device)

        def run(labels=labels, u=u):
            vim_sampling.generate_batch(model, labels, SamplingParams(), u, use_cache=True)
            if device == "cuda":
                torch.cuda.synchronize()

        t = median_seconds(run, args.repeats, warmup=1)
        rows.append([f"decode batch {batch}", batch, 1000 * t.median / config.num_tokens,
                     batch * config.num_tokens / t.median, None, None])  # fmt: skip
    return rows


def main() -> None:
    ap = parser(__doc__, threads=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    ap.add_argument("--micro", type=int, default=8, help="training micro-batch (default 8)")
    ap.add_argument("--repeats", type=int, default=5)
    args = setup(ap.parse_args())
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.smoke:
        args.micro, args.repeats = 2, 1
    rows = train_rows(args, args.device) + decode_rows(args, args.device)
    what = "a micro VIM (smoke)" if args.smoke else "VIM-Base (1024 tokens, 8192 codes)"
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    write_results("gpu_steps", HEADER, rows, args.out, extra={"device": gpu},
                  title=f"{what} on {gpu}: training steps (bf16 autocast on CUDA) and KV-cached decoding")  # fmt: skip


if __name__ == "__main__":
    main()
