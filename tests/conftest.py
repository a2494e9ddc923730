"""Test-wide settings: never touch the network (the live Hub cannot be reached here or in CI)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

# Session fixtures shared by several test modules (pytest finds fixtures named in conftest).
from parti_fixtures import parti_world  # noqa: E402, F401
from vim_fixtures import vim_world  # noqa: E402, F401
