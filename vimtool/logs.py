"""Who speaks in a multi-process run, and logs that leave progress bars intact.

Under `accelerate launch --num_processes N` (or torchrun, mpirun) every process runs the same command. Only the
main process (global rank 0) prints paths on stdout (`pipes.emit_path`) and logs at INFO; the others log warnings
and errors only, each line prefixed `[rank r]` so a failure on one rank says which. The rank is read from the
launchers' environment variables (the ones accelerate itself reads), so the command line knows it at start-up
without importing accelerate or torch.

Log lines go through `tqdm.write`, which clears the live progress bars, prints the line and redraws them: a log
line never lands inside a bar.
"""

from __future__ import annotations

import logging
import os
import sys

from tqdm import tqdm

# torchrun / accelerate launch set RANK; MPI launchers set their own (the same list accelerate's PartialState reads).
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return default


def process_rank() -> int:
    """This process's global rank (0 when not launched as one of several processes)."""
    return _first_int(_RANK_VARS, 0)


def world_size() -> int:
    """How many processes the launcher started (1 when run plainly)."""
    return max(1, _first_int(_WORLD_VARS, 1))


def is_main_process() -> bool:
    """Whether this process speaks for the run: prints paths, logs at INFO."""
    return process_rank() == 0


class TqdmHandler(logging.Handler):
    """A stderr handler that writes through `tqdm.write`, so open progress bars are redrawn below the line.

    It looks `sys.stderr` up at every line rather than holding the stream it started with: a test runner or a
    notebook that swaps stderr later still gets the lines, and a closed stream is never written to."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger for a command: INFO (DEBUG with `verbose`) on the main process, WARNING with a
    `[rank r]` prefix on the others, all through `TqdmHandler` on stderr. Replaces handlers an earlier call set."""
    rank = process_rank()
    prefix = f"[rank {rank}] " if world_size() > 1 or rank else ""
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname).1s {prefix}%(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, TqdmHandler)]:  # a second command in one process
        root.removeHandler(old)
    root.addHandler(handler)
    if rank == 0:
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    else:
        root.setLevel(logging.DEBUG if verbose else logging.WARNING)
