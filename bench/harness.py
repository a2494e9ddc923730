"""The one harness of bench/: options, clocks, timing, machine facts, result files.

Every benchmark (bench/bench_*.py) and study (bench/studies/*.py) builds its options with `parser()`, calls
`setup(args)` (torch threads, the clock, smoke mode), times with `median_seconds` or `paired_rounds`, and ends with
`write_results`, which prints the table and writes

    NAME.json   {"title", "command", "machine", "header", "rows", "smoke", ...extra}: what docs/BENCHMARKS.md is
                generated from (bench/make_docs.py), and what tests/test_bench_smoke.py checks
    NAME.md     the same table in Markdown, with the command and the machine line

under `--out` (speed benchmarks: bench/results/, studies: bench/studies/results/). A `--smoke` run (tiny sizes,
seconds) writes `smoke_NAME.*` and marks the record `"smoke": true`, so it can never be mistaken for a result.

Timing rules: warm-up calls are never timed; numbers are medians over repeats (min and max kept beside them);
comparisons run A and B interleaved in the same rounds and report the median of the per-round ratios, so the load
of a shared machine hits both sides alike. With one torch thread, `--clock cpu` times this process's CPU seconds,
which the neighbours' load barely moves.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
STUDY_RESULTS = BENCH / "studies" / "results"
if str(REPO) not in sys.path:  # the scripts run from a checkout without installing: `python bench/X.py`
    sys.path.insert(0, str(REPO))

from vimtool.atomic import write_json, write_text  # noqa: E402

# The clock of every timing here: wall time, or with --clock cpu this process's CPU time (one thread only: with more,
# CPU time counts the waits at OpenMP barriers).
_CLOCK: list[Callable[[], float]] = [time.perf_counter]
_RUN = {"smoke": False, "clock": "wall"}


# ------------------------------------------------------------------------------------------------------- options
def parser(doc: str, out: Path = RESULTS, threads: int | None = 1) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every script shares: --smoke, --out, --threads, --clock.

    `doc` is the script's module docstring (its --help). threads=None: torch's default thread count."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks that everything runs (CI)")
    ap.add_argument("--out", default=str(out), help=f"results folder (default {out.relative_to(REPO)})")
    ap.add_argument(
        "--threads", type=int, default=threads, help="torch threads (1: steadiest on a shared machine; 0: torch's)"
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed seconds; cpu: this process's CPU seconds (needs --threads 1)",
    )
    return ap


def setup(args: argparse.Namespace) -> argparse.Namespace:
    """Apply the shared options: torch threads, the clock, smoke mode (`args.prefix` = 'smoke_' or '')."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    clock = getattr(args, "clock", "wall") or "wall"
    if clock == "cpu" and torch.get_num_threads() != 1:
        raise SystemExit("--clock cpu needs --threads 1: with more threads, CPU time counts the barrier waits")
    _CLOCK[0] = time.process_time if clock == "cpu" else time.perf_counter
    _RUN.update(smoke=bool(getattr(args, "smoke", False)), clock=clock)
    args.prefix = "smoke_" if _RUN["smoke"] else ""
    return args


def set_clock(kind: str) -> None:
    """Switch the clock without a parser (peer subprocesses, helpers): 'wall' or 'cpu'."""
    setup(argparse.Namespace(threads=None, clock=kind, smoke=_RUN["smoke"]))


def now() -> float:
    return _CLOCK[0]()


# -------------------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Seconds of repeated calls after the warm-up: every time, and their median / min / max."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "times_s": self.times}


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """`repeats` timed calls of fn() after `warmup` untimed ones (allocations, kernel choice, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = now()
        fn()
        times.append(now() - t0)
    return Timing(times)


def paired_rounds(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, Timing]:
    """Each round calls every fn once, in order (A, B, ... interleaved), so slow spells hit all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
    return {k: Timing(v) for k, v in times.items()}


def paired_ratio(a: Timing | Sequence[float], b: Timing | Sequence[float]) -> float:
    """Median over rounds of a's time / b's time in the same round (the steadiest comparison on a shared machine)."""
    ta = a.times if isinstance(a, Timing) else a
    tb = b.times if isinstance(b, Timing) else b
    return statistics.median(x / y for x, y in zip(ta, tb))


def spread(values: Sequence[float]) -> str:
    """'median [min, max]' of a small sample, the way the studies report seeds."""
    v = sorted(values)
    if not v:
        return "n/a"
    return f"{statistics.median(v):.3g} [{v[0]:.3g}, {v[-1]:.3g}]"


