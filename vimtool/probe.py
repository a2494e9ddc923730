"""Linear probe of a frozen VIM (arXiv 2110.04627, section 4.3; docs/PAPERS.md section 2), and reusable probe heads.

    probe(cfg: ProbeConfig) -> [probe.json, head folders...]          (the `vimtool probe` command)

Protocol (as the paper's): feed all tokens of an image to the frozen LM, take the output of one block,
average-pool it over the token positions, and train a softmax (linear) classifier on those features of the
training shards; report top-1 on held-out shards. Default: a sweep over every block (1-based, "block 15 of
36"); the paper finds the best block in the middle of the stack, not at the end.

Details: the LM sees the start token of an unconditional sequence (BOS, or the NULL class of a class-conditional
model: feeding the true class would hand the label to the probe) followed by t_0..t_{T-2} -- the T positions the
model was trained on (t_{T-1} is never an input). Rows that tokenize-dataset wrote as augmented copies
(`#flip`, `#shift...` source ids) are left out (`augmented_rows=False`): the LM may train on them, the probe
classifies the images as the data holds them. Features are standardised with the training mean/std; the
classifier is multinomial logistic regression with an L2 penalty, fit full-batch with L-BFGS (deterministic).

Baselines on the same rows and with the same classifier: `pixels` (the images the tokens decode to with the
recorded tokenizer, flattened), `tokens` (bag of token ids: a normalised histogram over the vocabulary) and, when
asked for, `raw_pixels` (the original images behind the rows, before tokenizing: read again from the data spec that
tokenize.json beside the shards records, matched by source id).

The L2 penalty is chosen per feature set on a held-out tenth of the training rows (iGPT sweeps it too), so no
feature set is judged at a penalty that suits another. The best block is the one with the highest held-out top-1
(as the paper reports it: optimistic); probe.json also names the block that scores best on that tenth of the
training rows (`block_picked_on_train`, ties to the earlier block) and its held-out top-1 (`picked_top1`), a
choice made without the held-out rows. `pixel_classifier` adds a small MLP on pixels trained with
random shifts (head_pixels_mlp/): not a probe, but the independent classifier that judges whether generated
images show the class asked for.

Held-out rows: `val_shards`, else about `val_fraction` of the shards' rows, chosen by the split every command
shares (`vimtool.data.shards.held_out_rows`: a hash of each row's source id; `probe_rows`), so with the
fraction train-lm held out they are rows the LM never trained on.

Heads: the best LM block's head and each baseline's head are saved as folders (head.safetensors: weight,
bias, feature mean/std; head.json: what features it reads, classes, top-1, the LM / tokenizer it belongs to).
`load_probe_head(folder).probabilities(tokens=..., lm=..., tokenizer=...)` scores new samples: the sampler's
rejection sampling uses it (a `pixels` head is a classifier independent of the LM being judged). The head class
and the feature functions it reads live in vimtool/sampling/classifier.py (below both sampling and this command)
and are re-exported here. The checkpoint and its tokenizer load through vimtool/pipeline.py.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from vimtool.atomic import write_json
from vimtool.checkpoint import WEIGHTS_FILE, sha256_file
from vimtool.config import to_dict
from vimtool.data.shards import TokenizerIdentity, held_out_rows, load_token_table, read_source_ids
from vimtool.errors import VimtoolError
from vimtool.pipeline import Stage2Pipeline
from vimtool.pipes import expand_paths
from vimtool.sampling.classifier import (
    FEATURES,
    HEAD_META,
    HEAD_WEIGHTS,
    ProbeHead,
    lm_block_features,
    load_probe_head,
    pixel_features,
    predict_proba,
    token_histogram,
)
from vimtool.tokenize import is_augmented

log = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    """Settings of `vimtool probe`."""

    checkpoint: str = ""  # the frozen VIM
    shards: list[str] = field(default_factory=list)  # labelled training shards for the classifier
    val_shards: list[str] = field(default_factory=list)  # held-out shards (default: the shared split of shards)
    val_fraction: float = 0.1
    blocks: list[int] = field(default_factory=list)  # 1-based block indices; empty = every block
    # pixels: the images the tokens decode to; tokens: bag of ids; raw_pixels (opt-in): the ORIGINAL images behind the
    # rows, read again from the data that tokenize.json beside the shards names (that data must be reachable)
    baselines: list[Literal["pixels", "tokens", "raw_pixels"]] = field(default_factory=lambda: ["pixels", "tokens"])
    # fit on the shards' augmented copies too (rows tokenize-dataset wrote with --flip / --shifts)? Default no: the
    # probe classifies images as the data holds them, and every feature set sees the same original rows
    augmented_rows: bool = False
    pixel_classifier: bool = True  # also train a small MLP on pixels (head_pixels_mlp/): the judge of samples
    # L2 penalty of the softmax classifier (on standardised features). Several values: each feature set picks its
    # own on a held-out 10% of the TRAINING rows (never the reported held-out set), then refits on all of them.
    l2: list[float] = field(default_factory=lambda: [1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    max_iter: int = 200  # L-BFGS iterations
    batch_size: int = 128  # rows per LM / tokenizer forward pass
    tokenizer: str | None = None  # for the pixel baseline: default the tokenizer the checkpoint records
    device: str = "auto"
    out: str = "probe"


# ----------------------------------------------------------------------------------------------- features
def raw_pixel_features(paths: list[str], image_size: int, what: str, augmented_rows: bool = True) -> torch.Tensor:
    """(N, 3 * S * S) the original images behind the shards' rows, in the order `load_token_table` reads them,
    resized as tokenize-dataset resized them (`resize_center_crop` to S), in [-1, 1]; `#flip` / `#shift` rows
    flipped / shifted as they were when encoded (`vimtool.tokenize.row_image`), or skipped unless `augmented_rows`
    (the rows `labelled_rows` keeps, in its order).

    Each shard folder's tokenize.json names the data spec and split; the source is read once more and rows are
    matched by `source_id`. Errors say what is missing (no tokenize.json, unreachable data, rows it lacks)."""
    import pyarrow.parquet as pq

    from vimtool.data import open_source
    from vimtool.data.transforms import resize_center_crop, to_tensor
    from vimtool.pipes import expand_paths
    from vimtool.tokenize import MANIFEST, is_augmented, original_source_id, row_image

    files = expand_paths(paths, suffixes=(".parquet",), what=what)
    wanted: dict[tuple, list[str]] = {}  # (data, split, limit, draft) -> source ids, row order
    order: list[tuple[tuple, str]] = []
    for f in files:
        manifest = f.parent / MANIFEST
        if not manifest.is_file():
            raise VimtoolError(
                f"{f}: no {MANIFEST} beside it names the images behind its rows; drop the raw_pixels "
                "baseline, or keep the shards in the folder tokenize-dataset wrote"
            )
        m = json.loads(manifest.read_text(encoding="utf-8"))
        key = (m["data"], m["split"], m.get("limit"), bool(m.get("draft")))
        for sid in pq.read_table(f, columns=["source_id"]).column(0).to_pylist():
            if not augmented_rows and is_augmented(sid):
                continue
            wanted.setdefault(key, []).append(sid)
            order.append((key, sid))
    images: dict[tuple, dict[str, torch.Tensor]] = {}
    for key, sids in wanted.items():
        data, split, limit, draft = key
        need = {original_source_id(sid) for sid in sids}
        found: dict[str, torch.Tensor] = {}
        source = open_source(data, split=split, limit=limit)
        if draft:  # decode JPEGs as tokenize-dataset did (draft mode changes their pixels slightly)
            source.draft_size = image_size
        for ex in source:  # the same images tokenize-dataset read
            if ex.source_id in need:
                found[ex.source_id] = to_tensor(resize_center_crop(ex.image, image_size))  # (3, S, S)
                if len(found) == len(need):
                    break
        missing = need - found.keys()
        if missing:
            raise VimtoolError(
                f"{data!r} ({split}) no longer yields {len(missing)} of the shards' images (e.g. "
                f"{sorted(missing)[0]!r}): the data changed since tokenizing; drop the raw_pixels baseline"
            )
        images[key] = found
    rows = [row_image(images[key][original_source_id(sid)], sid) for key, sid in order]  # flipped / shifted as written
    return torch.stack(rows).flatten(1)


# ----------------------------------------------------------------------------------------------- classifier
def fit_softmax(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3, max_iter: int = 300
) -> dict[str, torch.Tensor]:
    """Multinomial logistic regression on standardised features; -> {weight (C, F), bias (C,), mean, std}."""
    x = x.double()
    mean = x.mean(dim=0)
    std = x.std(dim=0).clamp_min(1e-6)
    z = (x - mean) / std  # (N, F)
    w = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"weight": w.detach().float(), "bias": b.detach().float(), "mean": mean.float(), "std": std.float()}


def choose_l2(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2_grid: list[float], max_iter: int = 200
) -> tuple[float, float | None]:
    """The L2 penalty from `l2_grid` that classifies a fixed held-out 10% of (x, y) best after fitting on the other
    90%; -> (l2, that top-1), top-1 None when there is nothing to choose (one value or < 20 rows)."""
    if not l2_grid:
        raise VimtoolError("l2 needs at least one value (e.g. --set l2=[1e-3])")
    if len(l2_grid) == 1 or len(x) < 20:
        return l2_grid[0], None
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(99))
    k = max(1, len(x) // 10)
    sel, fit = order[:k], order[k:]
    scores = [top1(fit_softmax(x[fit], y[fit], num_classes, l2, max_iter), x[sel], y[sel]) for l2 in l2_grid]
    i = max(range(len(l2_grid)), key=lambda i: (scores[i], l2_grid[i]))  # ties: the stronger penalty
    return l2_grid[i], scores[i]


def fit_probe(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2_grid: list[float], max_iter: int = 200
) -> tuple[dict[str, torch.Tensor], float]:
    """`fit_softmax` with the L2 penalty chosen from `l2_grid` on a fixed 10% split of (x, y); -> (params, l2)."""
    l2, _ = choose_l2(x, y, num_classes, l2_grid, max_iter)
    return fit_softmax(x, y, num_classes, l2, max_iter), l2


def fit_pixel_mlp(
    images: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden: int = 256,
    epochs: int = 30,
    shift: int = 2,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A small classifier on pixels (one hidden ReLU layer of `hidden`), trained with random translations of up to
    `shift` pixels (images (N, 3, H, W) in [-1, 1]). Not a probe: the independent judge of whether generated
    images show the class asked for (the class-consistency measure), robust to the small shifts in position
    and stroke that fool a linear pixel classifier."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    with torch.random.fork_rng(devices=[]):  # seeded init, without disturbing the caller's global RNG stream
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(c * h * w, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes)
        )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    padded = F.pad(images, (shift,) * 4, value=-1.0)  # background is black (-1) in MNIST-like data
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(128):
            dy, dx = (int(v) for v in torch.randint(0, 2 * shift + 1, (2,), generator=g))
            x = padded[idx, :, dy : dy + h, dx : dx + w].flatten(1)  # (b, C*H*W) one random shift per batch
            loss = F.cross_entropy(net(x), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    dim = c * h * w
    return {"mean": torch.zeros(dim), "std": torch.ones(dim), "hidden_weight": net[0].weight.detach(), "hidden_bias": net[0].bias.detach(),
            "weight": net[2].weight.detach(), "bias": net[2].bias.detach()}  # fmt: skip


def top1(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_proba(params, x).argmax(dim=1) == y).float().mean())


# ----------------------------------------------------------------------------------------------- command
def labelled_rows(paths: list[str], what: str, augmented_rows: bool = True):
    """(tokens, labels, identity, source ids) of the shards' labelled rows, in shard order; augmented copies
    (`#flip` / `#shift` rows) left out unless `augmented_rows`."""
    files = expand_paths(paths, suffixes=(".parquet",), what=what)
    tokens, labels, _, identity = load_token_table(files)
    sids = read_source_ids(files)
    if not augmented_rows:
        kept = torch.tensor([not is_augmented(s) for s in sids], dtype=torch.bool)
        if not bool(kept.any()):
            raise VimtoolError(
                f"every row of the {what}s is an augmented copy; --set augmented_rows=true to fit on them"
            )
        if not bool(kept.all()):
            log.info("probe: %d augmented rows (#flip / #shift copies) of the %ss left out", int((~kept).sum()), what)
        tokens, labels = tokens[kept], labels[kept]
        sids = [s for s, k in zip(sids, kept.tolist()) if k]
    if bool((labels < 0).any()):
        raise VimtoolError(f"the {what}s have rows without a label; the probe needs labelled shards")
    return tokens, labels, identity, sids


@dataclass
class ProbeRows:
    """The rows a probe fits on (`train`) and scores on (`val`): (tokens (N, T), labels (N,)) each."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    identity: TokenizerIdentity
    held_out: torch.Tensor | None  # (N,) bool over `cfg.shards`' kept rows when val comes from them, else None


