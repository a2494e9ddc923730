"""The NOBLE study's report: from the run entries of noble_study.json to its table, its conclusions and its plots.

Used by bench/studies/noble.py after every finished run (table and conclusions) and at the end or with `--report`
(plots). Everything here is a pure function of the entries, so the report can be rebuilt at any time from the file.

Definitions (per model and run length, "steps"):
- an arm's best LR: the LR of its lowest final validation loss on the sweep seed (the smallest seed it ran);
  its other seeds run at that LR only, so picking on the first seed keeps the seeds at the best LR unselected;
- the target: the baseline's final validation loss at its best LR, median over its seeds;
- steps_to_baseline: the first step, linearly interpolated between evaluations, at which a run's validation loss
  is at or below the target (None: never within the run). Step speedup = steps / steps_to_baseline (the baseline
  reaches its own final loss at about the last step); wall speedup = the same in seconds, each run at its own
  median seconds per step.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness import spread

BASELINE = "baseline"
MAIN_ARMS = ("baseline", "noble-paper", "noble-reference")


def parent_of(arm: str) -> str | None:
    """The main arm an ablation varies (its name's prefix: noble-paper-gelu -> noble-paper); None for a main arm."""
    return next((m for m in sorted(MAIN_ARMS, key=len, reverse=True) if arm.startswith(m + "-")), None)


HEADER = ["model", "steps", "arm", "best lr", "lrs tried", "seeds", "final val loss", "reached baseline",
          "steps to baseline", "step speedup", "wall speedup", "step time +", "adherence seen / held-out"]  # fmt: skip


def steps_to(curve: list[list[float]], target: float) -> float | None:
    """First (interpolated) step at which the validation loss is <= target; None when never."""
    prev = None
    for step, loss in curve:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(step)
            s0, l0 = prev
            return s0 + (step - s0) * (l0 - target) / (l0 - loss)
        prev = (step, loss)
    return None


def _groups(entries: list[dict]) -> dict[tuple[str, int], dict[str, list[dict]]]:
    """(model, steps) -> arm -> entries, in the order first seen."""
    out: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        out[(e["model"], int(e["steps"]))][e["arm"]].append(e)
    return out


def best_lr(runs: list[dict]) -> float:
    """The LR of the lowest final validation loss on the sweep seed (the smallest seed among `runs`)."""
    sweep_seed = min(e["seed"] for e in runs)
    return min((e for e in runs if e["seed"] == sweep_seed), key=lambda e: e["final_val_loss"])["lr"]


def at_best(runs: list[dict]) -> list[dict]:
    lr = best_lr(runs)
    return sorted((e for e in runs if e["lr"] == lr), key=lambda e: e["seed"])


def targets(entries: list[dict]) -> dict[tuple[str, int], float]:
    """(model, steps) -> the baseline's final validation loss at its best LR, median over its seeds."""
    out = {}
    for key, arms in _groups(entries).items():
        if arms.get(BASELINE):
            out[key] = statistics.median(e["final_val_loss"] for e in at_best(arms[BASELINE]))
    return out


def refresh_steps_to_baseline(entries: list[dict]) -> None:
    """Set every entry's steps_to_baseline against the current target of its model and length (None without one)."""
    tgt = targets(entries)
    for e in entries:
        t = tgt.get((e["model"], int(e["steps"])))
        e["steps_to_baseline"] = None if t is None else steps_to(e["curve"], t)


def spread_steps(values: list[float]) -> str:
    """'median [min, max]' of step counts, in whole steps."""
    v = sorted(values)
    return f"{statistics.median(v):.0f} [{v[0]:.0f}, {v[-1]:.0f}]"


def downstream_cell(best: list[dict]) -> str:
    """The arm's downstream score at its best LR (Parti: shapes adherence of all samples, seen / held-out prompts),
    median over the seeds that have one; "n/a" where none has."""
    scores = [e["downstream"] for e in best if "downstream" in e]
    if not scores:
        return "n/a"
    seen, held = (statistics.median(d[k] for d in scores) for k in ("seen", "heldout"))
    return f"{100 * seen:.1f}% / {100 * held:.1f}% ({len(scores)} seed{'s' if len(scores) > 1 else ''})"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(entries: list[dict]) -> tuple[list[str], list[list[Any]], list[str]]:
    """(header, rows, conclusions): one row per model, length and arm at its best LR; conclusions in words, each
    saying only what the numbers show (and how many seeds they rest on)."""
    rows, notes = [], []
    for (model, steps), arms in _groups(entries).items():
        base = at_best(arms[BASELINE]) if arms.get(BASELINE) else []
        base_sec = _median([e["sec_per_step"] for e in base])
        target = statistics.median(e["final_val_loss"] for e in base) if base else None
        for arm, runs in arms.items():
            best = at_best(runs)
            lrs = sorted({e["lr"] for e in runs})
            finals = [e["final_val_loss"] for e in best]
            reached = [e["steps_to_baseline"] for e in best if e["steps_to_baseline"] is not None]
            sec = _median([e["sec_per_step"] for e in best])
            step_speedup = steps / _median(reached) if reached else None
            wall_speedup = steps * base_sec / (_median(reached) * sec) if reached and base_sec and sec else None
            overhead = f"{100 * (sec / base_sec - 1):+.0f}%" if base_sec and sec and arm != BASELINE else "n/a"
            rows.append([model, steps, arm, f"{best[0]['lr']:g}", ",".join(f"{lr:g}" for lr in lrs), len(best),
                         spread(finals), f"{len(reached)}/{len(best)}" if target is not None else "n/a",
                         spread_steps(reached) if reached else "never", step_speedup, wall_speedup, overhead,
                         downstream_cell(best)])  # fmt: skip
            parent = parent_of(arm)
            if parent:
                notes.append(_ablation_note(model, steps, arm, runs, parent, arms.get(parent, [])))
                continue
            if len(lrs) >= 3 and best[0]["lr"] in (lrs[0], lrs[-1]):
                notes.append(f"{model} ({steps} steps), {arm}: its best LR {best[0]['lr']:g} is at the edge of the "
                             f"sweep {','.join(f'{lr:g}' for lr in lrs)}, so the sweep may not bracket its optimum")  # fmt: skip
            if arm == BASELINE:
                continue
            notes.append(_conclusion(model, steps, arm, best, reached, target, step_speedup, wall_speedup))
        if not base:
            notes.append(f"{model} ({steps} steps): no baseline run yet, so nothing is compared")
    return HEADER, rows, notes + cpu_notes(entries)


def _conclusion(model, steps, arm, best, reached, target, step_speedup, wall_speedup) -> str:
    n, k = len(best), len(reached)
    head = f"{model} ({steps} steps), {arm} at lr {best[0]['lr']:g}"
    if target is None:
        return f"{head}: no baseline to compare with yet"
    finals = spread([e["final_val_loss"] for e in best])
    if n < 3:
        return (f"{head}: {n} seed(s) only, too few for a conclusion (the protocol asks for 3); so far it reached "
                f"the baseline's final loss {target:.4g} in {k}/{n}, final loss {finals}")  # fmt: skip
    if k == 0:
        return f"{head}: did not reach the baseline's final loss {target:.4g} in any of {n} seeds (final {finals})"
    speed = f"median step speedup {step_speedup:.2f}x" + (f", wall {wall_speedup:.2f}x" if wall_speedup else "")
    if k == n:
        verdict = "faster than the baseline" if step_speedup > 1 else "reached it, but not sooner than the baseline"
        return f"{head}: reached the baseline's final loss {target:.4g} in all {n} seeds, {speed}: {verdict}"
    return f"{head}: reached the baseline's final loss {target:.4g} in {k}/{n} seeds only ({speed} of those): mixed"


def same_cpu_loss(run: dict, cpu: str | None) -> float | None:
    """`run`'s final validation loss as trained on `cpu`: the stored run when it ran there, else its retrained copy
    (--downstream) when that ran there; None when neither did. Older entries without a CPU count as unknown."""
    if cpu is not None and run.get("cpu") == cpu:
        return run["final_val_loss"]
    again = run.get("downstream") or {}
    if cpu is not None and again.get("cpu") == cpu and "retrained_final_val_loss" in again:
        return again["retrained_final_val_loss"]
    return None


def _ablation_note(model: str, steps: int, arm: str, runs: list[dict], parent: str, parent_runs: list[dict]) -> str:
    """An ablation against its main arm, seed by seed at the same LR, on the same CPU where the results have that
    parent run from it (the same run on two CPUs can differ like two seeds: `cpu_notes`); the parent's seed spread at
    its best LR is the yardstick: a difference inside it is not told apart from seed noise."""
    head = f"{model} ({steps} steps), ablation {arm}"
    pairs = [(e, next((p for p in parent_runs if p["lr"] == e["lr"] and p["seed"] == e["seed"]), None)) for e in runs]
    pairs = [(e, p) for e, p in pairs if p is not None]
    if not pairs:
        return f"{head}: no {parent} run at the same LR and seed yet, so nothing is compared"
    bases = [same_cpu_loss(p, e.get("cpu")) for e, p in pairs]
    deltas = [e["final_val_loss"] - (p["final_val_loss"] if b is None else b) for (e, p), b in zip(pairs, bases)]
    at = ", ".join(f"lr {e['lr']:g} seed {e['seed']}" for e, _ in pairs)
    where = ("on the same CPU" if all(b is not None for b in bases) else
             "partly on other CPUs, whose runs differ like seeds" if any(b is not None for b in bases) else
             "on another or an unrecorded CPU, whose runs can differ like seeds")  # fmt: skip
    noise = [p["final_val_loss"] for p in at_best(parent_runs)]
    width = max(noise) - min(noise) if len(noise) >= 2 else None
    d = statistics.median(deltas)
    text = f"{head} vs {parent} ({at}, {where}): final loss {d:+.4f} nats/token"
    if width is None:
        return f"{text}; {parent} has one seed at its best LR, so there is no yardstick for noise yet"
    verdict = ("within" if abs(d) <= width else "beyond") + f" {parent}'s seed range ({width:.4f}, {len(noise)} seeds)"
    if abs(d) > width:
        verdict += ": " + ("worse" if d > 0 else "better")
    return f"{text}, {verdict}"


def cpu_notes(entries: list[dict]) -> list[str]:
    """One note per run trained again on another CPU (--downstream): how far the same run's final loss moved."""
    notes = []
    for e in entries:
        again = e.get("downstream") or {}
        if "retrained_final_val_loss" in again and e.get("cpu") and again.get("cpu") and again["cpu"] != e["cpu"]:
            moved = again["retrained_final_val_loss"] - e["final_val_loss"]
            notes.append(f"{e['model']} ({e['steps']} steps), {e['arm']} lr {e['lr']:g} seed {e['seed']}: final loss "
                         f"{e['final_val_loss']:.4f} on {e['cpu']}, {again['retrained_final_val_loss']:.4f} trained "
                         f"again on {again['cpu']} ({moved:+.4f}): one run, two CPUs; compare the seed spreads above")  # fmt: skip
    return notes


# ---------------------------------------------------------------------------------------------------------- plots
def plot(entries: list[dict], path: Path) -> list[Path]:
    """PATH.png (validation loss vs steps) and PATH_wall.png (vs seconds): one column per model and length, one line
    per main arm at its best LR (mean over seeds, shaded between the lowest and highest seed; the ablations are in
    the table and notes), and a second row zoomed into the second half of training. [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'vimtool[bench]'): no plot written", file=sys.stderr)
        return []
    groups = _groups(entries)
    written = []
    for suffix, xlabel in (("", "step"), ("_wall", "seconds (each run's median s/step x step)")):
        # top row: whole runs; bottom row: their second half, zoomed, where the arms' final losses part
        fig, axes = plt.subplots(2, len(groups), figsize=(5.2 * len(groups), 7.6), dpi=110, squeeze=False)
        for col, ((model, steps), arms) in enumerate(groups.items()):
            drawn = []  # (x, lowest seed, highest seed) of every point drawn in this panel
            # the main arms only (the ablations are in the table and notes), each in its own colour in every panel
            for color, arm in enumerate(MAIN_ARMS):
                runs = arms.get(arm)
                if not runs:
                    continue
                best = at_best(runs)
                curves = [dict(map(tuple, e["curve"])) for e in best]
                xs = sorted(set.intersection(*(set(c) for c in curves)))
                if not xs:
                    continue
                ys = [[c[x] for c in curves] for x in xs]
                scale = statistics.median(e["sec_per_step"] for e in best) if suffix else 1.0
                px = [x * scale for x in xs]
                mean = [statistics.fmean(v) for v in ys]
                label = f"{arm} (lr {best[0]['lr']:g}, {len(best)} seeds)"
                for ax in axes[:, col]:
                    (line,) = ax.plot(px, mean, label=label, color=f"C{color}")
                    ax.fill_between(px, [min(v) for v in ys], [max(v) for v in ys], color=line.get_color(), alpha=0.2)
                drawn += [(x, min(v), max(v)) for x, v in zip(px, ys)]
            top, zoom = axes[0, col], axes[1, col]
            top.set_title(f"{model}, {steps} steps", fontsize=10)
            zoom.set_title(f"{model}: second half, zoomed", fontsize=10)
            # the zoom starts at half the longest arm's end and fits every arm's points from there on
            start = max((x for x, _, _ in drawn), default=0.0) / 2
            tail = [(lo, hi) for x, lo, hi in drawn if x >= start]
            lo, hi = min((t[0] for t in tail), default=0.0), max((t[1] for t in tail), default=0.0)
            if lo < hi:
                zoom.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
                zoom.set_xlim(left=start)
            for ax in (top, zoom):
                ax.set_xlabel(xlabel)
                ax.set_ylabel("validation loss (nats/token)")
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        out = path.with_name(f"{path.stem}{suffix}.png")
        tmp = out.with_name(f".{out.stem}.tmp.png")  # a temporary name, then a rename: never a half-written PNG
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(out)
        written.append(out)
    return written
