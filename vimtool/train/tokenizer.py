"""The ViT-VQGAN training task (`vimtool train-tokenizer`) and the tokenizer health evaluation.

Stage 1 of ViT-VQGAN (arXiv 2110.04627, section 3.3), run by the ONE engine loop (vimtool/train/engine.py):

    generator:      L = w_vq L_VQ + w_l2 L_2 + w_ll L_logit-laplace + w_p L_perceptual + w_adv L_adv
    discriminator:  softplus(D(fake)) + softplus(-D(real)) + (gamma / 2) ||grad D(real)||^2 (lazy R1)

with the paper's weights 1 / 1 / 0.1 / 0.1 / 0.1 as defaults (vimtool/models/losses.py). The discriminator has
its own optimizer (engine `OptimizerSpec("disc", "disc")`) and starts at ``loss.disc_start``; a weight of 0
switches a term off entirely (adversarial 0: no discriminator is built; perceptual 0: no VGG16 file needed).
Training defaults are the paper's (batch 256, Adam b1 0.9 b2 0.99, warmup to 1e-4 over 50k steps, cosine to
5e-5, weight decay 1e-4, 500k steps); the CPU recipes in recipes/tokenizer_*.yaml shrink them.

Health metrics (vimtool/metrics/codebook.py), computed at each evaluation on ``eval_images`` held-out images and
by ``evaluate_tokenizer`` (the `eval-tokenizer` command): reconstruction L2 and PSNR on [0, 1] pixels, codebook
usage per 256 images (the paper's definition), perplexity, dead codes; plus a PNG grid of originals beside
their reconstructions (out_dir/eval/recon_step_NNNNNN.png); on `shapes` data also ``shapes_check``, the share of
reconstructions the set's checker still finds true to their caption.

``codebook_init`` ("random" = the paper's and the default; "kmeans"): once, before the forward of step
``codebook_init_step``, the codes become k-means centroids of lookup-space encoder outputs of
``codebook_init_images`` training images (`VectorQuantizer.kmeans_init`), for the factorized and plain quantizers
alike. Not at step 0 in the recipes: measured on the tiny tokenizer (lr 2e-3, bench/studies/codebook_drift.py),
the encoder's lookup vectors turn ~50 degrees in the first 40 steps, so codes seeded on the untrained encoder are
stranded (codes used by 64 images: 444 right after the init, 19 at step 40); seeded after the 100-step warmup,
450+ stay used (docs/RESULTS.md).

``dead_code_restart`` (NOT in the paper, 0 = off): every N steps, codes no token used in those N steps are
moved onto encoder outputs of the batch (error-weighted draws, `VectorQuantizer.restart_codes`). The paper's
500k steps let the l2 codebook spread by itself; in a few thousand CPU steps it does not (measured on mnist5k,
2500 steps from a random codebook: usage 12% without, 99.6% with); the recipes used it until the k-means init
replaced it. With several processes the usage counts are summed over all ranks before codes are judged dead,
and rank 0's restarted codebook is broadcast (likewise the k-means init; under `train.parallel: fsdp` the
sharded codebook is gathered, changed, and resharded from rank 0's copy: `EngineHandle.gathered`). The restart
state (usage counts summed over ranks, the last batch's lookup vectors) is part of the training state
(state/task.safetensors), so a run killed and resumed restarts the same codes as an uninterrupted one, also on
another number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vimtool.atomic import save_png, write_json
from vimtool.checkpoint import load_model
from vimtool.config import ConfigError, build, deep_merge, to_dict
from vimtool.data import ImageDataset, open_source
from vimtool.data.shapes import check
from vimtool.data.transforms import make_grid, to_pil
from vimtool.errors import VimtoolError
from vimtool.metrics.codebook import CodebookHealth
from vimtool.models.discriminator import DiscriminatorConfig, StyleGANDiscriminator
from vimtool.models.losses import (
    TokenizerLossConfig,
    discriminator_loss,
    generator_adversarial_loss,
    l1_loss,
    l2_loss,
    logit_laplace_nll,
    r1_penalty,
)
from vimtool.models.perceptual import load_lpips
from vimtool.models.vitvqgan import SIZES, ViTVQGAN, ViTVQGANConfig
from vimtool.train.engine import OptimizerSpec, StepOutput, Task, TrainConfig, train

log = logging.getLogger(__name__)


def _paper_train_defaults() -> TrainConfig:
    # Section 3.3 / docs/PAPERS.md section 1: batch 256, 500k steps, Adam(0.9, 0.99), warmup to 1e-4 over 50k then cosine to
    # 5e-5, decoupled weight decay 1e-4.
    return TrainConfig(
        steps=500_000, batch_size=256, lr=1e-4, min_lr=5e-5, warmup_steps=50_000, schedule="cosine",
        betas=(0.9, 0.99), weight_decay=1e-4, eval_every=5000, save_every=5000,
    )  # fmt: skip


@dataclass
class TokenizerRunConfig:
    """Settings of `train-tokenizer` (recipe keys; `--set model.quantizer=plain`, `--set loss.perceptual=0`, ...).

    The model is a named size (``size``: tiny, SS, BB, SL, LL, ...) whose fields ``model`` overrides;
    ``image_size`` is a shortcut for ``model.image_size`` (the patch size stays: the image size must be a
    multiple of it).
    """

    data: str = ""
    split: str = "train"
    eval_split: str = "val"
    size: str = "tiny"
    image_size: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    disc_channels: int = 64  # discriminator width at full resolution (doubles per halving, capped)
    disc_max_channels: int = 512
    flip: bool = False  # random horizontal flips of training images
    eval_images: int = 256  # held-out images per evaluation (usage is per 256 images)
    grid_images: int = 16  # originals + reconstructions in the eval PNG
    eval_batch_size: int = 64
    limit: int | None = None  # use only the first N training images (quick runs)
    # Dead-code restart (NOT in the paper, off by default): every N steps, codes that no token used during those
    # N steps are re-initialized to random lookup-space encoder outputs of the current batch.
    dead_code_restart: int = 0
    # Codebook init: "random" (the paper's, the default) or "kmeans": once, before the forward of step
    # `codebook_init_step` (the recipes: 100, after the warmup; 0 = before any training), the codes become
    # k-means centroids (k-means++ seeds + `codebook_init_iters` Lloyd steps) of the lookup-space encoder outputs of
    # `codebook_init_images` training images, the same for the factorized and plain quantizers. An init, not a
    # restart: codes are never moved again.
    codebook_init: str = "random"
    codebook_init_images: int = 256
    codebook_init_iters: int = 10
    codebook_init_step: int = 0
    train: TrainConfig = field(default_factory=_paper_train_defaults)

    def model_config(self) -> ViTVQGANConfig:
        if self.size not in SIZES:
            raise ConfigError(f"unknown tokenizer size {self.size!r}; use one of {', '.join(SIZES)}")
        data = deep_merge(to_dict(SIZES[self.size]), self.model)
        if self.image_size is not None:
            data["image_size"] = self.image_size
        return build(ViTVQGANConfig, data, prefix="model.")


# ---------------------------------------------------------------------------------------------- evaluation
def _image_dataset(
    spec: str, split: str, image_size: int, train: bool, seed: int = 0, flip: bool = False, limit: int | None = None
):
    # training reads images by index (random order, resumable), so a Hub set is downloaded (memory-mapped), not streamed
    source = open_source(spec, split=split, seed=seed, limit=limit, streaming=False)
    return ImageDataset(source, image_size, train=train, seed=seed, flip=flip)


@torch.no_grad()
def evaluate_tokenizer(
    model: ViTVQGAN,
    dataset,
    num_images: int = 256,
    batch_size: int = 64,
    grid_path: str | Path | None = None,
    grid_images: int = 16,
    shapes_check: bool = False,
) -> dict[str, float]:
    """Health metrics of ``model`` on the first ``num_images`` of ``dataset`` (items with "image" in [-1, 1]).

    Writes a PNG grid (original, reconstruction, original, ...) to ``grid_path`` when given. With
    ``shapes_check`` (captioned `shapes` data) it also reports ``shapes_check``: the share of reconstructions
    that the set's own checker still finds true to their caption (colour, shape, position, relation, count),
    the ceiling a generator decoded by this tokenizer can reach on that checker.
    """
    n = min(num_images, len(dataset))
    if n == 0:
        raise VimtoolError("the held-out split has no images; use a larger data set or another --eval-split")
    device = next(model.parameters()).device
    health = CodebookHealth(model.codebook_size)
    pairs: list[torch.Tensor] = []
    checked: list[bool] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            items = [dataset[i] for i in range(start, min(n, start + batch_size))]
            x = torch.stack([it["image"] for it in items]).to(device)
            recon, aux = model(x)
            recon = recon.float().clamp(-1, 1)
            health.update(x, recon, aux["ids"])
            if shapes_check:
                checked += [check(to_pil(r.cpu()), it["caption"]).ok for r, it in zip(recon, items)]
            for a, b in zip(x, recon):
                if len(pairs) < 2 * grid_images:
                    pairs += [a.float().cpu(), b.cpu()]
    finally:
        model.train(was_training)
    if grid_path is not None and pairs:
        grid_path = Path(grid_path)
        grid_path.parent.mkdir(parents=True, exist_ok=True)
        ncol = 8 if len(pairs) >= 8 else len(pairs)
        save_png(make_grid(pairs, ncol=ncol), grid_path)
    metrics = health.compute()
    if checked:
        metrics["shapes_check"] = sum(checked) / len(checked)
    return metrics


def _is_shapes(spec: str) -> bool:
    return spec.split(":", 1)[0] == "shapes"


# ---------------------------------------------------------------------------------------------- the task
class TokenizerTask(Task):
    """ViT-VQGAN generator (+ StyleGAN discriminator) for the engine."""

    name = "tokenizer"

    def __init__(self, cfg: TokenizerRunConfig) -> None:
        if not cfg.data:
            raise VimtoolError("no training data: pass --data SPEC (e.g. --data shapes or --data mnist5k)")
        self.cfg = cfg
        self.model_cfg = cfg.model_config()
        self.loss = cfg.loss
        for k in ("vq", "l2", "l1", "logit_laplace", "perceptual", "adversarial", "r1_gamma"):
            if getattr(self.loss, k) < 0:
                raise ConfigError(f"loss.{k} must be >= 0, got {getattr(self.loss, k)}")
        if self.loss.logit_laplace > 0 and not self.model_cfg.logit_laplace:
            raise ConfigError(
                "loss.logit_laplace > 0 needs model.logit_laplace=true (the decoder must predict a scale); set one of them"
            )
        if self.loss.r1_every < 1:
            raise ConfigError(f"loss.r1_every must be >= 1, got {self.loss.r1_every}")
        if cfg.dead_code_restart < 0:
            raise ConfigError(f"dead_code_restart must be >= 0 (0 = off), got {cfg.dead_code_restart}")
        if cfg.codebook_init not in ("random", "kmeans"):
            raise ConfigError(f"codebook_init must be random or kmeans, got {cfg.codebook_init!r}")
        if cfg.codebook_init_images < 1 or cfg.codebook_init_iters < 0 or cfg.codebook_init_step < 0:
            raise ConfigError("codebook_init_images must be >= 1, codebook_init_iters >= 0 and codebook_init_step >= 0")
        self._codebook_ready = cfg.codebook_init == "random"
        if not self._codebook_ready and cfg.codebook_init_step >= cfg.train.steps:
            log.warning(
                "codebook_init_step %d >= train.steps %d: the k-means codebook init never runs (random codes)",
                cfg.codebook_init_step,
                cfg.train.steps,
            )
        self._eval_ds = None
        self._usage: torch.Tensor | None = None  # codes used since the last restart check
        self._last_lookup: torch.Tensor | None = None
        self._restart_step = -1
        self.lpips = None
        if self.loss.perceptual > 0:  # resolve the VGG16 files now: fail before any training, not at step 1
            self.lpips = load_lpips(self.loss.perceptual_weights)

    @property
    def uses_disc(self) -> bool:
        return self.loss.adversarial > 0

    def build_models(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {"model": ViTVQGAN(self.model_cfg)}
        if self.uses_disc:
            dcfg = DiscriminatorConfig(self.model_cfg.image_size, self.cfg.disc_channels, self.cfg.disc_max_channels)
            models["disc"] = StyleGANDiscriminator(dcfg)
        if self.lpips is not None:
            models["lpips"] = self.lpips  # frozen: the engine moves it to the device and never trains or saves it
        return models

    def optimizers(self) -> list[OptimizerSpec]:
        specs = [OptimizerSpec("model", "model")]
        if self.uses_disc:
            specs.append(OptimizerSpec("disc", "disc", lr=self.cfg.train.lr * self.loss.disc_lr_mult))
        return specs

    def train_dataset(self):
        c = self.cfg
        return _image_dataset(
            c.data, c.split, self.model_cfg.image_size, train=True, seed=c.train.seed, flip=c.flip, limit=c.limit
        )

    def eval_dataset(self):
        if self._eval_ds is None:
            self._eval_ds = _image_dataset(
                self.cfg.data, self.cfg.eval_split, self.model_cfg.image_size, train=False, seed=self.cfg.train.seed
            )
        return self._eval_ds

    def collate(self, items: list[dict[str, Any]]) -> torch.Tensor:
        return torch.stack([it["image"] for it in items])  # (B, 3, S, S): labels/captions are not needed here

    def train_step(self, models: dict[str, nn.Module], batch: torch.Tensor, step: int) -> StepOutput:
        L = self.loss
        x = batch
        restarted = self._maybe_restart(models, step)
        self._maybe_init_codebook(models, step, x.device)
        recon, aux = models["model"](x)
        if self.cfg.dead_code_restart:
            with torch.no_grad():
                if self._usage is None:
                    self._usage = torch.zeros(self.model_cfg.codebook_size, dtype=torch.long, device=x.device)
                self._usage += torch.bincount(aux["ids"].flatten(), minlength=self.model_cfg.codebook_size)
                self._last_lookup = aux["z_lookup"]
        terms: dict[str, torch.Tensor] = {"vq": aux["vq_loss"], "l2": l2_loss(recon, x)}
        if L.l1 > 0:
            terms["l1"] = l1_loss(recon, x)
        if L.logit_laplace > 0:
            terms["logit_laplace"] = logit_laplace_nll((x + 1) / 2, aux["mu"], aux["log_scale"])
        if L.perceptual > 0:
            terms["perceptual"] = models["lpips"](recon, x)
        adv_on = self.uses_disc and step >= L.disc_start
        if adv_on:
            terms["adversarial"] = generator_adversarial_loss(models["disc"](recon))
        g_loss = sum(getattr(L, k) * v for k, v in terms.items())
        losses = {"model": g_loss}
        metrics: dict[str, Any] = {f"loss/{k}": v.detach() for k, v in terms.items()}
        if restarted is not None:
            metrics["restarted_codes"] = restarted
        with torch.no_grad():  # batch PSNR on [0, 1] pixels from the [-1, 1] L2 (MSE scales by 1/4)
            metrics["psnr"] = 10 * torch.log10(4.0 / terms["l2"].detach().clamp_min(1e-10))
            metrics["codes_in_batch"] = torch.unique(aux["ids"]).numel()
        if adv_on:
            disc = models["disc"]
            r1 = torch.zeros((), device=x.device)
            if L.r1_gamma > 0 and (step - L.disc_start) % L.r1_every == 0:
                pen, real_logits = r1_penalty(disc, x)
                # Lazy regularization (StyleGAN2 section 3.1): every r1_every steps, scaled up by r1_every.
                r1 = 0.5 * L.r1_gamma * L.r1_every * pen
                metrics["r1"] = pen.detach()
            else:
                real_logits = disc(x)
            fake_logits = disc(recon.detach())  # detached: the discriminator loss must not reach the generator
            losses["disc"] = discriminator_loss(real_logits, fake_logits) + r1
            metrics["loss/disc"] = losses["disc"].detach()
        return StepOutput(losses=losses, metrics=metrics)

    @torch.no_grad()
    def _maybe_init_codebook(self, models: dict[str, nn.Module], step: int, device: torch.device) -> int | None:
        """``codebook_init: kmeans``: k-means codes from encoder outputs, once, before the forward of its step.

        A run resumed past that step keeps its trained codebook (the init runs only at exactly that step). Images: a seeded random draw of
        ``codebook_init_images`` training images, so the init does not depend on the batch order. Returns the
        number of distinct lookup-space samples (None when nothing was done); logged, not a metric (the engine
        would average a one-step value over the log window).
        """
        if self._codebook_ready or step != self.cfg.codebook_init_step:
            return None
        self._codebook_ready = True  # once, also with gradient accumulation
        c = self.cfg
        model = self.engine.unwrap(models["model"]) if self.engine is not None else models["model"]
        gathered = self.engine.gathered if self.engine is not None else contextlib.nullcontext
        unsharded = self.engine.unsharded if self.engine is not None else contextlib.nullcontext
        ds = self.train_dataset()
        gen = torch.Generator().manual_seed(c.train.seed * 1_000_003 + 17)
        pick = torch.randperm(len(ds), generator=gen)[: c.codebook_init_images].tolist()
        chunks = []
        was_training = model.training
        model.eval()  # no dropout noise in the vectors the codes are placed on
        try:
            with unsharded(model):  # FSDP: full weights outside the forward (every rank runs this loop)
                for start in range(0, len(pick), c.eval_batch_size):
                    x = torch.stack([ds[i]["image"] for i in pick[start : start + c.eval_batch_size]]).to(device)
                    z = model.quantizer.project(model.encode_features(x))  # (b, T, L)
                    chunks.append(z.reshape(-1, z.shape[-1]).float())
        finally:
            model.train(was_training)
        samples = torch.cat(chunks)  # (N, L)
        with gathered(model.quantizer):  # every rank keeps rank 0's codebook
            distinct = model.quantizer.kmeans_init(samples, c.codebook_init_iters, gen)
        log.info(
            "codebook init: k-means of %d lookup-space vectors (%d distinct) from %d images",
            len(samples),
            distinct,
            len(pick),
        )
        return distinct

    def _maybe_restart(self, models: dict[str, nn.Module], step: int) -> int | None:
        """Dead-code restart between steps (before this step's forward, so no graph holds the old codes)."""
        n = self.cfg.dead_code_restart
        if (
            not n
            or step == 0
            or step % n
            or step == self._restart_step
            or self._usage is None
            or self._last_lookup is None
        ):
            return None
        self._restart_step = step  # once per step, also with gradient accumulation
        model = self.engine.unwrap(models["model"]) if self.engine is not None else models["model"]
        quantizer = model.quantizer
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + step)
        samples = self._last_lookup.reshape(-1, self._last_lookup.shape[-1])  # (B*T, L)
        dead = self._global_usage() == 0
        gathered = self.engine.gathered if self.engine is not None else contextlib.nullcontext
        with gathered(quantizer):  # decided by rank 0: every rank keeps rank 0's codebook
            count = quantizer.restart_codes(dead, samples, gen)
        self._usage.zero_()
        return count

    def train_state(self) -> dict[str, torch.Tensor]:
        """The dead-code restart's window: usage summed over ranks (collective) and rank 0's last lookup vectors."""
        if not self.cfg.dead_code_restart or self._usage is None:
            return {}
        return {
            "usage": self._summed_over_ranks(self._usage).cpu(),
            "last_lookup": self._last_lookup.detach().float().cpu(),
        }

    def load_train_state(self, state: dict[str, torch.Tensor]) -> None:
        if not self.cfg.dead_code_restart or "usage" not in state:
            return
        device = self.engine.device if self.engine is not None else torch.device("cpu")
        first = self.engine is None or self.engine.is_main
        # the window's counts once (on rank 0), so the sum over ranks at the next check is the saved one
        self._usage = state["usage"].to(device) if first else torch.zeros_like(state["usage"], device=device)
        self._last_lookup = state["last_lookup"].to(device)

    def _global_usage(self) -> torch.Tensor:
        """Code usage since the last restart check, summed over every process: a code is dead only if NO rank's
        tokens used it (each rank sees its own shard of the batch; rank 0's counts alone would restart codes the
        other ranks use). Every rank calls this at the same step, as the collective requires."""
        return self._summed_over_ranks(self._usage)

    def _summed_over_ranks(self, counts: torch.Tensor) -> torch.Tensor:
        if self.engine is not None and self.engine.accelerator.num_processes > 1:
            # deferred on purpose: accelerate takes ~1 s to import, and importing this module for its configs needs none of it
            from accelerate.utils import reduce

            return reduce(counts, reduction="sum")
        return counts

    def evaluate(self, models: dict[str, nn.Module], step: int, out_dir: Path) -> dict[str, float]:
        c = self.cfg
        grid = Path(out_dir) / "eval" / f"recon_step_{step:06d}.png"
        return evaluate_tokenizer(
            models["model"],
            self.eval_dataset(),
            c.eval_images,
            c.eval_batch_size,
            grid,
            c.grid_images,
            _is_shapes(c.data),
        )

    def card_info(self) -> dict[str, Any]:
        return {"data": self.cfg.data, "size": self.cfg.size, "task": "ViT-VQGAN image tokenizer (arXiv 2110.04627)"}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"training": {"data": self.cfg.data, "size": self.cfg.size, "loss": to_dict(self.loss)}}


