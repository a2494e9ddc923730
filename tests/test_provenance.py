"""Checkpoints name the code that made them (vimtool/provenance.py), read from a real git checkout."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from engine_tiny_task import TinyConfig, TinyMLP

from vimtool import checkpoint as ckpt
from vimtool.provenance import _SOURCE_ROOT, describe, software_info, source_revision

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root, *args):
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@needs_git
def test_source_revision_reads_commit_and_uncommitted_changes(tmp_path):
    assert source_revision(tmp_path) == (None, None)  # not a checkout
    (tmp_path / "vimtool").mkdir()
    (tmp_path / "vimtool" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "vimtool/a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert source_revision(tmp_path) == (head, False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "scratch.txt").write_text("untracked, outside the package")
    assert source_revision(tmp_path) == (head, False)
    (tmp_path / "vimtool" / "a.py").write_text("x = 2\n")
    assert source_revision(tmp_path) == (head, True)
    assert "uncommitted changes" in describe({"vimtool": "0", "git_commit": head, "git_dirty": True, "torch": "t"})


def test_checkpoint_records_software(tmp_path):
    folder = ckpt.save_model(TinyMLP(TinyConfig()), tmp_path / "ck")
    meta = json.loads((folder / "config.json").read_text())
    info = software_info()
    assert meta["software"] == json.loads(json.dumps(info))
    assert info["torch"] and info["vimtool"] == meta["vimtool_version"]
    # this test file runs from the source tree: its commit is what the checkpoint must name
    assert info["git_commit"] == source_revision(_SOURCE_ROOT)[0]
    assert describe(info) in (folder / "README.md").read_text()
