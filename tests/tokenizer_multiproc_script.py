"""Run under `accelerate launch` by tests/test_tokenizer_multiproc.py: a tiny tokenizer run with the k-means codebook
init and the dead-code restart, recording on every rank what the test compares across ranks.

Records per rank (rank{r}.json): for each step, the sha256 of the codebook the forward used (after any init or
restart of that step) and of the discriminator, the steps whose R1 penalty ran, and at every restart check this rank's own usage counts and the global ones it judged by.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from vimtool.config import load_config
from vimtool.train.engine import train
from vimtool.train.tokenizer import TokenizerRunConfig, TokenizerTask


class RecordingTokenizerTask(TokenizerTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.codebook_sha: dict[int, str] = {}
        self.disc_sha: dict[int, str] = {}
        self.r1_steps: list[int] = []
        self.restarted: dict[int, int] = {}
        self.usage_checks: list[dict] = []

    def _global_usage(self):
        usage = super()._global_usage()
        self.usage_checks.append({"local": self._usage.tolist(), "global": usage.tolist()})
        return usage

    def train_step(self, models, batch, step):
        out = super().train_step(models, batch, step)
        self.rank = self.engine.accelerator.process_index
        codebook = self.engine.unwrap(models["model"]).quantizer.codebook.detach()
        self.codebook_sha[step] = hashlib.sha256(codebook.cpu().numpy().tobytes()).hexdigest()
        if "disc" in models:  # the discriminator as this step's forward saw it (trained with lazy R1 under DDP)
            disc = self.engine.unwrap(models["disc"])
            self.disc_sha[step] = hashlib.sha256(
                b"".join(p.detach().cpu().numpy().tobytes() for p in disc.parameters())
            ).hexdigest()
        if out.metrics.get("restarted_codes"):
            self.restarted[step] = int(out.metrics["restarted_codes"])
        if "r1" in out.metrics:
            self.r1_steps.append(step)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = load_config(TokenizerRunConfig, None, {
        "data": "shapes:size=16,n=64", "size": "micro", "eval_images": 8, "grid_images": 4, "eval_batch_size": 8,
        "loss": {"perceptual": 0.0, "adversarial": 0.1, "disc_start": 1, "r1_every": 2},  # R1 under DDP too
        "disc_channels": 8, "disc_max_channels": 16,
        "codebook_init": "kmeans", "codebook_init_step": 1, "codebook_init_images": 16, "dead_code_restart": 2,
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "min_lr": 1e-4, "eval_every": 0,
                  "save_every": 0, "log_every": 1, "out_dir": str(Path(a.out) / "run"), "progress": False, "seed": 3},
    })  # fmt: skip
    task = RecordingTokenizerTask(cfg)
    train(task, cfg.train)
    Path(a.out, f"rank{task.rank}.json").write_text(
        json.dumps(
            {
                "codebook_sha": task.codebook_sha,
                "usage_checks": task.usage_checks,
                "disc_sha": task.disc_sha,
                "r1_steps": task.r1_steps,
                "restarted": task.restarted,
            }
        )
    )


if __name__ == "__main__":
    main()
