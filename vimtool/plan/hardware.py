"""What `vimtool plan` knows about hardware and the papers: accelerators' peak throughput and memory, and the papers'
parameter counts, global batches and step counts of the named sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["vim", "parti", "tokenizer"]


@dataclass(frozen=True)
class GPU:
    """Peak dense tensor-core throughput (TFLOP/s; vendor datasheets) and memory (GB)."""

    bf16_tflops: float
    tf32_tflops: float
    memory_gb: float


GPUS: dict[str, GPU] = {
    "a100": GPU(312, 156, 80),
    "a100-40gb": GPU(312, 156, 40),
    "h100": GPU(989, 495, 80),  # SXM
    "h100-pcie": GPU(756, 378, 80),
    "h200": GPU(989, 495, 141),
    "b200": GPU(2250, 1100, 180),
    "l40s": GPU(362, 183, 48),
    "l4": GPU(121, 60, 24),
    "a10": GPU(125, 62.5, 24),
    "mi300x": GPU(1307, 654, 192),
}


@dataclass(frozen=True)
class PaperFacts:
    family: Family
    size: str
    params: float | None  # the paper's reported parameter count
    global_batch: int
    steps: int


# Named models -> (family, size in that family's SIZES, the paper's figures). PAPERS.md: VIM sec. 2 (batch 1024,
# 450k steps), Parti sec. 3 (batch 8192; steps unstated: the 350M recipe's 450k), ViT-VQGAN sec. 1 (batch 256,
# 500k steps; params = its encoder + decoder ViTs: S 32M, B 91M, L 599M).
PAPER: dict[str, PaperFacts] = {
    "vim-base": PaperFacts("vim", "base", 650e6, 1024, 450_000),
    "vim-large": PaperFacts("vim", "large", 1.7e9, 1024, 450_000),
    "parti-350m": PaperFacts("parti", "350M", 350e6, 8192, 450_000),
    "parti-750m": PaperFacts("parti", "750M", 750e6, 8192, 450_000),
    "parti-3b": PaperFacts("parti", "3B", 3e9, 8192, 450_000),
    "parti-20b": PaperFacts("parti", "20B", 20e9, 8192, 450_000),
    "tokenizer-ss": PaperFacts("tokenizer", "SS", 64e6, 256, 500_000),
    "tokenizer-bb": PaperFacts("tokenizer", "BB", 182e6, 256, 500_000),
    "tokenizer-sl": PaperFacts("tokenizer", "SL", 631e6, 256, 500_000),
    "tokenizer-ll": PaperFacts("tokenizer", "LL", 1198e6, 256, 500_000),
}
PAPER_RUN = {f.family: f for f in PAPER.values()}  # the family's paper batch/steps for any of its sizes