def train_tokenizer(cfg: TokenizerRunConfig) -> Path:
    """Train a ViT-VQGAN on ``cfg.data``; returns the final checkpoint folder."""
    task = TokenizerTask(cfg)
    log.info("tokenizer %s: %s", cfg.size, json.dumps(dataclasses.asdict(task.model_cfg), default=str))
    return train(task, cfg.train)


# ---------------------------------------------------------------------------------------------- eval command
@dataclass
class TokenizerEvalConfig:
    """Settings of `eval-tokenizer`."""

    tokenizer: str = ""
    data: str = ""
    split: str = ""  # "" = the first of EVAL_SPLITS the data has
    num_images: int = 256
    batch_size: int = 64
    grid_images: int = 16
    out: str = "tokenizer_eval"


# The split eval-tokenizer reads when none is named: held-out images first, training images as the last resort.
EVAL_SPLITS = ("val", "test", "train")


def _eval_dataset(cfg: TokenizerEvalConfig, image_size: int) -> tuple[str, Any]:
    """(split, dataset) to evaluate on: `cfg.split`, or the first of EVAL_SPLITS the data has (with a log line)."""
    if cfg.split:
        return cfg.split, _image_dataset(cfg.data, cfg.split, image_size, train=False)
    failed: list[str] = []
    for split in EVAL_SPLITS:
        try:
            ds = _image_dataset(cfg.data, split, image_size, train=False)
        except VimtoolError as e:  # this split does not exist for the data (or the data itself is wrong: see below)
            failed.append(f"{split}: {e}")
            continue
        if len(ds) == 0:
            failed.append(f"{split}: no images")
            continue
        why = "held-out images" if split != "train" else "no val or test split: the numbers are NOT held-out"
        log.info("eval-tokenizer: split %r of %s (%s; --split chooses another)", split, cfg.data, why)
        return split, ds
    raise VimtoolError(f"--data {cfg.data!r}: no split to evaluate on ({'; '.join(failed)})")