# ------------------------------------------------------------------------------------------------ machine facts
def bf16_supported() -> bool:
    """Whether this CPU runs bf16 autocast matmuls (the bf16 rows are skipped where it does not)."""
    import torch

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.mm(torch.randn(8, 8), torch.randn(8, 8))
        return True
    except RuntimeError:
        return False


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), e.g. 'AMD EPYC 7B13'; the platform's processor string elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The widest matmul instructions the CPU offers: 'AMX', 'AVX512-BF16', 'AVX-512', 'AVX2' or '' (unknown).

    One model name covers CPUs of several generations (a cloud 'AMD EPYC' is Zen 3 with AVX2 only on one
    machine and Zen 4 with AVX512-BF16 on the next), and bf16 speed differs between them by 2-3x.
    """
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])  # fmt: skip
    except OSError:
        return ""
    for flag, tier in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return tier
    return ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, load averages, torch build and threads, git commit."""
    import torch

    from vimtool.provenance import software_info

    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    sw = software_info()
    return {
        "cpu": cpu,
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "load_1m": round(load[0], 1),
        "load_5m": round(load[1], 1),
        "load_15m": round(load[2], 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": _RUN["clock"],
        "python": platform.python_version(),
        "git_commit": sw["git_commit"],
        "git_dirty": sw["git_dirty"],
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def cpu_label(m: dict[str, Any]) -> str:
    """The CPU of a `machine()` record with its ISA tier, e.g. 'AMD EPYC (AVX2)' (one model name covers several)."""
    return f"{m['cpu']} ({m['isa']})" if m.get("isa") else m["cpu"]


def machine_line(m: dict[str, Any]) -> str:
    """One line for tables, e.g. 'AMD EPYC, 2 cores, load 3.2 (1 min), torch 2.13.0+cpu, 1 threads, ... UTC'."""
    clock = f", {m['clock']} clock" if m.get("clock") else ""
    git = f", git {m['git_commit'][:10]}" if m.get("git_commit") else ""
    return (f"{cpu_label(m)}, {m['cores']} cores, load {m['load_1m']} (1 min), torch {m['torch']}, {m['threads']} threads"
            f"{clock}{git}, {m['date_utc']} UTC")  # fmt: skip


# ------------------------------------------------------------------------------------------------ result files
def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    cells = [[str(c) for c in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    rule = "-|-".join("-" * w for w in widths)
    if markdown:
        lines = ["| " + ln + " |" for ln in lines]
        rule = "|-" + rule + "-|"
    lines.insert(1, rule)
    return "\n".join(lines)


def fmt(c: Any) -> str:
    """A table cell: 3 significant digits below 1000, whole numbers above, 'n/a' for None / NaN."""
    if isinstance(c, float):
        if c != c:  # NaN
            return "n/a"
        return f"{c:.3g}" if abs(c) < 1000 else f"{c:.0f}"
    return "n/a" if c is None else str(c)


def command_line() -> str:
    """The command that made these numbers, with the script's path relative to the repository."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    return "python " + shlex.join([str(script), *sys.argv[1:]])


def write_results(
    name: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    out: Path | str | None = None,
    extra: dict[str, Any] | None = None,
    title: str = "",
) -> Path:
    """Print the table and write NAME.json + NAME.md under `out` (smoke runs: smoke_NAME.*); returns the JSON path."""
    out = Path(out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    name = ("smoke_" if _RUN["smoke"] and not name.startswith("smoke_") else "") + name
    m = machine()
    if title:
        print(title)
    print("# " + machine_line(m))
    print(format_table(header, rows))
    record = {"title": title, "command": command_line(), "machine": m, "header": list(header),
              "rows": [list(r) for r in rows], "smoke": _RUN["smoke"], **(extra or {})}  # fmt: skip
    path = write_json(out / f"{name}.json", record)
    write_text(out / f"{name}.md", markdown(record))
    return path


def markdown(record: dict[str, Any]) -> str:
    """A result record as Markdown: title, command, machine line, table (and notes, when the record has them)."""
    md = f"{record['title']}\n\n" if record.get("title") else ""
    md += f"`{record['command']}`\n\n{machine_line(record['machine'])}\n\n"
    md += format_table(record["header"], record["rows"], markdown=True) + "\n"
    notes = record.get("tests") or record.get("notes")
    if notes:
        md += "\n" + "\n".join(f"- {s}" for s in notes) + "\n"
    return md
