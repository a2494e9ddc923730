"""Shared pieces of the bench/ scripts: machine description, median timing, result tables, JSON and PNG output.

Every study and comparison in bench/ prints its table to stdout and writes, under bench/results/ (or --out):
  NAME.json   the rows plus the machine and the exact command (docs/BENCHMARKS.md quotes these)
  NAME.md     the same table in Markdown
  NAME.png    a plot (matplotlib, the `bench` extra), when the script draws one

Timing rule of the issue (issue 8 "Done when"): warm-up excluded, medians over repeats, ratios only between
numbers taken in the same run (a shared machine's load moves absolute numbers, much less their ratios).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, load, torch build and threads."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_1m": round(load[0], 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def machine_line(m: dict[str, Any] | None = None) -> str:
    m = m or machine()
    return (f"# {m['cpu']}, {m['cores']} cores, load {m['load_1m']} (1 min), torch {m['torch']}, "
            f"{m['threads']} threads, {m['date_utc']} UTC")  # fmt: skip


# The clock of median_seconds: wall time, or with set_clock("cpu") this process's CPU time -- with one torch thread
# that is the time the code itself needs, which the neighbours' load on a shared machine barely changes.
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def set_clock(kind: str) -> None:
    import torch

    if kind == "cpu" and torch.get_num_threads() != 1:
        raise SystemExit("--clock cpu needs one torch thread (--threads 1): with more, CPU time counts barrier waits")
    CLOCK[0] = time.process_time if kind == "cpu" else time.perf_counter


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median seconds (CLOCK) of `fn()` over `repeats` calls after `warmup` untimed calls; also every time."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK[0]()
        fn()
        times.append(CLOCK[0]() - t0)
    return statistics.median(times), times


def spread(values: Sequence[float]) -> str:
    """'median [min, max]' of a small sample, the way the studies report seeds."""
    v = sorted(values)
    if not v:
        return "n/a"
    return f"{statistics.median(v):.3g} [{v[0]:.3g}, {v[-1]:.3g}]"


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    sep = " | "
    lines = [sep.join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    rule = "-|-".join("-" * w for w in widths)
    if markdown:
        lines = ["| " + ln + " |" for ln in lines]
        rule = "|-" + rule + "-|"
    lines.insert(1, rule)
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        if c != c:  # NaN
            return "n/a"
        return f"{c:.3g}" if abs(c) < 1000 else f"{c:.0f}"
    return "n/a" if c is None else str(c)


def write_results(
    name: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    out: Path | None = None,
    extra: dict[str, Any] | None = None,
    title: str = "",
) -> Path:
    """Print the table to stdout and write NAME.json + NAME.md under `out` (default bench/results)."""
    out = Path(out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    if title:
        print(title)
    print(machine_line(m))
    print(format_table(header, rows))
    record = {"title": title, "command": "python " + shlex.join(sys.argv), "machine": m, "header": list(header),
              "rows": [list(r) for r in rows], **(extra or {})}  # fmt: skip
    _atomic_write(out / f"{name}.json", json.dumps(record, indent=2, default=str) + "\n")
    md = f"{title}\n\n" if title else ""
    md += f"`{record['command']}`\n\n{machine_line(m)[2:]}\n\n{format_table(header, rows, markdown=True)}\n"
    _atomic_write(out / f"{name}.md", md)
    return out / f"{name}.json"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
