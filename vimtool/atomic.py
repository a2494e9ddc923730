"""Atomic file writes for command outputs: a crash never leaves a half-written JSON or PNG behind.

Write to a hidden temporary name in the same folder, then `os.replace` (atomic on POSIX and Windows).
Checkpoints and shards have their own folder-level / file-level atomic writers (checkpoint.py, data/shards.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_json(path: Path, obj: Any) -> Path:
    """Write `obj` as indented JSON (non-JSON values via str) atomically; returns `path`."""
    tmp = _tmp_for(path)
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_png(img, path: Path) -> Path:
    """Save a PIL image as PNG atomically; returns `path`."""
    tmp = _tmp_for(path)
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_npy(path: Path, array) -> Path:
    """Save a NumPy array as .npy atomically; returns `path`."""
    tmp = _tmp_for(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) atomically; returns `path`."""
    tmp = _tmp_for(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
