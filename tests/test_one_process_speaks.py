"""Under `accelerate launch` with 2 processes only the main process speaks: one path on stdout, each INFO log line
once on stderr, and log lines written through tqdm so they never land inside a progress bar.

One real launch (2 CPU processes over gloo, `tests/launch.py`) of a tiny train-lm; the unit tests below it check
the rank logic without launching anything.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from launch import launch_two_processes
from vim_fixtures import make_shards, make_tokenizer

from vimtool import logs, pipes

LOG_LINE = re.compile(r"\d\d:\d\d:\d\d ([DIWEC]) (\[rank \d+\] )?(\S+): (.*)")


@pytest.mark.slow
def test_a_two_process_train_lm_prints_one_path_and_each_info_line_once(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tok")
    make_shards(tmp_path / "shards", tokenizer, n=64, rows_per_shard=32)
    recipe = tmp_path / "vim.json"
    recipe.write_text(json.dumps({
        "size": "micro", "val_fraction": 0.25, "model": {"dropout": 0.0},
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "save_every": 0, "eval_every": 2,
                  "log_every": 1, "progress": True},
    }))  # fmt: skip
    res = launch_two_processes(
        "-m", "vimtool", "train-lm", "--shards", str(tmp_path / "shards"), "--config", str(recipe),
        "--out-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]

    lines = res.stdout.splitlines()
    assert len(lines) == 1 and (Path(lines[0]) / "model.safetensors").is_file(), res.stdout  # one path, one process

    # Every log line, wherever tqdm's carriage returns put it: split on both \n and \r.
    pieces = re.split(r"[\r\n]", res.stderr)
    logged = [m for m in (LOG_LINE.match(p) for p in pieces) if m]
    info = [f"{m.group(3)}: {m.group(4)}" for m in logged if m.group(1) == "I"]
    assert len(info) >= 3, res.stderr[-3000:]  # the run logged its setup, steps and checkpoint
    assert [line for line, n in Counter(info).items() if n > 1] == []
    assert {m.group(2) for m in logged if m.group(1) in "DI"} == {"[rank 0] "}  # no other rank logs at INFO
    assert "|" in res.stderr  # a progress bar was drawn ...
    # ... and no log line was glued onto it: each starts a line or follows tqdm's clearing carriage return
    for m in re.finditer(r"\d\d:\d\d:\d\d [DIWEC] ", res.stderr):
        assert m.start() == 0 or res.stderr[m.start() - 1] in "\r\n", res.stderr[max(0, m.start() - 80) : m.end() + 40]


def test_the_rank_comes_from_the_launchers_environment(monkeypatch):
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert logs.process_rank() == 0 and logs.world_size() == 1 and logs.is_main_process()
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert logs.process_rank() == 3 and not logs.is_main_process()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert logs.process_rank() == 1 and logs.world_size() == 2


def test_only_the_main_process_prints_paths(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    pipes.emit_path("a/b")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    pipes.emit_path("a/b")
    assert capsys.readouterr().out == "a/b\n"


def test_other_ranks_log_warnings_with_a_rank_prefix(monkeypatch, capsys):
    root = logging.getLogger()
    level = root.level
    try:
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        logs.setup_logging()
        logging.getLogger("vimtool.x").info("quiet")
        logging.getLogger("vimtool.x").warning("loud")
        err = capsys.readouterr().err
        assert "quiet" not in err and re.search(r"W \[rank 1\] vimtool.x: loud", err)
        monkeypatch.setenv("RANK", "0")
        logs.setup_logging()
        logging.getLogger("vimtool.x").info("said once")
        err = capsys.readouterr().err
        assert err.count("said once") == 1 and "[rank 0] vimtool.x: said once" in err
        assert sum(isinstance(h, logs.TqdmHandler) for h in root.handlers) == 1  # a second setup replaced the first
    finally:
        for h in [h for h in root.handlers if isinstance(h, logs.TqdmHandler)]:
            root.removeHandler(h)
        root.setLevel(level)
