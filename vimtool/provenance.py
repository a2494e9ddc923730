"""Which code made a result: recorded in every checkpoint (config.json "software", trainer.json, the model card).

Why: training results move with changes that keep the math (a fused optimizer, a fused NOBLE kernel, a different
BLAS), so a recipe reproduces bit for bit only at a fixed commit. A checkpoint therefore names the vimtool version,
the git commit of the source tree it was imported from (when that is a git checkout; None for an installed wheel),
whether that tree had uncommitted changes, and the torch and Python versions.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from vimtool import __version__

_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout holding vimtool/ (editable installs)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout, or a hung filesystem
        return None
    return out.stdout.strip()


def source_revision(root: Path) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes under root/vimtool) of the git checkout at `root`; (None, None) if none."""
    if not (root / ".git").exists():  # an installed wheel: site-packages is no checkout (and may sit inside one)
        return None, None
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None, None
    # tracked files of the package only: run folders, caches and notes beside the code are not the code
    # --no-optional-locks: never take .git/index.lock, which would make the user's own concurrent `git commit` fail
    status = _git(root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--", "vimtool")
    return commit, None if status is None else bool(status)


@functools.lru_cache(maxsize=1)
def software_info() -> dict[str, Any]:
    """{"vimtool", "git_commit", "git_dirty", "torch", "python"}; git fields are None outside a git checkout.

    Computed once per process (a training run's checkpoints all carry the commit it started from).
    """
    commit, dirty = source_revision(_SOURCE_ROOT)
    return {
        "vimtool": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def describe(info: dict[str, Any] | None = None) -> str:
    """One line for logs and model cards, e.g. 'vimtool 0.1.0 (git 6ed31aa1c2d3, uncommitted changes), torch 2.13.0+cpu'."""
    info = info or software_info()
    src = ""
    if info.get("git_commit"):
        src = f" (git {info['git_commit'][:12]}{', uncommitted changes' if info.get('git_dirty') else ''})"
    return f"vimtool {info.get('vimtool')}{src}, torch {info.get('torch')}"
