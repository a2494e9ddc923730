"""FSDP2 and DDP on 2 real CPU processes (gloo) against 1 process, for all three model families, with few launches.

One 1-process run and ONE `accelerate launch` of 2 processes (tests/distributed_script.py) train the tokenizer
(with discriminator + lazy R1 and the k-means codebook init), VIM (with EMA) and Parti 10 steps each, under
`train.parallel` ddp and fsdp (fsdp with activation checkpointing), at global batch 8 with micro-batch 4:
accumulation 2 on 1 process, 1 on 2 (`train.micro_batch`). The same launch resumes a 1-process FSDP checkpoint
on 2 processes; a last 1-process run resumes the 2-process one. Tolerance: 2 processes reduce the gradients of
two half-batch means, so float sums run in another order (observed < 5e-7 in the losses, ~4e-6 in weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_script import rewind
from launch import launch_two_processes
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("distributed_script.py")
FAMILIES = ["tokenizer", "lm", "t2i"]

pytestmark = pytest.mark.slow


def _one_process(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    res = _one_process(root, "--mode", "data")
    assert res.returncode == 0, res.stderr[-3000:]
    res = _one_process(root, "--mode", "fresh", "--runs", "tokenizer:ddp,lm:ddp,t2i:ddp,lm:fsdp")
    assert res.returncode == 0, res.stderr[-3000:]
    rewind(root / "1p" / "lm_fsdp", root / "lm_1to2", 5)
    runs = ",".join(f"{f}:{p}" for p in ("ddp", "fsdp") for f in FAMILIES)
    res = launch_two_processes(str(SCRIPT), "--root", str(root), "--mode", "fresh", "--runs", runs,
                               "--dst", str(root / "lm_1to2"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rewind(root / "2p" / "lm_fsdp", root / "lm_2to1", 5)
    res = _one_process(root, "--mode", "resume", "--dst", str(root / "lm_2to1"))
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def _log(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss/model" in r]


def _worst(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert sorted(x) == sorted(y)  # plain parameter names: no FSDP, DDP or checkpoint-wrapper prefixes
    return max((x[k] - y[k]).abs().max().item() for k in x)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_process_fsdp_and_ddp_losses_equal_one_process_at_the_same_global_batch(root, family):
    one = _log(root / "1p" / f"{family}_ddp")
    trainer = json.loads((root / "1p" / f"{family}_ddp" / "final" / "state" / "trainer.json").read_text())
    assert (trainer["world_size"], trainer["grad_accum"]) == (1, 2)  # micro-batch 4 x 2 accumulation = 8
    for parallel in ("ddp", "fsdp"):
        run = root / "2p" / f"{family}_{parallel}"
        trainer = json.loads((run / "final" / "state" / "trainer.json").read_text())
        assert (trainer["world_size"], trainer["grad_accum"], trainer["parallel"]) == (2, 1, parallel)
        two = _log(run)
        assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 11))
        assert [r["samples_seen"] for r in two] == [8 * s for s in range(1, 11)]
        keys = sorted({k for r in one for k in r if k.startswith("loss/")})
        assert "loss/model" in keys and (family != "tokenizer" or "loss/disc" in keys)  # D from step 2 on
        for a, b in zip(one, two):
            assert sorted(k for k in a if k in keys) == sorted(k for k in b if k in keys)
            for k in (k for k in keys if k in a):
                assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])), (parallel, a["step"], k, a[k], b[k])
        assert (
            _worst(root / "1p" / f"{family}_ddp" / "final" / "model.safetensors", run / "final" / "model.safetensors")
            < 1e-4
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp_parameters_are_dtensors_sharded_over_both_processes(root, family):
    for r in range(2):
        seen = json.loads((root / "2p" / f"{family}_fsdp_params_rank{r}.json").read_text())
        assert all(kinds == ["DTensor"] for kinds in seen["kinds"].values()), seen
        assert all(p == "(Shard(dim=0),)" for p in seen["placements"].values()), seen
        ddp = json.loads((root / "2p" / f"{family}_ddp_params_rank{r}.json").read_text())
        assert "DTensor" not in json.dumps(ddp["kinds"])  # the control: DDP keeps plain parameters
    if family == "tokenizer":  # the discriminator is sharded too
        assert "disc" in seen["kinds"]
    dcp = root / "2p" / f"{family}_fsdp" / "final" / "state" / "dcp"
    assert sorted(p.name for p in dcp.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # each rank's shards


def test_sharded_checkpoint_resumes_on_one_process_and_on_two(root):
    # 2 -> 1: the 2-process FSDP run rewound to step 5 and finished on 1 process; 1 -> 2 the other way round
    assert (
        _worst(
            root / "2p" / "lm_fsdp" / "final" / "model.safetensors", root / "lm_2to1" / "final" / "model.safetensors"
        )
        < 1e-5
    )
    assert (
        _worst(
            root / "1p" / "lm_fsdp" / "final" / "model.safetensors", root / "lm_1to2" / "final" / "model.safetensors"
        )
        < 1e-5
    )
    for run in ("lm_2to1", "lm_1to2"):
        log = _log(root / run)
        assert [r["step"] for r in log] == [6, 7, 8, 9, 10]  # resumed at step 5, not restarted
    # raw weights and the optimizer came back too: the resumed losses equal the uninterrupted run's
    for a, b in zip(_log(root / "2p" / "lm_fsdp")[5:], _log(root / "lm_2to1")):
        assert abs(a["loss/model"] - b["loss/model"]) < 1e-5


def test_one_process_fsdp_equals_plain_training_and_exports_a_sampleable_checkpoint(root, tmp_path):
    from typer.testing import CliRunner

    from vimtool.commands import app

    # 1-process FSDP (a 1-rank group), activation checkpointing and EMA: the same numbers as plain training
    plain, fsdp = root / "1p" / "lm_ddp", root / "1p" / "lm_fsdp"
    assert [r["loss/model"] for r in _log(plain)] == [r["loss/model"] for r in _log(fsdp)]
    assert _worst(plain / "final" / "model.safetensors", fsdp / "final" / "model.safetensors") == 0.0
    # the consolidated export of the 2-process FSDP run is an ordinary checkpoint folder
    final = root / "2p" / "lm_fsdp" / "final"
    assert (final / "config.json").is_file() and not (final / "state" / "models" / "model.safetensors").exists()
    res = CliRunner().invoke(app, ["sample", "-c", str(final), "--class", "1", "-n", "2", "--seed", "1",
                                   "--out", str(tmp_path / "s"), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len([p for p in res.stdout.split() if p.endswith(".png")]) == 2
