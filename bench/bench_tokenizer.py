"""Tokenizer throughput: encode and decode images/s (tiny at 32x32, Small (SS) at 256x256) and tokenize-dataset
end to end (data loading + resize + encode + Parquet writing), images/s. Prints a table.

    python bench/bench_tokenizer.py            # batch 64 for both sizes (SS at 256 on a CPU takes minutes:
                                               #   --small-batch 8 there; images/s hardly depends on it)
    python bench/bench_tokenizer.py --smoke    # seconds: tiny at batch 64, SS at 64x64 batch 2, a small tokenize run
    python bench/bench_tokenizer.py --only train-step --threads 1   # the quickstart tokenizer's training step

The train-step part times one training step (forward, L2 + VQ loss, backward, AdamW) of the quickstart's tokenizer
at batch 32 on 32x32 images (not --batch): first as its previous recipe had it (tiny, decoder width 128, a
32-channel pixel refiner, tanh GELU), then in variants that differ in the MLP's GELU (tanh or erf), the refiner's
conv layout (NCHW or channels-last), its width, and the codebook size; recipes/parti_shapes_tokenizer.yaml is now
the variant "erf GELU, channels-last refiner 64 wide". All variants run interleaved round by round
(harness.paired_rounds), and each is reported as the ratio of its step time to the first's. Writes
bench/results/tokenizer_train_step.{json,md}.

Weights are random (throughput does not depend on them). Threads: torch's default unless --threads is given.
Medians of --iters timed calls after a warm-up. Writes bench/results/tokenizer.{json,md}.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import RESULTS, median_seconds, now, parser, setup, write_results  # noqa: E402
from vimtool.checkpoint import save_model  # noqa: E402
from vimtool.models.vitvqgan import ViTVQGAN, size_config  # noqa: E402
from vimtool.tokenize import TokenizeConfig, tokenize_dataset  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_codec(size: str, image_size: int | None, batch: int, iters: int, device: torch.device) -> tuple[float, float]:
    kw = {"image_size": image_size} if image_size else {}
    model = ViTVQGAN(size_config(size, **kw)).to(device).eval()
    s = model.config.image_size
    x = torch.rand(batch, 3, s, s, device=device) * 2 - 1
    with torch.inference_mode():
        ids = model.encode(x)

        def run(fn):
            def call():
                fn()
                _sync(device)

            return batch / median_seconds(call, iters).median

        enc = run(lambda: model.encode(x))
        dec = run(lambda: model.decode(ids))
    return enc, dec


def time_tokenize(n: int, batch: int, data: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp) / "tok"
        save_model(ViTVQGAN(size_config("tiny")), tok)
        cfg = TokenizeConfig(tokenizer=str(tok), data=data, out=str(Path(tmp) / "shards"), limit=n,
                             batch_size=batch, rows_per_shard=max(1, n // 4), progress=False)  # fmt: skip
        t = now()
        paths = tokenize_dataset(cfg)
        dt = now() - t
        assert paths
    return n / dt


QUICKSTART_TOKENIZER = Path(__file__).resolve().parents[1] / "recipes" / "parti_shapes_tokenizer.yaml"
# (label, fields of the quickstart tokenizer's model config replaced, refiner convs in NCHW as before channels-last);
# each variant sets the GELU and the refiner width itself, so the rows stay what they say whatever the recipe holds
BEFORE = {"mlp_act": "gelu_tanh", "out_conv": 32, "codebook_size": 512}
TRAIN_STEP_VARIANTS = (
    ("tanh GELU, NCHW refiner (before)", BEFORE, True),
    ("tanh GELU, channels-last refiner", BEFORE, False),
    ("erf GELU, channels-last refiner", {**BEFORE, "mlp_act": "gelu"}, False),
    ("erf GELU, channels-last refiner 64 wide", {**BEFORE, "mlp_act": "gelu", "out_conv": 64}, False),
    ("erf GELU, channels-last refiner, 1024 codes", {**BEFORE, "mlp_act": "gelu", "codebook_size": 1024}, False),
)


def time_train_steps(batch: int, rounds: int) -> list[list]:
    """One AdamW training step per variant per round, interleaved; rows [variant, ms per step, ratio to the first]."""
    from dataclasses import replace

    from torch import nn

    from bench.harness import paired_ratio, paired_rounds
    from vimtool.config import load_config
    from vimtool.train.tokenizer import TokenizerRunConfig

    recipe = load_config(TokenizerRunConfig, QUICKSTART_TOKENIZER).model_config()
    torch.manual_seed(0)
    x = torch.rand(batch, 3, recipe.image_size, recipe.image_size) * 2 - 1
    steps = {}
    for label, fields, nchw in TRAIN_STEP_VARIANTS:
        model = ViTVQGAN(replace(recipe, **fields)).train()
        if nchw:  # the refiner as it was: plain nn.Conv2d on NCHW tensors (same parameters)
            for conv in (model.out_conv.conv1, model.out_conv.conv2):
                conv.__class__ = nn.Conv2d
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            recon, aux = model(x)
            loss = (recon - x).square().mean() + aux["vq_loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[label] = step
    t = paired_rounds(steps, rounds, warmup=2)
    first = t[TRAIN_STEP_VARIANTS[0][0]]
    return [[k, 1000 * v.median, paired_ratio(v, first)] for k, v in t.items()]


def main() -> None:
    ap = parser(__doc__, RESULTS, threads=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--small-batch", type=int, default=64, help="batch for Small at 256x256 (CPU: try 8)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--tokenize-images", type=int, default=2000)
    ap.add_argument("--only", choices=("codec", "train-step"), help="one part (default: both)")
    ap.add_argument("--rounds", type=int, default=20, help="train-step: interleaved rounds")
    args = setup(ap.parse_args())
    if args.only != "codec":
        rounds = 2 if args.smoke else args.rounds
        rows = time_train_steps(32, rounds)
        title = (
            f"The quickstart tokenizer's training step (batch 32, 32x32, AdamW), {torch.get_num_threads()} "
            f"thread(s); medians of {rounds} interleaved rounds; ratio = step time / the first row's"
        )
        write_results("tokenizer_train_step", ["variant", "ms per step", "time ratio"], rows, args.out,
                      extra={"args": vars(args)}, title=title)  # fmt: skip
    if args.only == "train-step":
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    small_batch = 2 if args.smoke else args.small_batch
    iters = 1 if args.smoke else args.iters
    small_img = 64 if args.smoke else 256  # smoke: the SS architecture at a quarter of its side
    for name, size, img, batch in (("tiny", "tiny", 32, args.batch), ("Small (SS)", "SS", small_img, small_batch)):
        enc, dec = time_codec(size, img, batch, iters if size == "SS" else max(iters, 3), device)
        rows.append([f"{name} {img}x{img}", batch, enc, dec, None])
    n = 256 if args.smoke else args.tokenize_images
    tok = time_tokenize(n, args.batch, "mnist5k")
    rows.append([f"tokenize-dataset (tiny, mnist5k, {n} images)", args.batch, None, None, tok])
    header = ["model", "batch", "encode img/s", "decode img/s", "end to end img/s"]
    title = f"Tokenizer throughput on {device}, random weights; medians of {iters} calls after a warm-up"
    write_results("tokenizer", header, rows, args.out, extra={"args": vars(args)}, title=title)


if __name__ == "__main__":
    main()
