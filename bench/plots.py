"""Plots of bench/ results (matplotlib, the `bench` extra): one line per series, or bars with ranges.

Optional: without matplotlib a script still writes its JSON and Markdown (bench/harness.py) and says no plot was
drawn. PNGs are written atomically (a temporary name, then a rename).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def plot_lines(
    path: Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    annotate: dict[str, Sequence[str]] | None = None,
) -> Path | None:
    """One line per series {label: (xs, ys)}; returns the PNG path, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'vimtool[bench]'): no plot written", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y == y]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        for (x, y), note in zip(pts, (annotate or {}).get(label, [])):
            ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_bars(
    path: Path,
    labels: Sequence[str],
    values: Sequence[float],
    ylabel: str,
    title: str,
    errors: Sequence[tuple[float, float]] | None = None,
) -> Path | None:
    """Bar chart (errors: (low, high) absolute values per bar, drawn as a range)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'vimtool[bench]'): no plot written", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    yerr = None
    if errors:
        yerr = [
            [max(0.0, v - lo) for v, (lo, _) in zip(values, errors)],
            [max(0.0, hi - v) for v, (_, hi) in zip(values, errors)],
        ]
    ax.bar(range(len(values)), values, yerr=yerr, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