def probe_rows(cfg: ProbeConfig) -> ProbeRows:
    """The probe's training and held-out rows: --val-shards, else the split every command shares
    (`vimtool.data.shards.held_out_rows`, a hash of each row's source id): with train-lm's `val_fraction` the
    held-out rows are rows the LM never trained on, and a smaller fraction's held-out set lies inside a larger's."""
    tokens, labels, identity, sids = labelled_rows(cfg.shards, "token shard", cfg.augmented_rows)
    if cfg.val_shards:
        vtok, vlab, vid, _ = labelled_rows(cfg.val_shards, "validation token shard", cfg.augmented_rows)
        if vid != identity:
            raise VimtoolError("validation and training shards come from different tokenizers; use one tokenizer")
        return ProbeRows((tokens, labels), (vtok, vlab), identity, None)
    if not 0 < cfg.val_fraction < 1:
        raise VimtoolError("give --val-shards, or a val_fraction in (0, 1) that leaves training rows")
    held = held_out_rows(sids, cfg.val_fraction)  # (N,) bool
    return ProbeRows((tokens[~held], labels[~held]), (tokens[held], labels[held]), identity, held)


def probe(cfg: ProbeConfig) -> list[Path]:
    """Sweep the LM's blocks (and the baselines); write probe.json and the heads; return their paths."""
    if not cfg.checkpoint or not cfg.shards:
        raise VimtoolError("probe needs --checkpoint (a VIM) and --shards (labelled token shards)")
    # the image tokenizer only for the pixel features (decoded images); the LM features need tokens alone
    need_pixels = "pixels" in cfg.baselines or cfg.pixel_classifier
    pipe = Stage2Pipeline.load(cfg.checkpoint, tokenizer=cfg.tokenizer, device=cfg.device, load_tokenizer=need_pixels)
    if pipe.family != "vim":
        raise VimtoolError(f"{cfg.checkpoint} is a {pipe.family} checkpoint; probe takes a VIM (train-lm output)")
    lm, folder = pipe.model, pipe.folder
    rows = probe_rows(cfg)
    (tokens, labels), (vtok, vlab), identity = rows.train, rows.val, rows.identity
    pipe.check_pairing(identity.to_dict())  # the LM must have been trained on this tokenizer's tokens
    num_classes = int(max(labels.max(), vlab.max())) + 1
    depth = lm.config.depth
    blocks = sorted(set(cfg.blocks)) or list(range(1, depth + 1))
    bad = [b for b in blocks if not 1 <= b <= depth]
    if bad:
        raise VimtoolError(f"--block {bad}: this LM has blocks 1..{depth}")

    log.info(
        "probe: %d training rows, %d held-out rows, %d classes, blocks %s", len(tokens), len(vtok), num_classes, blocks
    )
    ftrain = lm_block_features(lm, tokens, blocks, cfg.batch_size)
    fval = lm_block_features(lm, vtok, blocks, cfg.batch_size)
    results: dict[str, float] = {}
    chosen_l2: dict[str, float] = {}
    selection: dict[str, float | None] = {}  # top-1 on the tenth of the TRAINING rows that picked the L2
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for b in blocks:
        chosen_l2[f"block{b}"], selection[f"block{b}"] = choose_l2(ftrain[b], labels, num_classes, cfg.l2, cfg.max_iter)
        heads[f"block{b}"] = fit_softmax(ftrain[b], labels, num_classes, chosen_l2[f"block{b}"], cfg.max_iter)
        results[f"block{b}"] = top1(heads[f"block{b}"], fval[b], vlab)
    best = max(blocks, key=lambda b: results[f"block{b}"])
    # The best block above is picked on the held-out rows it is scored on (optimistic, as the paper's per-layer
    # report); this one is picked on training rows only, so its held-out top-1 is an unbiased estimate.
    picked = None if None in selection.values() else max(blocks, key=lambda b: selection[f"block{b}"])

    baselines: dict[str, float] = {}
    pixels = None
    if "pixels" in cfg.baselines or cfg.pixel_classifier:
        pixels = pipe.decode(tokens, cfg.batch_size).flatten(1), pipe.decode(vtok, cfg.batch_size).flatten(1)
    for kind in cfg.baselines:
        if kind == "pixels":
            xtr, xva = pixels
        elif kind == "raw_pixels":
            size = identity.image_size
            every = raw_pixel_features(cfg.shards, size, "token shard", cfg.augmented_rows)  # the rows above
            if cfg.val_shards:
                xtr = every
                xva = raw_pixel_features(cfg.val_shards, size, "validation token shard", cfg.augmented_rows)
            else:
                xtr, xva = every[~rows.held_out], every[rows.held_out]
        else:
            xtr, xva = token_histogram(tokens, identity.codebook_size), token_histogram(vtok, identity.codebook_size)
        heads[kind], chosen_l2[kind] = fit_probe(xtr, labels, num_classes, cfg.l2, cfg.max_iter)
        baselines[kind] = top1(heads[kind], xva, vlab)
    classifiers: dict[str, float] = {}
    if cfg.pixel_classifier:
        size = identity.image_size
        heads["pixels_mlp"] = fit_pixel_mlp(pixels[0].view(len(tokens), 3, size, size), labels, num_classes)
        classifiers["pixels_mlp"] = top1(heads["pixels_mlp"], pixels[1], vlab)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"num_classes": num_classes, "vocab_size": identity.codebook_size, "tokenizer_sha256": identity.sha256,
              "image_size": identity.image_size, "lm": str(folder), "lm_sha256": sha256_file(folder / WEIGHTS_FILE),
              "n_train": len(tokens), "n_val": len(vtok)}  # fmt: skip
    written = []
    best_head = ProbeHead({**common, "feature": "lm", "block": best, "top1": results[f"block{best}"], "l2": chosen_l2[f"block{best}"]},
                          heads[f"block{best}"])  # fmt: skip
    written.append(best_head.save(out / "head_best"))
    for kind in cfg.baselines:
        meta_k = {**common, "feature": kind, "block": None, "top1": baselines[kind], "l2": chosen_l2[kind]}
        written.append(ProbeHead(meta_k, heads[kind]).save(out / f"head_{kind}"))
    if cfg.pixel_classifier:
        meta_k = {**common, "feature": "pixels", "block": None, "top1": classifiers["pixels_mlp"], "classifier": "mlp"}
        written.append(ProbeHead(meta_k, heads["pixels_mlp"]).save(out / "head_pixels_mlp"))
    report = {"checkpoint": str(folder), "depth": depth, "top1": results, "best_block": best, "best_top1": results[f"block{best}"],
              "baselines": baselines, "classifiers": classifiers, "l2": chosen_l2, "selection_top1": selection,
              "block_picked_on_train": picked, "picked_top1": None if picked is None else results[f"block{picked}"],
              "n_train": len(tokens), "n_val": len(vtok),
              "num_classes": num_classes, "settings": to_dict(cfg)}  # fmt: skip
    path = out / "probe.json"
    write_json(path, report)
    _print_table(results, best, baselines, classifiers, chosen_l2, depth)
    if picked is not None:
        print(
            f"picked on training rows only: block{picked} ({results[f'block{picked}'] * 100:.1f}% held out)",
            file=sys.stderr,
        )
    return [path, *written]


