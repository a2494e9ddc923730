"""Exact resume: a run killed with SIGKILL (or stopped with SIGINT) and resumed ends bitwise equal, on CPU in
fp32, to an uninterrupted run of the same seed. Each run is a real subprocess of tests/engine_tiny_task.py, whose
task has dropout, data noise drawn from the global RNG, EMA and gradient accumulation, so exactness needs the
data position, every RNG stream, the optimizer and the EMA restored. The same holds under `train.parallel: fsdp`
(sharded DCP state, 1 process) and for the tokenizer's dead-code restarts (their window is training state)."""

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


def _run(out: Path, *extra: str, args: list[str] = ARGS) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: same float reductions
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args, *extra],
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


def test_stop_at_pauses_with_a_checkpoint_and_resume_is_bitwise_equal(tmp_path, uninterrupted):
    """`train.stop_at` (the quickstart moves its tokenizer to more threads at a fixed step with it): the run
    returns the checkpoint of that step, between two regular saves, without a `final` pointer; resuming it ends
    where an uninterrupted run does."""
    out = tmp_path / "paused"
    res = _run(out, "--stop-at", "7")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("step_000007")
    assert (out / "latest").resolve().name == "step_000007" and not (out / "final").exists()
    res = _run(out, "--resume", "--stop-at", "7")  # the same command again goes on past its pause
    assert res.returncode == 0, res.stderr
    assert _bitwise_equal(_final(out), uninterrupted)


def test_sigint_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "interrupted"
    res = _run(out, "--interrupt-at", "5")  # Ctrl-C during step 5: it finishes, is saved as step 6, exits 130
    assert res.returncode == 130, res.stderr
    assert "stopped at step 6" in res.stderr and "Traceback" not in res.stderr
    assert (out / "latest").resolve().name == "step_000006"
    res = _run(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert _bitwise_equal(_final(out), uninterrupted)


def test_fsdp_sigkill_then_resume_from_the_sharded_checkpoint_is_bitwise_equal(tmp_path):
    # train.parallel=fsdp on 1 process: weights, AdamW state and EMA in state/dcp (DCP), RNG and data position beside
    fsdp = [*ARGS, "--parallel", "fsdp"]
    res = _run(tmp_path / "uninterrupted", args=fsdp)
    assert res.returncode == 0, res.stderr
    res = _run(tmp_path / "killed", "--die-at", "9", args=fsdp)
    assert res.returncode == -9, res.stderr
    assert (tmp_path / "killed" / "latest" / "state" / "dcp" / ".metadata").is_file()
    res = _run(tmp_path / "killed", "--resume", args=fsdp)
    assert res.returncode == 0, res.stderr
    final = {f: load_file(str(tmp_path / "uninterrupted" / "final" / f)) for f in ["model.safetensors"]}
    resumed = {f: load_file(str(tmp_path / "killed" / "final" / f)) for f in ["model.safetensors"]}
    assert _bitwise_equal(final, resumed)


def test_tokenizer_with_dead_code_restarts_resumes_bitwise_after_sigkill(tmp_path):
    # Restarts every 2 steps; killed in step 7, resumed from step 6 (a restart step: it needs the saved usage window
    # and the last batch's lookup vectors). Control: without that state (state/task.safetensors) the run differs.
    script = Path(__file__).with_name("distributed_script.py")

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(script), "--root", str(tmp_path), "--mode", "restarts", "--dst", str(out), *extra]
        return subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
        )

    assert run(tmp_path / "uninterrupted").returncode == 0
    res = run(tmp_path / "killed", "--die-at", "7")
    assert res.returncode == -9, res.stderr[-2000:]
    assert (tmp_path / "killed" / "latest").resolve().name == "step_000006"
    control = tmp_path / "control"
    shutil.copytree(tmp_path / "killed", control, symlinks=True)
    assert run(tmp_path / "killed", "--resume").returncode == 0
    weights = {o: load_file(str(tmp_path / o / "final" / "model.safetensors")) for o in ("uninterrupted", "killed")}
    assert _bitwise_equal({"m": weights["uninterrupted"]}, {"m": weights["killed"]})
    (control / "checkpoints" / "step_000006" / "state" / "task.safetensors").unlink()
    assert run(control, "--resume").returncode == 0
    assert not _bitwise_equal(
        {"m": weights["uninterrupted"]}, {"m": load_file(str(control / "final" / "model.safetensors"))}
    )
