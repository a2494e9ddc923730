"""vimtool/atomic.py: one temp-name convention, the target replaced only on success, temp files gone on failure."""

from __future__ import annotations

import os

import pytest

from vimtool import atomic


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_temp_names_are_hidden_beside_the_target_and_per_process_unless_shared(tmp_path):
    assert atomic.temp_path(tmp_path / "a.json") == tmp_path / f".tmp-a.json-{os.getpid()}"
    assert atomic.temp_path(tmp_path / "step_000004", shared=True) == tmp_path / ".tmp-step_000004"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = atomic.write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("mid-write")
    assert target.read_text() == "old" and _entries(tmp_path) == ["out.txt"]
    atomic.write_bytes(target, b"new")
    atomic.write_json(tmp_path / "m.json", {"b": 1, "a": 2}, sort_keys=True)
    assert target.read_bytes() == b"new" and (tmp_path / "m.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert _entries(tmp_path) == ["m.json", "out.txt"]


def test_a_folder_is_replaced_whole_or_merged_and_a_failed_one_is_removed(tmp_path):
    final = tmp_path / "ckpt"
    with atomic.atomic_dir(final) as tmp:
        (tmp / "model.bin").write_text("v1")
        (tmp / "old_only.txt").write_text("x")
    assert _entries(final) == ["model.bin", "old_only.txt"]
    with atomic.atomic_dir(final) as tmp:  # whole: entries of the old folder do not survive
        (tmp / "model.bin").write_text("v2")
    assert _entries(final) == ["model.bin"] and (final / "model.bin").read_text() == "v2"
    (final / "state").mkdir()
    with atomic.atomic_dir(final, merge=True) as tmp:  # merge: ours replaced, others kept
        (tmp / "model.bin").write_text("v3")
    assert _entries(final) == ["model.bin", "state"] and (final / "model.bin").read_text() == "v3"
    with pytest.raises(OSError, match="disk full"):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "model.bin").write_text("v4")
            raise OSError("disk full (simulated)")
    assert (final / "model.bin").read_text() == "v3" and _entries(tmp_path) == ["ckpt"]


def test_a_leftover_of_a_killed_writer_is_cleared_by_the_next_one(tmp_path):
    left = atomic.temp_path(tmp_path / "step_000002", shared=True)
    left.mkdir()
    (left / "half.bin").write_text("partial")
    with atomic.atomic_dir(tmp_path / "step_000002", shared=True) as tmp:
        assert _entries(tmp) == []
        (tmp / "full.bin").write_text("complete")
    assert _entries(tmp_path) == ["step_000002"] and _entries(tmp_path / "step_000002") == ["full.bin"]