def run_tokenizer_eval(cfg: TokenizerEvalConfig) -> list[Path]:
    """Load a tokenizer checkpoint, compute its health metrics on held-out images; -> [metrics.json, grid.png]."""
    if not cfg.tokenizer or not cfg.data:
        raise VimtoolError("eval-tokenizer needs --tokenizer CKPT and --data SPEC")
    if cfg.num_images < 1 or cfg.batch_size < 1:
        raise VimtoolError(f"--num-images and batch_size must be >= 1, got {cfg.num_images} and {cfg.batch_size}")
    model = load_model(cfg.tokenizer)
    if not isinstance(model, ViTVQGAN):
        raise VimtoolError(
            f"{cfg.tokenizer} is a {getattr(model, 'model_type', '?')} checkpoint, not a tokenizer (vitvqgan)"
        )
    if torch.cuda.is_available():
        model = model.cuda()
    split, ds = _eval_dataset(cfg, model.config.image_size)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = out / "reconstructions.png"
    metrics = evaluate_tokenizer(model, ds, cfg.num_images, cfg.batch_size, grid, cfg.grid_images, _is_shapes(cfg.data))
    metrics_path = out / "metrics.json"
    write_json(metrics_path, {"tokenizer": cfg.tokenizer, "data": cfg.data, "split": split, **metrics})
    return [metrics_path, grid]


__all__ = [
    "TokenizerEvalConfig",
    "TokenizerRunConfig",
    "TokenizerTask",
    "evaluate_tokenizer",
    "run_tokenizer_eval",
    "train_tokenizer",
]
