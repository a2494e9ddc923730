"""The `vimtool` command line: one thin, typed command per pipeline arrow.

Each command lives in a small module here (plan, train, tokenize, sample, probe, evaluate, data, demo) as a typed function
whose docstring is its help; options that several commands take are declared once in `options`. A command builds
a typed config (recipe file <- options <- `--set key=value`) and calls ONE library function; the library never
imports this package. stdout carries only written paths (the pipe contract); logs and progress bars go to stderr, and in a
multi-process run only the main process prints paths and logs at INFO (`vimtool.logs`).
A `VimtoolError` (or a file-system failure the user can fix: disk full, permission denied) becomes a one-line
`error: ...` and exit code 2 (`_OneLineErrors`).

Help is plain text, not Typer's Rich panels: those print a `<bool>` type after every flag (`--resume <bool>`,
even `--help <bool>`), which reads as if the flag took a value.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from vimtool.atomic import storage_error
from vimtool.commands.data import data_preview_cmd
from vimtool.commands.demo import demo_cmd
from vimtool.commands.evaluate import eval_fid_cmd, eval_tokenizer_cmd
from vimtool.commands.options import Threads
from vimtool.commands.plan import plan_cmd
from vimtool.commands.probe import probe_cmd
from vimtool.commands.sample import sample_cmd
from vimtool.commands.tokenize import tokenize_dataset_cmd
from vimtool.commands.train import train_lm_cmd, train_reranker_cmd, train_t2i_cmd, train_tokenizer_cmd
from vimtool.errors import VimtoolError
from vimtool.logs import setup_logging

# Wrap help at the terminal's width (click's default caps it at 80 columns and cuts command summaries short).
_CONTEXT = {"max_content_width": 120}

log = logging.getLogger(__name__)


class _OneLineErrors(TyperGroup):
    """The ONE place a user-fixable error becomes `error: ...` on stderr and exit code 2: a `VimtoolError`, or a
    file-system failure the user can fix (disk full, permission denied, read-only, a file where a folder should be:
    `atomic.storage_error`). Anything else is a bug and keeps its traceback. Here rather than in `main()` so that
    Typer's CliRunner (the tests) sees exactly what a user sees; `--verbose` logs the traceback behind the line."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VimtoolError as e:
            _fail(e)
        except Exception as e:
            err = storage_error(e)
            if err is None:
                raise
            _fail(err, e)


def _fail(err: Exception, cause: Exception | None = None) -> None:
    log.debug("the error behind the message below", exc_info=cause or err)
    print("error: " + " ".join(str(err).splitlines()), file=sys.stderr)  # one line, whatever the message holds
    raise typer.Exit(2)


app = typer.Typer(
    name="vimtool",
    help="Autoregressive image generation with discrete tokens: ViT-VQGAN tokenizers, VIM and Parti "
    "transformers, NOBLE layers, sampling, probing and FID.",
    no_args_is_help=True,
    add_completion=False,
    cls=_OneLineErrors,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=_CONTEXT,
)
data_app = typer.Typer(
    help="Look at data before training on it.", no_args_is_help=True, rich_markup_mode=None, context_settings=_CONTEXT
)

# In pipeline order: --help lists them so.
app.command("plan")(plan_cmd)
app.command("train-tokenizer")(train_tokenizer_cmd)
app.command("eval-tokenizer")(eval_tokenizer_cmd)
app.command("tokenize-dataset")(tokenize_dataset_cmd)
app.command("train-lm")(train_lm_cmd)
app.command("train-t2i")(train_t2i_cmd)
app.command("train-reranker")(train_reranker_cmd)
app.command("sample")(sample_cmd)
app.command("probe")(probe_cmd)
app.command("eval-fid")(eval_fid_cmd)
app.command("demo")(demo_cmd)
app.add_typer(data_app, name="data")
data_app.command("preview")(data_preview_cmd)


def _version(value: bool) -> None:
    if value:
        from vimtool.provenance import describe

        typer.echo(describe())  # e.g. "vimtool 0.1.0 (git 6ed31aa75584), torch 2.13.0+cpu": what a bug report needs
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")] = False,
    threads: Threads = None,
) -> None:
    setup_logging(verbose)  # main process at INFO, other ranks warnings only; lines never land inside a bar
    if threads is not None:  # the engine hints at --threads when training on a CPU busier than its cores
        import torch  # deferred: only when asked

        torch.set_num_threads(threads)


def main() -> None:
    """Console entry point: user errors are one line on stderr, exit code 2 (`_OneLineErrors`)."""
    try:
        code = _run()
    except BaseException:
        _leave_process_group(finished=False)
        raise
    _leave_process_group(finished=code == 0)
    sys.exit(code)


def _run() -> int:
    try:
        code = app(standalone_mode=False)  # an exit code when a command ended with typer.Exit, else None
        return code if isinstance(code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except Exception as e:  # click usage errors (bad option, missing argument) keep click's own message
        # Duck-typed: typer >= 0.26 raises its vendored copy of click's exceptions, not `click.ClickException`.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        raise


def _leave_process_group(finished: bool) -> None:
    """Destroy the process group an `accelerate launch` / torchrun run formed, before the interpreter exits.

    Why: a process that exits with a live gloo group aborts at random ("terminate called without an active
    exception", SIGABRT) while gloo's worker threads are torn down, failing a run that did all its work. A rank
    that finished waits at a barrier first, so no rank closes its connections while another still reads its last
    collective; one that failed skips the barrier (the launcher stops the others)."""
    dist = sys.modules.get("torch.distributed")  # never imports torch: most commands run without a group
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        if finished and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()
