"""Peak memory per process of a training step: DDP vs FSDP2, with and without activation checkpointing (CPU).

    python bench/bench_memory.py            # VIM, width 384, depth 6, 256 tokens, batch 8 per process, 2 processes
    python bench/bench_memory.py --batch 2 --name memory_batch2   # activations 4x smaller: model state dominates
    python bench/bench_memory.py --smoke    # seconds: a tiny VIM, checks the script runs

Each setting runs as 2 fresh processes (gloo, this script's own `--child` mode; no launcher) that build the model,
wrap it as vimtool's engine does (`vimtool.train.distributed.parallelize` for FSDP and activation checkpointing,
torch's DistributedDataParallel for DDP), build AdamW from the (sharded) parameters and run `--steps` training
steps. Memory is the process's RSS high-water mark (`ru_maxrss`: resident memory, so CPU numbers include the
allocator's retained free blocks and torch's own ~hundreds of MB), reported as the peak and as the growth over the
RSS measured right before the model was built ("training MB": weights, gradients, AdamW state, activations);
"state MB" counts the tensors exactly: this process's weights + gradients + AdamW state after a step (local shards).
Expected: FSDP shrinks weights + gradients + optimizer state to ~1/N per process; checkpointing shrinks the
activations to one block's input per block (plus one block's recomputation). Writes bench/results/memory.{json,md}.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, parser, setup, write_results  # noqa: E402

SMOKE = dict(vocab=64, grid=4, dim=32, depth=2, heads=2, batch=2)
FULL = dict(vocab=4096, grid=16, dim=384, depth=6, heads=6, batch=8)
SETTINGS = [("ddp", False), ("ddp", True), ("fsdp", False), ("fsdp", True)]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(parallel: str, checkpointing: bool, steps: int, size: dict) -> dict:
    """One rank (RANK/WORLD_SIZE/MASTER_* from the parent): build, wrap, train `steps` steps, report memory."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from vimtool.models.vim import VIM, VIMConfig
    from vimtool.train import distributed as D
    from vimtool.train.optim import param_groups

    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    import torch.distributed.fsdp  # noqa: F401  (imported before the baseline: its code is not training memory)
    import torch.distributed.tensor  # noqa: F401

    before = _rss_mb()
    torch.manual_seed(0)
    g, v = size["grid"], size["vocab"]
    model = VIM(VIMConfig(vocab_size=v, grid=(g, g), dim=size["dim"], depth=size["depth"], heads=size["heads"],
                          mlp_dim=4 * size["dim"], num_classes=10, dropout=0.0))  # fmt: skip
    mesh = D.fsdp_mesh(torch.device("cpu"))[0] if parallel == "fsdp" else None
    D.parallelize(model, mesh=mesh, activation_checkpointing=checkpointing)
    run = torch.nn.parallel.DistributedDataParallel(model) if parallel == "ddp" else model
    opt = torch.optim.AdamW(param_groups(model, 1e-4, 0.1))
    gen = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(steps):
        ids = torch.randint(0, v, (size["batch"], g * g), generator=gen)
        labels = torch.randint(0, 10, (size["batch"],), generator=gen)
        logits = run(ids[:, :-1], labels)  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
        opt.step()
        state_mb = _tensor_mb([*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None),
                               *(t for st in opt.state.values() for t in st.values() if torch.is_tensor(t))])  # fmt: skip
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())  # this rank's share under FSDP (local shards)
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    return {
        "peak_mb": peak,
        "training_mb": peak - before,
        "params": params,
        "local_params": local,
        "state_mb": state_mb,
    }


def _tensor_mb(tensors) -> float:
    """Bytes this process holds for `tensors` (a DTensor counts its local shard only)."""
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local) / 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_settings(settings: list[tuple[str, bool]], steps: int, smoke: bool, batch: int) -> list[list[dict]]:
    """2 fresh processes running `settings` in turn; returns [setting][rank] reports. One setting per pair gives
    true peaks (the high-water mark is per process); --smoke runs all in one pair (numbers meaningless, fast)."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        todo = ",".join(f"{p}:{int(c)}" for p, c in settings)
        cmd = [sys.executable, __file__, "--child", todo, str(steps), "--batch", str(batch)]
        procs.append(subprocess.Popen(cmd + (["--smoke"] if smoke else []), env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{settings}: a rank failed")
    per_rank = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    return [[r[i] for r in per_rank] for i in range(len(settings))]


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--steps", type=int, default=3, help="training steps per process")
    ap.add_argument("--batch", type=int, default=0, help="batch per process (default 8; smoke 2)")
    ap.add_argument("--name", default="memory", help="results name (default memory)")
    ap.add_argument("--child", nargs=2, metavar=("SETTINGS", "STEPS"), help="internal: parallel:checkpointing,...")
    args = ap.parse_args()
    size = dict(SMOKE if args.smoke else FULL)
    if args.batch:
        size["batch"] = args.batch
    if args.child:
        todo, steps = args.child
        reports = [child(p, bool(int(c)), int(steps), size) for p, c in (t.split(":") for t in todo.split(","))]
        print(json.dumps(reports))
        return
    setup(args)
    steps = 1 if args.smoke else args.steps
    b = size["batch"]
    if args.smoke:
        results = run_settings(SETTINGS, steps, True, b)
    else:
        results = [run_settings([s], steps, False, b)[0] for s in SETTINGS]
    rows = []
    for (parallel, checkpointing), ranks in zip(SETTINGS, results):
        rows.append([
            f"{parallel}{' + activation ckpt' if checkpointing else ''}",
            ranks[0]["params"], max(r["local_params"] for r in ranks),
            round(max(r["state_mb"] for r in ranks), 1),
            round(max(r["peak_mb"] for r in ranks), 1), round(max(0.0, *(r["training_mb"] for r in ranks)), 1),
        ])  # fmt: skip
    s = size
    title = (f"Peak memory per process, 2 CPU processes (gloo): VIM width {s['dim']}, depth {s['depth']}, "
             f"{s['grid'] ** 2} tokens, batch {s['batch']} per process, AdamW, {steps} steps; RSS high-water (ru_maxrss)")  # fmt: skip
    header = ["setting", "parameters", "parameters per process", "state MB", "peak RSS MB", "training MB"]
    write_results(args.name, header, rows, args.out, title=title)


if __name__ == "__main__":
    main()
