"""Atomic writes for every file vimtool writes: a crash never leaves a half-written file or folder behind.

A file goes to a hidden temporary name in the same folder, then `os.replace` moves it in (atomic on POSIX and
Windows); a folder (a checkpoint) is built under a temporary name and renamed. Temp names follow one
convention, `temp_path`: `.tmp-<name>-<pid>` beside the target (`.tmp-<name>` for a folder several processes
write into), so they are hidden, never collide between processes, and `.tmp-*` is what a Hub upload skips.
On failure the temporary file or folder is removed, and a failure the user can fix (disk full, permission denied,
a read-only file system, a file where a folder should be) becomes a one-line `VimtoolError` that says so
(`storage_error`); the target keeps its previous content. What a kill (SIGKILL, power loss) leaves behind is
removed by the next run in that folder: `clean_leftovers`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vimtool.errors import VimtoolError


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
    except BaseException as e:
        full = _disk_full(path.parent)  # before removing the temp file frees its space
        if tmp.is_symlink() or tmp.exists():
            _remove(tmp)
        _raise_storage_error(e, path, full)
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
    except BaseException as e:
        full = _disk_full(path.parent)  # before removing the temp folder frees its space
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _raise_storage_error(e, path, full)
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


# ------------------------------------------------------------------------------------------------------------------
# errors a user can fix, as one line; leftovers of killed writers
# ------------------------------------------------------------------------------------------------------------------

# errno -> what it means for the user and what to do. Others (EIO, EBADF, ...) are not the user's to fix: they keep
# their traceback.
_ADVICE = {
    errno.ENOSPC: "no space left on the device: free space there or choose another folder",
    errno.EDQUOT: "disk quota exceeded: free space there or choose another folder",
    errno.EFBIG: "file too large for this file system: choose another folder",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "read-only file system: choose a folder on a writable disk",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "this is a folder, not a file: give a file path",
    errno.EEXIST: "this exists and is not a folder: give a folder path, or move the file away",
    errno.ENAMETOOLONG: "the name is too long for this file system: choose a shorter path",
    errno.ENOENT: "no such file or folder: check the path",
}
# Libraries that wrap the OS error in their own exception keep its number in the text: safetensors' SafetensorError
# ("... No space left on device (os error 28)"), pyarrow ("[errno 28] ...").
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\s*(\d+)", re.IGNORECASE)


def storage_error(exc: BaseException, path: str | Path | None = None) -> VimtoolError | None:
    """A one-line VimtoolError for a file-system failure the user can fix (disk full, permission denied, read-only,
    a file where a folder should be, ...), or None when `exc` is not one. `path`: the file being written, for the
    message when the exception names none."""
    if isinstance(exc, VimtoolError):
        return None
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        m = _ERRNO_IN_TEXT.search(str(exc))
        code = int(m.group(1)) if m else None
    if code not in _ADVICE:
        return None
    where = getattr(exc, "filename", None) or path
    return VimtoolError(f"{where or 'a file'}: {_ADVICE[code]}")


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < (1 << 20)  # under 1 MiB: what a write that ran out of space leaves
    except OSError:
        return False


def _raise_storage_error(exc: BaseException, path: Path, full: bool) -> None:
    """Inside a writer's failure path: re-raise a failure the user can fix as a one-line VimtoolError (the temp file is
    gone and the target untouched, so the message can say so). Some writers report a full disk only as a garbled
    error of their own (torch.save: "unexpected pos"), so an unexplained failure on a full disk counts as one."""
    if not isinstance(exc, Exception) or isinstance(exc, VimtoolError):
        return  # KeyboardInterrupt, SystemExit; or already explained (by a writer nested in this one)
    err = storage_error(exc, path)
    if err is None and full:
        err = VimtoolError(f"{path}: {_ADVICE[errno.ENOSPC]}")
    if err is not None:
        raise err from exc


_LEFTOVER = re.compile(r"^\.tmp-(?P<name>.+?)(?:-(?P<pid>\d+))?$")


def clean_leftovers(folder: str | Path, pattern: str = "*", shared: bool = False) -> list[Path]:
    """Remove the temp files and folders (`temp_path`'s `.tmp-<name>-<pid>`) that killed writers left under `folder`
    (recursively); returns what was removed. Call it before this process writes there.

    A temp name whose pid runs on this host belongs to a live writer and stays (another process, e.g. another rank);
    one of this process's own pid was left by an earlier run that had it (this process has written nothing yet).
    `shared` names (`.tmp-<name>`, no pid) are removed only with `shared=True`: the caller knows no one else writes
    there (the training engine, holding the run lock). `pattern` (a glob over `<name>`) narrows it, e.g. to the
    files of one rank."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for parent, dirs, files in os.walk(folder):
        for entry in [*dirs, *files]:
            m = _LEFTOVER.match(entry)
            if m is None or not Path(m["name"]).match(pattern):
                continue
            pid = int(m["pid"]) if m["pid"] else None
            if pid is None and not shared:
                continue
            if pid is not None and pid != os.getpid() and pid_alive(pid):
                continue
            path = Path(parent, entry)
            _remove(path)
            removed.append(path)
        dirs[:] = [d for d in dirs if not d.startswith(".tmp-")]  # removed whole above, or a live writer's
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
