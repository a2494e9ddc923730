"""Launching real multi-process runs from tests: `accelerate launch` with 2 CPU processes over gloo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(*program: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `program` (a script and its arguments, or "-m", module, arguments) as 2 data-parallel CPU processes. ACCELERATE_USE_CPU=true with --multi_gpu forms a real gloo
    group (plain `--cpu` starts one process: a known trap); one thread each, the machine has 2 cores."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    assert Path(accelerate).exists(), "the accelerate CLI ships with the accelerate package"
    cmd = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *program,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
