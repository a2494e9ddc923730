"""Exact resume: a run killed with SIGKILL (or stopped with SIGINT) and resumed ends bitwise equal, on CPU in
fp32, to an uninterrupted run of the same seed. Each run is a real subprocess of tests/engine_tiny_task.py, whose
task has dropout, data noise drawn from the global RNG, EMA and gradient accumulation, so exactness needs the
data position, every RNG stream, the optimizer and the EMA restored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("engine_tiny_task.py")
ARGS = ["--steps", "14", "--accum", "2", "--ema", "0.9", "--save-every", "4"]
FILES = ["model.safetensors", "state/models/model.safetensors", "state/ema.safetensors"]

pytestmark = pytest.mark.slow


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: same float reductions
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *ARGS, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _final(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f: load_file(str(out / "final" / f)) for f in FILES}


def _bitwise_equal(a, b) -> bool:
    return all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine_resume") / "uninterrupted"
    res = _run(out)
    assert res.returncode == 0, res.stderr
    return _final(out)


def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    res = _run(out, "--die-at", "9")  # SIGKILL inside step 9: checkpoints exist for steps 4 and 8
    assert res.returncode == -9, res.stderr
    assert (out / "latest").resolve().name == "step_000008" and not (out / "final").exists()
    control = tmp_path / "control"
    shutil.copytree(out, control, symlinks=True)
    res = _run(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert _bitwise_equal(_final(out), uninterrupted)
    # Control: the comparison is sensitive. Resuming without the saved RNG state (reseeded) must differ.
    (control / "checkpoints" / "step_000008" / "state" / "rng_rank0.pt").unlink()
    res = _run(control, "--resume")
    assert res.returncode == 0 and "resume is not bitwise exact" in res.stderr
    assert not _bitwise_equal(_final(control), uninterrupted)


def test_sigint_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "interrupted"
    res = _run(out, "--interrupt-at", "5")  # Ctrl-C during step 5: it finishes, is saved as step 6, exits 130
    assert res.returncode == 130, res.stderr
    assert "stopped at step 6" in res.stderr and "Traceback" not in res.stderr
    assert (out / "latest").resolve().name == "step_000006"
    res = _run(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert _bitwise_equal(_final(out), uninterrupted)
