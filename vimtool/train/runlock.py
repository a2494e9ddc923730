"""One run per run folder: a lock file that a second run into the same `out_dir` trips over.

Two runs writing one folder would overwrite each other's checkpoints and `latest` pointer without a word. The
engine's main process takes the lock at start (`take(out_dir)`) and releases it at the end; other ranks of a
multi-process run take nothing (they write only what the main process asks them to).

How: `run.lock` in the folder holds the owner's pid, host and start time (JSON, for the error message), and the
owner holds an exclusive `fcntl.flock` on it for as long as it runs. The kernel drops a flock when its process
dies, however it dies (SIGKILL, OOM killer, power loss of a client on a network file system), so a lock left by a
killed run is never mistaken for a live one: the next run takes it over, saying whose it was. That is why a
stale lock is taken over rather than refused: `--resume` after a crash is the very case resume exists for, and
making the user delete a file first would add a step to every recovery without protecting anything. Where flock
is unavailable (no fcntl, or a file system that refuses locks) the file is created with O_CREAT|O_EXCL instead;
a leftover of a dead owner on this host is then taken over the same way, and one from another host is refused
with the command that clears it (its pid cannot be checked from here).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from vimtool.atomic import pid_alive
from vimtool.errors import VimtoolError

try:
    import fcntl
except ImportError:  # Windows: the O_EXCL fallback below
    fcntl = None

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
_HELD: dict[Path, RunLock] = {}  # locks this process holds, by folder


class RunLock:
    """The lock of one run folder, held by this process until `release()` (or its death)."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self.path, self._fd = folder, folder / LOCK_FILE, fd

    def release(self) -> None:
        if self._fd < 0:
            return
        # Unlink before unlocking: a run that opens the path after this makes a fresh file; one that opened the old
        # file meanwhile sees it was unlinked (see `_open_locked`) and retries.
        with contextlib.suppress(OSError):
            if _owner(self.path).get("pid") == os.getpid():
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1
        _HELD.pop(self.folder, None)


@atexit.register
def _release_all() -> None:
    """A run that stopped on an error before releasing its lock releases it at exit (the kernel would drop the
    flock anyway; this also removes the file, so the next run does not report a killed owner)."""
    for lock in list(_HELD.values()):
        lock.release()


def take(folder: str | Path) -> RunLock:
    """Lock run folder `folder` (created if missing) for this process, or raise a one-line VimtoolError naming
    the run that holds it."""
    folder = Path(folder).resolve()
    earlier = _HELD.pop(folder, None)
    if earlier is not None:  # an earlier train() of this process ended by an exception before releasing it
        earlier.release()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = _open_locked(path)
    previous = _read_fd(fd)
    if previous and previous.get("pid") != os.getpid():
        log.warning(
            "%s: taking over the lock of %s, which ended without releasing it (killed?)", path, _describe(previous)
        )
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    # Written in place, not through atomic.py: the lock is this open file (its inode), which a rename would replace.
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
    lock = RunLock(folder, fd)
    _HELD[folder] = lock
    return lock


def _open_locked(path: Path) -> int:
    for _ in range(100):  # retried only when the file changed under us (a releasing owner unlinked it)
        if fcntl is None:
            return _create_exclusive(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_fd(fd)
            os.close(fd)
            raise VimtoolError(_busy(path, owner)) from None
        except OSError as e:  # a file system without locks (some network mounts): the O_EXCL fallback
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            return _create_exclusive(path)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise VimtoolError(f"{path}: could not take the run lock (the file keeps changing); retry")


def _create_exclusive(path: Path) -> int:
    """The fallback without flock: the lock is the file's existence; a dead owner's file on this host is taken
    over, any other is refused."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid") or -1)):
                log.warning("%s: removing the lock of %s, which is no longer running", path, _describe(owner))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise VimtoolError(_busy(path, owner) + f" (if that run is gone, remove the lock: rm {path})") from None
    raise VimtoolError(f"{path}: could not take the run lock; retry")


def _busy(path: Path, owner: dict) -> str:
    return (
        f"{path.parent} is in use by another run ({_describe(owner)}): two runs in one folder would overwrite "
        "each other's checkpoints; wait for it to finish or choose another --out-dir"
    )


def _describe(owner: dict) -> str:
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}"


def _read_fd(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _owner(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
