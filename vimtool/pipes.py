"""The pipe contract: stdout carries only the paths a command wrote, one per line.

Commands that read files accept paths, globs, folders, or `-` (paths on stdin), so
`vimtool tokenize-dataset ... | vimtool train-lm --shards - ...` works. In a multi-process run only the main
process prints (see `vimtool.logs`).
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from vimtool.errors import VimtoolError
from vimtool.logs import is_main_process


def emit_path(path: str | Path) -> None:
    """Print one written path on stdout (and flush, so a downstream reader sees it at once).

    Only the main process of a multi-process run prints: `CK=$(accelerate launch ... vimtool train-lm ...)` gets
    one path, not one per process. A command whose ranks write different files gathers them to the main process
    first (tokenize-dataset does)."""
    if not is_main_process():
        return
    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


def expand_paths(
    specs: Iterable[str],
    suffixes: tuple[str, ...] = (),
    what: str = "input",
    resolve: Callable[[str], list[str] | None] | None = None,
) -> list[Path]:
    """Turn paths / globs / folders / `-` into a sorted, de-duplicated list of existing files.

    A folder contributes its files (recursively) whose suffix is in `suffixes` (all files if empty).
    `-` reads one path per line from stdin. A spec that matches nothing is an error, not an empty list.
    `resolve(spec)`, when given, may first replace a spec by other specs (None leaves it as is): token shards use it
    for Hub dataset ids and `save_to_disk` folders.
    """
    out: list[Path] = []
    for spec in specs:
        if spec == "-":
            lines = [ln.strip() for ln in sys.stdin.read().splitlines() if ln.strip()]
            if not lines:
                raise VimtoolError(
                    f"no {what} paths arrived on stdin ('-'); pipe in the output of a command that writes them"
                )
            out.extend(expand_paths(lines, suffixes, what, resolve))
            continue
        replaced = resolve(spec) if resolve is not None else None
        if replaced is not None:
            out.extend(expand_paths(replaced, suffixes, what))
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and (not suffixes or f.suffix.lower() in suffixes))
            if not found:
                raise VimtoolError(f"folder {p} holds no {what} files ({', '.join(suffixes) or 'any'}); check the path")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif any(ch in spec for ch in "*?["):
            found = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not found:
                raise VimtoolError(f"glob {spec!r} matches no {what} files; check the pattern")
            out.extend(found)
        else:
            raise VimtoolError(f"{what} path {spec!r} does not exist; give a file, folder, glob or '-' for stdin")
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique
