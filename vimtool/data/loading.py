"""How training reads images: DataLoader workers and prefetch, and the preprocessing named in a recipe.

    DataLoading(workers=None, prefetch=2, resize="shorter-side", crop="random", draft=True)
    default_workers() -> min(4, cores - 1), at least 0
    loader_kwargs(loading, device_type="cpu") -> {"num_workers", "prefetch_factor", "pin_memory"} for
                                                 torch.utils.data.DataLoader
    decode_ahead(jobs, workers, window) -> the jobs' results in order, run in `workers` threads up to `window`
                                           ahead (tokenize-dataset's decoding; PIL decodes and resizes without
                                           holding the GIL, so threads run in parallel)

At ImageNet scale decoding JPEGs is the bottleneck of a step: with the default `workers`, decoding runs in
`workers` processes that each keep `prefetch` batches ready while the accelerator trains, and `draft` lets
libjpeg decode at the smallest 1/2^k scale that still covers the training size (bench/bench_data_pipeline.py
measures both). Workers see the same pixels as the main process: ImageDataset seeds its crops from
(seed, epoch, index), never from a worker's RNG.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from vimtool.data.image_dataset import CROPS, RESIZES
from vimtool.errors import VimtoolError

T = TypeVar("T")


@dataclass
class DataLoading:
    """The `data:` loading settings of a training recipe."""

    workers: int | None = None  # DataLoader worker processes; None: min(4, cores - 1); 0: load in the main process
    prefetch: int = 2  # batches each worker prepares ahead (DataLoader prefetch_factor)
    resize: str = "shorter-side"  # the papers' preprocessing: the shorter side -> image size ...
    crop: str = "random"  # ... then a square crop of training images: random | center (evaluation: center)
    draft: bool = True  # JPEGs decode at a reduced scale that still covers the image size (faster)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise VimtoolError(f"data.workers must be >= 0 (or unset for the default), got {self.workers}")
        if self.prefetch < 1:
            raise VimtoolError(f"data.prefetch must be >= 1, got {self.prefetch}")
        if self.resize not in RESIZES:
            raise VimtoolError(f"data.resize must be {' or '.join(RESIZES)}, got {self.resize!r}")
        if self.crop not in CROPS:
            raise VimtoolError(f"data.crop must be one of {', '.join(CROPS)}, got {self.crop!r}")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset, SLURM)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """min(4, cores - 1): leave one core to the training process; more than 4 rarely helps one accelerator."""
    return max(0, min(4, available_cores() - 1))


def loader_kwargs(loading: DataLoading | None = None, device_type: str = "cpu") -> dict:
    """Keyword arguments for `torch.utils.data.DataLoader` from the loading settings."""
    loading = loading or DataLoading()
    workers = default_workers() if loading.workers is None else int(loading.workers)
    kwargs: dict = {"num_workers": workers, "pin_memory": device_type == "cuda"}
    if workers > 0:  # an error for torch with num_workers=0
        # not persistent_workers: workers keep the dataset copy they started with, so ImageDataset.set_epoch
        # would not reach them and every epoch would repeat epoch 0's crops
        kwargs["prefetch_factor"] = int(loading.prefetch)
    return kwargs


def decode_ahead(jobs: Iterable[Callable[[], T]], workers: int, window: int) -> Iterator[T]:
    """Each job's result, in the jobs' order; with workers > 1 the jobs run in that many threads, at most `window`
    of them submitted ahead of the consumer (memory stays bounded). An error in a job is raised at its turn."""
    if workers <= 1:
        yield from (job() for job in jobs)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) >= max(window, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
