"""bench/gpu_check.sh on a machine without CUDA: a smoke run that says what it skipped and still runs the rest."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the real checks (minutes)")
def test_gpu_check_smoke_skips_the_cuda_parts_and_says_so(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    skipped = [ln for ln in out.splitlines() if ln.startswith("skipped: ")]
    assert any("compile" in ln and ln.endswith("(needs CUDA)") for ln in skipped), skipped
    assert any("fsdp2" in ln for ln in skipped), skipped
    assert any("bench_plan.py --device cuda" in ln and ln.endswith("(needs CUDA)") for ln in skipped), skipped
    # what runs on a CPU still wrote its (smoke) results
    steps = json.loads((tmp_path / "smoke_gpu_steps.json").read_text())
    rows = {r[0]: r for r in steps["rows"]}
    assert {"train eager", "decode batch 1"} <= set(rows), rows
    assert all(rows[k][steps["header"].index("tokens/s")] > 0 for k in rows)
    assert (tmp_path / "smoke_fid.json").is_file()
