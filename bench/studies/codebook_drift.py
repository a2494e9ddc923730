"""Why unused l2 codes stay unused: how fast the tokenizer's lookup vectors move early in training, and what that
does to a codebook seeded by k-means at a given step.

    python bench/studies/codebook_drift.py                         # mnist5k, k-means at step 0, then at step 100
    python bench/studies/codebook_drift.py --data shapes --steps 300
    python bench/studies/codebook_drift.py --smoke                 # seconds: micro tokenizer, 6 steps

A plain loop (AdamW with the recipe's betas, lr, weight decay off for the codebook, linear warmup; no cosine
decay, no engine) trains the recipe's tokenizer (recipes/tokenizer_{mnist,shapes}.yaml) and, every `--every`
steps, encodes 64 fixed training images and reports: codes used by their 4,096 tokens; the spread of the
lookup-space vectors (squared norm of their mean unit vector: 1 = all identical); their drift (mean cosine to
the same tokens' vectors at step 0); and the mean cosine between each vector and its chosen code. The recipe's own
`codebook_init` runs inside `TokenizerTask.train_step` at `codebook_init_step`, exactly as in training.
Measured on mnist5k (docs/RESULTS.md, tokenizer section): the vectors turn ~50 degrees in the first 40 steps
(drift 0.63), so codes seeded at step 0 are left behind (codes used 444 -> 19 by step 40); seeded at step 100,
after the warmup, 450+ stay used.
Writes bench/studies/results/codebook_drift_<data>_init<step>.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout: python bench/studies/X.py

from bench.harness import STUDY_RESULTS as RESULTS  # noqa: E402
from bench.harness import parser, setup, write_results  # noqa: E402
from bench.studies import fixtures as fx  # noqa: E402

RECIPES = {
    "mnist5k": fx.REPO / "recipes" / "tokenizer_mnist.yaml",
    "shapes": fx.REPO / "recipes" / "tokenizer_shapes.yaml",
}


def probe(data: str, steps: int, init_step: int, every: int, smoke: bool, seed: int) -> list[list]:
    import torch
    import torch.nn.functional as F

    from vimtool.config import load_config
    from vimtool.train.tokenizer import TokenizerRunConfig, TokenizerTask

    over: dict = {
        "codebook_init": "kmeans",
        "codebook_init_step": init_step,
        "dead_code_restart": 0,
        "train": {"seed": seed},
    }
    if smoke:
        over |= {
            "size": "micro",
            "image_size": 16,
            "model": {"codebook_size": 64, "lookup_dim": 8},
            "limit": 64,
            "codebook_init_images": 16,
        }
    cfg = load_config(TokenizerRunConfig, RECIPES[data], over)
    task = TokenizerTask(cfg)
    torch.manual_seed(seed)
    models = task.build_models()
    model, q = models["model"], models["model"].quantizer
    ds = task.train_dataset()
    fixed = torch.stack([ds[i]["image"] for i in range(min(64, len(ds)))])
    codebook = [q.codebook]
    rest = [p for p in model.parameters() if p is not q.codebook]
    t = cfg.train
    opt = torch.optim.AdamW(
        [{"params": rest, "weight_decay": t.weight_decay}, {"params": codebook, "weight_decay": 0.0}],
        lr=t.lr,
        betas=tuple(t.betas),
    )
    gen = torch.Generator().manual_seed(seed)
    rows, start = [], None
    for step in range(steps + 1):
        if step % every == 0 or step == steps or step in (init_step, init_step + 1):
            with torch.no_grad():
                z = q.project(model.encode_features(fixed))  # (B, T, L)
                ids = q.nearest(z).flatten()  # (B*T,)
                unit = F.normalize(z.reshape(-1, z.shape[-1]), dim=-1)  # (B*T, L)
                start = unit if start is None else start
                codes = F.normalize(q._codes(), dim=-1)[ids]  # (B*T, L)
                rows.append([data, step, "after" if step > init_step else "before", ids.unique().numel(),
                             round(float(unit.mean(0).pow(2).sum()), 3), round(float((unit * start).sum(-1).mean()), 3),
                             round(float((unit * codes).sum(-1).mean()), 3)])  # fmt: skip
        if step == steps:
            break
        for g in opt.param_groups:
            g["lr"] = t.lr * min(1.0, (step + 1) / max(1, t.warmup_steps))
        idx = torch.randint(len(ds), (t.batch_size,), generator=gen).tolist()
        out = task.train_step(models, torch.stack([ds[i]["image"] for i in idx]), step)
        opt.zero_grad()
        out.losses["model"].backward()
        opt.step()
    return rows


def main() -> None:
    ap = parser(__doc__, RESULTS)
    ap.add_argument("--data", default="mnist5k", choices=sorted(RECIPES))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--init-steps", default="0,100", help="k-means init steps to compare, one probe run each")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = setup(ap.parse_args())
    fx.quiet()
    init_steps = [int(s) for s in a.init_steps.split(",")]
    if a.smoke:
        a.data, a.steps, a.every, init_steps = "shapes", 6, 2, [2]
    header = ["data", "step", "vs init", "codes used (64 img)", "spread", "drift (cos to step 0)", "cos to code"]
    prefix = "smoke_" if a.smoke else ""
    for init in init_steps:
        rows = probe(a.data, a.steps, init, a.every, a.smoke, a.seed)
        write_results(f"{prefix}codebook_drift_{a.data}_init{init}", header, rows, a.out,
                      title=f"Lookup-vector drift, k-means codebook init at step {init} ({a.data})", extra={"args": vars(a)})  # fmt: skip


if __name__ == "__main__":
    main()
