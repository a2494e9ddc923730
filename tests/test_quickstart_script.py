"""recipes/quickstart.sh end to end at toy sizes (about a minute): the README's first command must run, hand the
reranker's core to the tokenizer at a fixed step once the reranker is done (train.stop_at, checkpoint, resume on two
threads), and
finish with its adherence table. The numbers at these sizes mean nothing; the flow is what is tested."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.sh"


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_the_tokenizer_takes_the_freed_core(tmp_path):
    out = tmp_path / "qs"
    # the reranker is done long before the tokenizer's pause at 5/8 of its 160 steps
    env = {**os.environ, "QS_TOKENIZER_STEPS": "160", "QS_RERANKER_STEPS": "20", "QS_PARTI_STEPS": "20",
           "QS_PROMPTS": "2", "QS_SAMPLES": "2", "QS_THREADS": "2"}  # fmt: skip
    done = subprocess.run(["bash", str(QUICKSTART), str(out)], env=env, capture_output=True, text=True, timeout=900)
    log = done.stderr.replace("\r", "\n")
    assert done.returncode == 0, log[-3000:]
    assert "the reranker is done, the tokenizer at step 100: it continues on 2 threads" in log
    assert "paused at step 100 of 160" in log and "resuming at step 100" in log
    steps = [json.loads(line)["step"] for line in (out / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 160  # the resumed run finished the schedule
    assert (out / "tokenizer.txt").read_text().strip().endswith("step_000160")
    for group in ("seen_guided", "seen_unguided", "heldout_guided", "heldout_unguided"):
        rec = json.loads((out / "samples" / group / "sampling.json").read_text())
        assert 0.0 <= rec["adherence"]["reranked_best"] <= 1.0
    assert "Prompt adherence (shapes checker pass rate)" in done.stdout


@pytest.mark.slow
def test_quickstart_stops_with_the_failing_stage_named(tmp_path):
    """A stage that fails stops the script with its name and its log's end, not a silent partial run."""
    env = {**os.environ, "QS_TOKENIZER_STEPS": "0", "QS_RERANKER_STEPS": "5", "QS_THREADS": "2"}
    done = subprocess.run(["bash", str(QUICKSTART), str(tmp_path / "qs")], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "error: train.steps, train.batch_size and train.grad_accum must be >= 1" in done.stderr  # vimtool's line
    assert "quickstart: training the tokenizer failed" in done.stderr  # the script names the stage
    assert not (tmp_path / "qs" / "shards").exists()  # and stops there
