"""Atomic writes for every file vimtool writes: a crash never leaves a half-written file or folder behind.

A file goes to a hidden temporary name in the same folder, then `os.replace` moves it in (atomic on POSIX and
Windows); a folder (a checkpoint) is built under a temporary name and renamed. Temp names follow one
convention, `temp_path`: `.tmp-<name>-<pid>` beside the target (`.tmp-<name>` for a folder several processes
write into), so they are hidden, never collide between processes, and `.tmp-*` is what a Hub upload skips.
On failure the temporary file or folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: str | Path, obj: Any, sort_keys: bool = False) -> Path:
    """Write `obj` as indented JSON (non-JSON values via str) atomically; returns `path`."""
    return write_text(path, json.dumps(obj, indent=2, default=str, sort_keys=sort_keys) + "\n")


def save_png(img, path: str | Path) -> Path:
    """Save a PIL image as PNG atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def save_npy(path: str | Path, array) -> Path:
    """Save a NumPy array as .npy atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return path


# ------------------------------------------------------------------------------------------------------------------
# the one temp-name convention and the primitives (files and folders), used by every writer here and in
# checkpoint.py, tokenize.py, metrics/, data/, models/perceptual.py, train/ (engine, tokenizer)
# ------------------------------------------------------------------------------------------------------------------


def temp_path(path: str | Path, shared: bool = False) -> Path:
    """The temporary name for writing `path`: `.tmp-<name>-<pid>` beside it, or `.tmp-<name>` when `shared`.

    `shared`: the same name in every process, for a folder several ranks of one run write into; a leftover of a
    killed run under that name is cleared by the next writer.
    """
    path = Path(path)
    return path.with_name(f".tmp-{path.name}" if shared else f".tmp-{path.name}-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write (a file, or a symlink); on success it
    replaces `path`, on failure it is removed. For writers that take a filename (PIL, tokenizers, downloads)."""
    path = Path(path)
    tmp = temp_path(path)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_symlink() or tmp.exists():
            _remove(tmp)
        raise


@contextmanager
def atomic_dir(path: str | Path, merge: bool = False, shared: bool = False) -> Iterator[Path]:
    """Yield a fresh empty temporary folder beside `path`; on success it becomes `path`, on failure it is removed.

    Without `merge` an existing `path` is replaced whole (removed, then the rename: readers see the old folder or
    the new one, never a partial one). With `merge` the new entries replace theirs one by one and other entries
    of an existing `path` stay (a checkpoint folder's `state/` or `tokenizer.json`). `shared`: see `temp_path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, shared)
    _remove(tmp)  # a leftover of a killed writer
    tmp.mkdir()
    try:
        yield tmp
        if merge and path.is_dir():
            for entry in tmp.iterdir():
                os.replace(entry, path / entry.name)
            tmp.rmdir()
        else:
            if path.exists():
                _remove(path)
            os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
