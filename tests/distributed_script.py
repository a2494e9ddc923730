"""Run by tests/test_distributed.py, as 1 process or under `accelerate launch` as 2: tiny runs of all three model
families (tokenizer, VIM, Parti) through the ONE engine, with `train.parallel` ddp and fsdp, and resumes.

    python tests/distributed_script.py --root R --mode data            # shared data (tokenizer ckpt, shards)
    python tests/distributed_script.py --root R --mode fresh --runs lm:ddp,lm:fsdp ...
    python tests/distributed_script.py --root R --mode resume --dst R/lm_2to1   # after rewind(R/2p/lm_fsdp, ...)
    python tests/distributed_script.py --root R --mode restarts --dst R/k [--die-at 7] [--resume]

Every run: 10 steps, global batch 8, micro-batch 4 (so accumulation 2 on 1 process, 1 on 2), log every step,
checkpoints at 5 and 10, no dropout or random augmentation (so 1 and 2 processes draw the same numbers).
Out: R/<n>p/<family>_<parallel>/ (the run) and .../params_rank<r>.json (the parameter types train_step saw).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

from vimtool import checkpoint as ckpt  # noqa: E402
from vimtool.config import load_config  # noqa: E402
from vimtool.train import train  # noqa: E402

STEPS = 10
TRAIN = {"steps": STEPS, "batch_size": 8, "micro_batch": 4, "lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 2,
         "clip_grad": 1.0, "save_every": 5, "eval_every": 0, "log_every": 1, "progress": False, "seed": 3}  # fmt: skip


def make_data(root: Path) -> None:
    """A micro tokenizer checkpoint, class-labelled token shards (VIM) and captioned token shards (Parti)."""
    from vim_fixtures import make_shards, make_tokenizer

    from vimtool.data import shapes
    from vimtool.data.shards import ShardWriter, TokenizerIdentity

    tok = make_tokenizer(root / "tok")
    make_shards(root / "lm_shards", tok, n=48)
    identity = TokenizerIdentity.from_dict(ckpt.tokenizer_identity(tok))
    g = torch.Generator().manual_seed(0)
    with ShardWriter(root / "t2i_shards", identity, rows_per_shard=48) as w:
        tokens = torch.randint(0, identity.codebook_size, (48, identity.num_tokens), generator=g)
        w.add_batch(tokens, None, shapes.captions(48, "train"), [f"s{i}" for i in range(48)])


def make_task(family: str, root: Path, out: Path, parallel: str, resume: bool = False):
    train_cfg = {**TRAIN, "out_dir": str(out), "parallel": parallel, "resume": resume}
    if parallel == "fsdp":  # also exercises activation checkpointing under FSDP (same numbers expected)
        train_cfg["activation_checkpointing"] = True
    if family == "tokenizer":
        from vimtool.train.tokenizer import TokenizerRunConfig, TokenizerTask

        cfg = load_config(TokenizerRunConfig, None, {
            "data": "shapes:size=16,n=64", "size": "micro", "eval_images": 8, "grid_images": 4, "eval_batch_size": 8,
            "loss": {"perceptual": 0.0, "adversarial": 0.1, "disc_start": 2, "r1_every": 2},  # D + lazy R1 sharded
            "disc_channels": 8, "disc_max_channels": 16,
            "codebook_init": "kmeans", "codebook_init_step": 1, "codebook_init_images": 16,
            "train": train_cfg,
        })  # fmt: skip
        return TokenizerTask(cfg), cfg.train
    if family == "lm":
        from vimtool.train.lm import LMRunConfig, LMTask

        cfg = load_config(LMRunConfig, None, {
            "shards": [str(root / "lm_shards")], "size": "micro", "val_fraction": 0.25,
            "model": {"dropout": 0.0, "label_dropout": 0.0}, "train": {**train_cfg, "ema": 0.9},
        })  # fmt: skip
        return LMTask(cfg), cfg.train
    from vimtool.train.t2i import T2IRunConfig, T2ITask

    cfg = load_config(T2IRunConfig, None, {
        "shards": [str(root / "t2i_shards")], "size": "micro", "text_vocab_size": 300, "val_fraction": 0.1,
        "cond_drop": 0.0, "train": train_cfg,
    })  # fmt: skip
    return T2ITask(cfg), cfg.train


def run(task, cfg, record: Path) -> Path:
    """train(), recording which parameter types (DTensor under FSDP) the first train_step was handed."""
    inner = task.train_step

    def train_step(models, batch, step):
        if not record.exists() or step == 0:
            kinds = {n: sorted({type(p).__name__ for p in m.parameters()}) for n, m in models.items()}
            placements = {n: str(getattr(next(m.parameters()), "placements", None)) for n, m in models.items()}
            record.write_text(json.dumps({"kinds": kinds, "placements": placements}))
        return inner(models, batch, step)

    task.train_step = train_step
    return train(task, cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--mode", choices=["data", "fresh", "resume", "restarts"], required=True)
    ap.add_argument("--runs", default="", help="family:parallel,... (fresh)")
    ap.add_argument("--dst", default="")
    ap.add_argument("--family", default="lm")
    ap.add_argument("--die-at", type=int, default=-1)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    root = Path(a.root)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if a.mode == "data":
        make_data(root)
        return
    if a.mode == "fresh":
        for item in a.runs.split(","):
            family, parallel = item.split(":")
            out = root / f"{world}p" / f"{family}_{parallel}"
            task, cfg = make_task(family, root, out, parallel)
            run(task, cfg, out.parent / f"{family}_{parallel}_params_rank{rank}.json")
        if not a.dst:
            return
    if a.mode == "restarts":
        restarts_run(Path(a.dst), a.die_at, a.resume)
        return
    # resume: a run folder rewound by rewind(), continued on this number of processes
    dst = Path(a.dst)
    task, cfg = make_task(a.family, root, dst, "fsdp", resume=True)
    run(task, cfg, dst.parent / f"{dst.name}_params_rank{rank}.json")


def restarts_run(out: Path, die_at: int, resume: bool) -> None:
    """A tiny tokenizer with dead-code restarts every 2 steps (plain, 1 process), optionally SIGKILLed inside step
    `die_at`: its checkpoints at 3 and 6 fall inside a restart window and right on a restart step."""
    from vimtool.train.tokenizer import TokenizerRunConfig, TokenizerTask

    cfg = load_config(TokenizerRunConfig, None, {
        "data": "shapes:size=16,n=64", "size": "micro", "eval_images": 8, "grid_images": 4, "eval_batch_size": 8,
        "loss": {"perceptual": 0.0, "adversarial": 0.0}, "dead_code_restart": 2,
        "train": {**TRAIN, "steps": 8, "micro_batch": 0, "save_every": 3, "out_dir": str(out), "resume": resume},
    })  # fmt: skip
    task = TokenizerTask(cfg)
    inner = task.train_step

    def train_step(models, batch, step):
        if step == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return inner(models, batch, step)

    task.train_step = train_step
    train(task, cfg.train)


def rewind(src: Path, dst: Path, step: int) -> Path:
    """A copy of run folder `src` whose latest checkpoint is `step` (later ones, final and metrics removed)."""
    shutil.copytree(src, dst, symlinks=True)
    for later in sorted((dst / "checkpoints").glob("step_*")):
        if int(later.name.split("_")[1]) > step:
            shutil.rmtree(later)
    for f in ("final", "latest", "metrics.jsonl"):
        (dst / f).unlink()
    ckpt.write_pointer(dst / "latest", dst / "checkpoints" / f"step_{step:06d}")
    return dst


if __name__ == "__main__":
    main()
