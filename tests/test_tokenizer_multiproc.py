"""The tokenizer's codebook surgery under a real 2-process data-parallel run (CPU, gloo, `accelerate launch`).

The k-means init and the dead-code restart change the codebook outside the optimizer; DDP only keeps ranks equal
through identical gradient updates, so each rank would drift apart if the new codes were not broadcast, and a
restart judged on one rank's tokens would move codes that the other rank uses. The same run trains the
discriminator with the lazy R1 penalty (a gradient of a gradient) through DDP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch import launch_two_processes

SCRIPT = Path(__file__).with_name("tokenizer_multiproc_script.py")


@pytest.mark.slow
def test_kmeans_init_restart_and_r1_keep_ranks_identical_and_count_all_ranks(tmp_path):
    res = launch_two_processes(str(SCRIPT), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))

    # Every step's forward used the same codebook on both ranks: the init (step 1) and restarts (2, 4) included.
    assert set(r0["codebook_sha"]) == {str(s) for s in range(6)}
    assert r0["codebook_sha"] == r1["codebook_sha"]
    assert r0["restarted"] == r1["restarted"] and sum(r0["restarted"].values()) > 0  # restarts really moved codes

    # The discriminator, trained with the lazy R1 penalty (a double backward) under DDP, stays identical too.
    assert r0["r1_steps"] == r1["r1_steps"] == [1, 3, 5]
    assert set(r0["disc_sha"]) == {str(s) for s in range(6)} and r0["disc_sha"] == r1["disc_sha"]
    assert len(set(r0["disc_sha"].values())) == 5  # first trained at step 1 (disc_start), then every step

    # Dead codes were judged on usage summed over both ranks' tokens.
    assert len(r0["usage_checks"]) == len(r1["usage_checks"]) == 2  # steps 2 and 4
    for c0, c1 in zip(r0["usage_checks"], r1["usage_checks"]):
        total = [a + b for a, b in zip(c0["local"], c1["local"])]
        assert c0["global"] == c1["global"] == total
        assert c0["local"] != c1["local"]  # each rank saw its own tokens: rank 0's counts alone would differ
