"""A real 2-process data-parallel run on CPU (gloo) matches a 1-process run with the same global batch.

`accelerate launch --multi_gpu --num_processes 2` with ACCELERATE_USE_CPU=true (a known trap: plain
`--cpu` starts one process). The task is the two-optimizer GAN-like one (generator + discriminator, DDP-wrapped
both), without dropout and data noise so both runs draw no random numbers after initialisation.
Tolerance 1e-5: DDP averages the gradients of two half-batch means, so float sums run in another order
(observed differences ~1e-7 after 10 steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import engine_tiny_task
import pytest
from launch import launch_two_processes
from safetensors.torch import load_file

SCRIPT = Path(engine_tiny_task.__file__)
ARGS = ["--task", "gan", "--steps", "10", "--batch", "8", "--dropout", "0", "--noise", "0", "--save-every", "5"]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    two = tmp_path / "two"
    res = launch_two_processes(str(SCRIPT), "--out", str(two), *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    one = tmp_path / "one"
    engine_tiny_task.main(["--out", str(one), *ARGS])

    assert json.loads((two / "final" / "state" / "trainer.json").read_text())["world_size"] == 2
    # Each rank read its own half of every global batch, and together they read exactly the 1-process batch.
    ranks = [json.loads((two / f"seen_rank{r}.json").read_text()) for r in range(2)]
    single = json.loads((one / "seen_rank0.json").read_text())
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 10
    for r0, r1, s in zip(ranks[0], ranks[1], single):
        assert len(r0) == len(r1) == 4 and not set(r0) & set(r1) and r0 + r1 == s

    for f in ["model.safetensors", "state/models/disc.safetensors"]:
        a, b = load_file(str(one / "final" / f)), load_file(str(two / "final" / f))
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 1e-5, (f, worst)


@pytest.mark.slow
def test_two_compiled_processes_match_one_eager_process(tmp_path):
    # train.compile under DDP (torch.compile of the DDP-wrapped generator and discriminator, a real gloo group)
    two = tmp_path / "two"
    res = launch_two_processes(str(SCRIPT), "--out", str(two), *ARGS, "--compile")
    assert res.returncode == 0, res.stderr[-3000:]
    one = tmp_path / "one"
    engine_tiny_task.main(["--out", str(one), *ARGS])
    for r in range(2):  # both ranks trained the compiled modules
        assert json.loads((two / f"kinds_rank{r}.json").read_text()) == ["OptimizedModule"]
    assert json.loads((one / "kinds_rank0.json").read_text()) == ["TinyDisc", "TinyMLP"]
    for f in ["model.safetensors", "state/models/model.safetensors", "state/models/disc.safetensors"]:
        a, b = load_file(str(one / "final" / f)), load_file(str(two / "final" / f))
        assert sorted(a) == sorted(b)  # plain parameter names, no compile or DDP prefixes
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 1e-5, (f, worst)
