"""The `vimtool` command line: one thin, typed command per pipeline arrow (DESIGN.md).

Each command builds a typed config (recipe file <- options <- `--set key=value`) and calls ONE library
function. The library never imports this module. stdout carries only written paths (the pipe contract);
logs and progress bars go to stderr. A `VimtoolError` becomes a one-line `error: ...` and exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import typer

from vimtool import __version__
from vimtool.errors import VimtoolError

app = typer.Typer(
    name="vimtool",
    help="Autoregressive image generation with discrete tokens: ViT-VQGAN tokenizers, VIM and Parti "
    "transformers, NOBLE layers, sampling, probing and FID.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Look at data before training on it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vimtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging on stderr."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


# Commands are registered below as their library modules exist (no command that only says "not implemented").
# --- commands ---


@app.command("train-tokenizer")
def train_tokenizer_cmd(
    data: Optional[str] = typer.Option(None, "--data", help="Training images: shapes[:size=32], mnist5k, imagenet, user/name, a folder or .parquet files."),
    size: Optional[str] = typer.Option(None, "--size", help="Named size: tiny, SS, BB, SL, LL (small/base/large) (default tiny)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image side in pixels; a multiple of the patch size (default size's own)."),
    quantizer: Optional[str] = typer.Option(None, "--quantizer", help="factorized (l2, lookup dim 32; paper) or plain (Table 4 ablation)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default 500000; recipes set less)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size (default 256)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 1e-4)."),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", help="Run folder (default runs/tokenizer)."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue from the run folder's latest checkpoint."),
    noble_rank: Optional[int] = typer.Option(None, "--noble-rank", help="NOBLE branch rank on the ViT linears (0 = off)."),
    noble_act: Optional[str] = typer.Option(None, "--noble-act", help="NOBLE activation (cosnet, cos, gelu, relu2, identity, ...)."),
    noble_placement: Optional[str] = typer.Option(None, "--noble-placement", help="NOBLE sites: all or a comma list of q,k,v,out,mlp_in,mlp_out."),
    config_path: Optional[str] = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON), e.g. recipes/tokenizer_mnist.yaml."),
    set_items: Optional[list[str]] = typer.Option(None, "--set", help="Override any setting: --set loss.perceptual=0 --set train.eval_every=500."),
) -> None:
    """Train a ViT-VQGAN image tokenizer (stage 1); prints the final checkpoint folder.

    Example: vimtool train-tokenizer --config recipes/tokenizer_mnist.yaml
    """
    from vimtool.config import deep_merge, load_config, parse_set
    from vimtool.nn.noble import noble_from_cli
    from vimtool.pipes import emit_path
    from vimtool.train.tokenizer import TokenizerRunConfig, train_tokenizer

    model = {"quantizer": quantizer, "noble": noble_from_cli(noble_rank, noble_act, noble_placement) or None}
    train = {"steps": steps, "batch_size": batch_size, "lr": lr, "out_dir": out_dir, "resume": resume}
    options = {"data": data, "size": size, "image_size": image_size, "model": model, "train": train}
    cfg = load_config(TokenizerRunConfig, config_path, deep_merge(options, parse_set(set_items)))
    emit_path(train_tokenizer(cfg))


@app.command("eval-tokenizer")
def eval_tokenizer_cmd(
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer checkpoint folder or Hub repo id."),
    data: Optional[str] = typer.Option(None, "--data", help="Held-out images (a --data spec)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate on (default val)."),
    num_images: Optional[int] = typer.Option(None, "--num-images", help="Images to evaluate (default 256: usage is per 256 images)."),
    out: Optional[str] = typer.Option(None, "--out", help="Folder for metrics.json and reconstructions.png (default tokenizer_eval)."),
    config_path: Optional[str] = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: Optional[list[str]] = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """Tokenizer health: held-out L2/PSNR, codebook usage per 256 images, perplexity, dead codes, and a PNG of
    originals beside reconstructions; prints the two written paths.

    Example: vimtool eval-tokenizer --tokenizer runs/tok_mnist/final --data mnist5k --out eval_mnist
    """
    from vimtool.config import load_config, parse_set
    from vimtool.pipes import emit_path
    from vimtool.train.tokenizer import TokenizerEvalConfig, run_tokenizer_eval

    options = {"tokenizer": tokenizer, "data": data, "split": split, "num_images": num_images, "out": out}
    cfg = load_config(TokenizerEvalConfig, config_path, {**options, **parse_set(set_items)})
    for path in run_tokenizer_eval(cfg):
        emit_path(path)


@app.command("tokenize-dataset")
def tokenize_dataset_cmd(
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer checkpoint folder or Hub repo id."),
    data: Optional[str] = typer.Option(None, "--data", help="Images to tokenize (a --data spec)."),
    out: Optional[str] = typer.Option(None, "--out", help="Folder for the Parquet token shards."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to tokenize (default train)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Also write a horizontally flipped copy of each image (left/right swapped in captions)."),
    rows_per_shard: Optional[int] = typer.Option(None, "--rows-per-shard", help="Rows per shard (default 10000)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per encoder batch (default 64)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images of the split."),
    config_path: Optional[str] = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: Optional[list[str]] = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """Turn images into Parquet token shards for train-lm / train-t2i; prints the shard paths.

    Resumable (a rerun skips finished shards) and multi-process under `accelerate launch` (each rank writes
    its own shards). Example: vimtool tokenize-dataset --tokenizer runs/tok/final --data mnist5k --out shards/
    """
    from vimtool.config import load_config, parse_set
    from vimtool.pipes import emit_path
    from vimtool.tokenize import TokenizeConfig, tokenize_dataset

    options = {"tokenizer": tokenizer, "data": data, "out": out, "split": split, "flip": flip,
               "rows_per_shard": rows_per_shard, "batch_size": batch_size, "limit": limit}
    cfg = load_config(TokenizeConfig, config_path, {**options, **parse_set(set_items)})
    for path in tokenize_dataset(cfg):
        emit_path(path)


@data_app.command("preview")
def data_preview(
    data: Optional[str] = typer.Option(None, "--data", help="Data spec: shapes[:size=32,...], mnist5k, mnist, "
                                       "cifar10, user/name[:split], an image folder or .parquet files [shapes]."),
    out: Optional[str] = typer.Option(None, "--out", help="PNG to write [preview.png]."),
    n: Optional[int] = typer.Option(None, "--n", help="Number of images [64]."),
    size: Optional[int] = typer.Option(None, "--size", help="Resize + center-crop each image to SIZE [64]."),
    split: Optional[str] = typer.Option(None, "--split", help="train, val, all (shapes also: holdout) [train]."),
    strict: Optional[bool] = typer.Option(None, "--strict/--no-strict", help="Fail on the first corrupt image "
                                          "instead of skipping it."),
    config_path: Optional[str] = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: Optional[list[str]] = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """Write a PNG grid of examples with their captions or labels, to look at data before training.

    Example: vimtool data preview --data shapes:size=32 --n 36 --out shapes.png
    """
    from vimtool.config import load_config, parse_set
    from vimtool.data.preview import PreviewConfig, preview
    from vimtool.pipes import emit_path

    options = dict(data=data, out=out, n=n, size=size, split=split, strict=strict)
    cfg = load_config(PreviewConfig, config_path, {**options, **parse_set(set_items)})
    for path in preview(cfg):
        emit_path(path)


@app.command("eval-fid")
def eval_fid(
    a: str = typer.Argument(..., help="Set A (usually the real/reference set): image folder, .txt list of paths, "
                            "'-' (paths on stdin), .npz (mu/sigma or ADM arr_0), or a --data spec (data:SPEC)."),
    b: Optional[str] = typer.Argument(None, help="Set B (usually generated), same kinds as A. Omit with --tokenizer "
                                      "(rFID against A itself) or --save-stats."),
    n: Optional[int] = typer.Option(None, "--n", help="At most N images per set."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per Inception batch [50]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N [auto]."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights",
                                                    help="Path of pt_inception-2015-12-05-6726825d.pth."),
    save_stats: Optional[str] = typer.Option(None, "--save-stats", help="Write A's statistics to this .npz."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer checkpoint: rFID of its "
                                            "reconstructions of A."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of --data specs [train]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of random subsets (--n) [0]."),
    out: Optional[str] = typer.Option(None, "--out", help="Folder for scores.json + protocol.json [outputs/eval-fid]."),
    config_path: Optional[str] = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: Optional[list[str]] = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """FID (pytorch-fid 0.3.0 numbers) and Inception Score of B against A, or rFID of a tokenizer on A.

    Writes scores.json and a protocol card (protocol.json) to --out, prints a table on stderr and the
    written paths on stdout. Example: vimtool sample ... | vimtool eval-fid ref_stats.npz -
    """
    from vimtool.config import load_config, parse_set
    from vimtool.metrics.eval_fid import EvalFidConfig, evaluate_fid
    from vimtool.pipes import emit_path

    options = dict(inputs=[a] + ([b] if b is not None else []), n=n, batch_size=batch_size, device=device,
                   inception_weights=inception_weights, save_stats=save_stats, tokenizer=tokenizer, split=split,
                   seed=seed, out=out)
    cfg = load_config(EvalFidConfig, config_path, {**options, **parse_set(set_items)})
    for path in evaluate_fid(cfg):
        emit_path(path)



def main() -> None:
    """Console entry point: user errors are one line on stderr, exit code 2."""
    try:
        app(standalone_mode=False)
    except VimtoolError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # click usage errors (bad option, missing argument) keep click's own message
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