def _print_table(results, best, baselines, classifiers, chosen_l2, depth: int) -> None:
    lines = ["", f"linear probe top-1 (held out), LM depth {depth}", f"{'features':<16}{'top-1':>8}{'l2':>9}"]
    for name, acc in results.items():
        lines.append(
            f"{name:<16}{acc * 100:>7.1f}%{chosen_l2[name]:>9.0e}" + ("  <- best" if name == f"block{best}" else "")
        )
    for name, acc in baselines.items():
        label = {"pixels": "decoded pixels", "tokens": "token bag", "raw_pixels": "raw pixels"}.get(name, name)
        lines.append(f"{label:<16}{acc * 100:>7.1f}%{chosen_l2[name]:>9.0e}")
    for name, acc in classifiers.items():
        lines.append(f"{name:<16}{acc * 100:>7.1f}%   (not linear: the judge of generated samples)")
    print("\n".join(lines), file=sys.stderr)


__all__ = [
    "FEATURES",
    "HEAD_META",
    "HEAD_WEIGHTS",
    "ProbeConfig",
    "ProbeHead",
    "ProbeRows",
    "choose_l2",
    "fit_pixel_mlp",
    "fit_probe",
    "fit_softmax",
    "lm_block_features",
    "labelled_rows",
    "load_probe_head",
    "pixel_features",
    "predict_proba",
    "probe",
    "probe_rows",
    "raw_pixel_features",
    "token_histogram",
]
