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
