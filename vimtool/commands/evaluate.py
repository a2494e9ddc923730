"""eval-tokenizer and eval-fid: numbers about a tokenizer or a set of images; each prints the files it wrote."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from vimtool.commands.options import ConfigPath, Device, Seed, SetItems, recipe_config
from vimtool.pipes import emit_path


def eval_tokenizer_cmd(
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer checkpoint folder or Hub repo id.")] = None,
    data: Annotated[str | None, typer.Option(help="Held-out images (a --data spec).")] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to evaluate on (default: val if the data has one, else test, else train).")
    ] = None,
    num_images: Annotated[
        int | None, typer.Option(help="Images to evaluate (default 256: usage is per 256 images).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="Folder for metrics.json and reconstructions.png (default tokenizer_eval)."),
    ] = None,
    config_path: ConfigPath = None,
    set_items: SetItems = None,
) -> None:
    """Tokenizer health: held-out L2/PSNR, codebook usage per 256 images, perplexity, dead codes, and a PNG of
    originals beside reconstructions; prints the two written paths, and the numbers as a table on stderr.

    \b
    Example:
      vimtool eval-tokenizer --tokenizer runs/tok_mnist/final --data mnist5k --out eval_mnist
    """
    from vimtool.train.tokenizer import TokenizerEvalConfig, run_tokenizer_eval  # deferred: imports torch

    options = {"tokenizer": tokenizer, "data": data, "split": split, "num_images": num_images, "out": out}
    paths = run_tokenizer_eval(recipe_config(TokenizerEvalConfig, config_path, options, set_items))
    print(metrics_table(json.loads(paths[0].read_text(encoding="utf-8"))), file=sys.stderr)
    for path in paths:
        emit_path(path)


def metrics_table(metrics: dict) -> str:
    """The numbers of a metrics.json as a two-column table (text fields head it as a title line)."""
    title = " ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, str))
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    width = max((len(k) for k in numbers), default=6)
    rows = [
        f"{k:<{width}}  {v:>12.6g}" if isinstance(v, float) else f"{k:<{width}}  {v:>12d}" for k, v in numbers.items()
    ]
    return "\n".join([title, f"{'metric':<{width}}  {'value':>12}", *rows])


def eval_fid_cmd(
    a: Annotated[
        str,
        typer.Argument(
            metavar="A",
            help="Set A (usually the real/reference set): image folder, .txt list of paths, "
            "'-' (paths on stdin), .npz (mu/sigma or ADM arr_0), or a --data spec (mnist5k, user/name; "
            "data:SPEC forces one).",
        ),
    ],
    b: Annotated[
        str | None,
        typer.Argument(
            metavar="B",
            help="Set B (usually generated), same kinds as A. Omit with --tokenizer (rFID against A itself) or "
            "--save-stats.",
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="At most N images per set.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per Inception batch (default 50).")] = None,
    device: Device = None,
    inception_weights: Annotated[
        str | None, typer.Option(metavar="FILE", help="Path of pt_inception-2015-12-05-6726825d.pth.")
    ] = None,
    save_stats: Annotated[str | None, typer.Option(metavar="FILE", help="Write A's statistics to this .npz.")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer checkpoint: rFID of its reconstructions of A.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split of --data specs (default train).")] = None,
    seed: Seed = None,
    out: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="Folder for scores.json + protocol.json (default outputs/eval-fid)."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            metavar="LIST",
            help="Comma-separated subset of fid,sfid,is,precision,recall,kid (default: all that the inputs allow).",
        ),
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            metavar="MODE",
            help="Resize to 299x299: torch-bilinear (pytorch-fid, default) or pil-bicubic (clean-fid); required "
            "when A and B differ in resolution.",
        ),
    ] = None,
    feature_cache: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Cache each image set's Inception features keyed by content (file names, sizes and mtimes, or an "
            ".npz's sha256), so a reference is computed once.",
        ),
    ] = None,
    save_batch: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Write A's images as an ADM sample batch (.npz, arr_0 uint8 NxHxWx3)."),
    ] = None,
    config_path: ConfigPath = None,
    set_items: SetItems = None,
) -> None:
    """FID (pytorch-fid 0.3.0 numbers), sFID, Inception Score, precision, recall and KID of B against A (the
    reference), from one Inception pass per set; or rFID of a tokenizer on A.

    Writes scores.json and a protocol card (protocol.json) to --out, prints a table on stderr and the
    written paths on stdout.

    \b
    Example:
      vimtool sample ... | vimtool eval-fid ref_stats.npz -
    """
    from vimtool.metrics.eval_fid import EvalFidConfig, evaluate_fid  # deferred: imports torch

    options = {
        "inputs": [a] + ([b] if b is not None else []),
        "n": n,
        "batch_size": batch_size,
        "device": device,
        "inception_weights": inception_weights,
        "save_stats": save_stats,
        "tokenizer": tokenizer,
        "split": split,
        "seed": seed,
        "out": out,
        "metrics": metrics,
        "resize": resize,
        "feature_cache": feature_cache,
        "save_batch": save_batch,
    }
    for path in evaluate_fid(recipe_config(EvalFidConfig, config_path, options, set_items)):
        emit_path(path)
