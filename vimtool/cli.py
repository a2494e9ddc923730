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
