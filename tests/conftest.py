"""Test-wide settings: never touch the network (the live Hub cannot be reached here or in CI)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

# pyproject's addopts run the suite on pytest-xdist workers (`-n auto`, at most MAX_WORKERS). Each worker gets its
# share of the cores: torch's default of one thread per core in every worker oversubscribes the CPU, and then each
# small op waits for a descheduled thread (tiny models many times slower). Set before torch is imported; CLI runs
# and launches the tests start inherit it. Tests that need a thread count of their own set it themselves.
MAX_WORKERS = 4
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most MAX_WORKERS (tests start 2-process launches of their own)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


# Session fixtures shared by several test modules (pytest finds fixtures named in conftest).
from parti_fixtures import parti_world  # noqa: E402, F401
from vim_fixtures import vim_world  # noqa: E402, F401
