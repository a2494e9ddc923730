"""Full runs of the quickstart (recipes/quickstart.sh), one entry each in bench/results/quickstart.json.

    python bench/quickstart_runs.py --seed 1                  # run the quickstart with QS_SEED=1, grade, append
    python bench/quickstart_runs.py --seed 1 --existing DIR   # grade a finished run of that seed in DIR, append

Each entry: the seed, the wall and CPU seconds of `bash recipes/quickstart.sh` (CPU: user + system of every process
it started; the machine's other load inflates wall time, not CPU time), the checker pass rate of the reranked best
sample (seen / held-out prompts, guided and unguided) and of all samples, the tokenizer's reconstruction adherence
(the share of reconstructions of `--recon-images` val images, and of as many held-out images, that the shapes
checker still reads as their caption: the ceiling of anything decoded by that tokenizer) and the git commit.
The table (one row per run) goes into docs/BENCHMARKS.md through bench/make_docs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout: python bench/X.py

from bench.harness import REPO, RESULTS, cpu_label, machine, markdown  # noqa: E402
from vimtool.atomic import write_json, write_text  # noqa: E402

SCRIPT = REPO / "recipes" / "quickstart.sh"
HEADER = ["seed", "CPU", "wall min", "CPU min", "seen guided", "held-out guided", "seen unguided", "held-out unguided",
          "seen guided, all samples", "held-out guided, all samples", "tokenizer recon (val / held-out)",
          "held-out guided picks per pair", "git"]  # fmt: skip


RECIPE_FILES = ("quickstart.sh", "parti_shapes_tokenizer.yaml", "reranker_shapes.yaml", "parti_shapes.yaml")


def recipe_id() -> str:
    """A short hash of what the quickstart runs (the script and its three recipes, comments and blank lines left
    out): the table shows only the runs of the current version; earlier ones stay in the JSON's runs list."""
    import hashlib
    import re

    h = hashlib.sha1()
    for name in RECIPE_FILES:
        for line in (SCRIPT.parent / name).read_text(encoding="utf-8").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
            if line:
                h.update(line.encode() + b"\n")
    return h.hexdigest()[:12]


def _script_value(name: str) -> str:
    """A `NAME="${QS_...:-DEFAULT}"` default of the quickstart script (the data spec and the hold-out)."""
    import re

    text = SCRIPT.read_text(encoding="utf-8")
    m = re.search(rf'^{name}="([^"]*)"', text, flags=re.M)
    if not m:
        raise SystemExit(f"{SCRIPT}: no {name}= line")
    v = m.group(1)
    w = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", v)
    return w.group(1) if w else v


def recon_adherence(tokenizer: Path, split: str, n: int) -> tuple[float, dict[str, float]]:
    """Share of `n` reconstructions of `split` images the shapes checker passes, overall and per size + shape."""
    import torch

    from vimtool.checkpoint import load_model
    from vimtool.data import ImageDataset
    from vimtool.data.shapes import ShapesSource, check
    from vimtool.data.transforms import to_pil

    holdout = _script_value("HOLDOUT")
    size = int(_script_value("DATA").split("size=")[1].split(",")[0])
    src = ShapesSource(split, size=size, objects="1", n=n, holdout=holdout)
    images = ImageDataset(src, size, train=False)
    model = load_model(tokenizer).eval()
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with torch.no_grad():
        for start in range(0, n, 64):
            idx = range(start, min(n, start + 64))
            x = torch.stack([images[i]["image"] for i in idx])
            recon, _ = model(x)
            for i, r in zip(idx, recon.float().clamp(-1, 1)):
                scene = src.scene(i)
                ok = check(to_pil(r), scene.caption).ok
                o = scene.objects[0]
                for key in ("all", f"{o.size} {o.shape}"):
                    per[key][0] += ok
                    per[key][1] += 1
    rates = {k: a / b for k, (a, b) in sorted(per.items())}
    return rates.pop("all"), rates


def picks_by_pair(run_dir: Path, group: str = "heldout_guided") -> dict[str, dict[str, float]]:
    """Per colour + shape of the prompts of one sample group: prompts, prompts whose reranked pick passes, prompts
    with any passing sample, and the share of all samples passing. On held-out prompts one pair (green squares) has
    decided the score: its picks ranged 4-26 of 44 where the other pairs' stayed near their prompt counts."""
    from vimtool.data.shapes.grammar import parse_caption

    rec = json.loads((run_dir / "samples" / group / "sampling.json").read_text())
    by_prompt: dict[int, list[dict]] = defaultdict(list)
    for image in rec["images"]:
        by_prompt[image["prompt_index"]].append(image)
    out: dict[str, dict[str, float]] = {}
    for i, prompt in enumerate(rec["prompts"]):
        o = parse_caption(prompt).objects[0]
        row = out.setdefault(f"{o.colour} {o.shape}", {"prompts": 0, "picked": 0, "any": 0, "samples": 0.0})
        images = by_prompt[i]
        passed = [im["check"] >= 1 for im in images]
        row["prompts"] += 1
        row["picked"] += passed[min(range(len(images)), key=lambda k: images[k]["rank"])]
        row["any"] += any(passed)
        row["samples"] += sum(passed) / len(passed)
    for row in out.values():
        row["samples"] /= row["prompts"]
    return dict(sorted(out.items()))


def git_sha() -> str:
    out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True)
    # what decides a run: the library and the recipes (docs edited while the runs were graded do not count)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "vimtool", "recipes"],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()  # fmt: skip
    return out.stdout.strip() + ("+uncommitted" if dirty else "")


def grade(out: Path) -> dict[str, float]:
    res = {}
    for group in ("seen", "heldout"):
        for mode in ("guided", "unguided"):
            rec = json.loads((out / "samples" / f"{group}_{mode}" / "sampling.json").read_text())
            res[f"{group}_{mode}_reranked"] = rec["adherence"]["reranked_best"]
            res[f"{group}_{mode}_all"] = rec["adherence"]["all_samples"]
    return res


def save(path: Path, runs: list[dict], recipe: str, recon_images: int, m: dict) -> None:
    """quickstart.json (every run) and its table (the runs of recipe version `recipe`), written atomically."""
    current = [r for r in runs if r.get("recipe") == recipe]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    rows = [
        [r["seed"], r.get("cpu", "n/a"), "n/a" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f}"
         + ("" if r.get("install_s") is None else f" + {r['install_s'] / 60:.1f} install"),
         "n/a" if r.get("cpu_s") is None else f"{r['cpu_s'] / 60:.1f}",
         pct(r["seen_guided_reranked"]), pct(r["heldout_guided_reranked"]), pct(r["seen_unguided"]),
         pct(r["heldout_unguided"]), pct(r["seen_guided"]), pct(r["heldout_guided"]),
         f"{pct(r['tokenizer_recon_adherence'])} / {pct(r['tokenizer_recon_adherence_heldout'])}",
         ", ".join(f"{k} {v['picked']}/{v['prompts']}" for k, v in r["heldout_guided_by_pair"].items())
         if "heldout_guided_by_pair" in r else "n/a", r["git_sha"]]
        for r in current
    ]  # fmt: skip
    record = {
        "title": "Quickstart full runs (`bash recipes/quickstart.sh`, QS_SEED = seed): checker pass rate of the "
        "reranked best of 16 samples on 128 seen and 128 held-out prompts; 'all samples' = of every sample",
        "command": "python bench/quickstart_runs.py --seed N",
        "machine": m,
        "header": HEADER,
        "rows": rows,
        "smoke": False,
        "notes": [
            "wall: on the shared 2-core machine (other jobs running: wall > CPU); CPU: user + system seconds of "
            "every process the script started",
            f"tokenizer recon: share of reconstructions of {recon_images} val / held-out images the shapes "
            "checker still reads as their caption",
            "held-out guided picks per pair: prompts of each held-out colour + shape whose reranked pick passes / "
            "prompts (n/a: graded before the count existed)",
            f"rows: the runs of the current recipe version ({recipe}, a hash of the script and its three "
            f"recipes); the {len(runs) - len(current)} runs of earlier versions stay in this file's runs list",
        ],
        "runs": runs,
    }
    write_json(path, record)
    write_text(path.with_suffix(".md"), markdown(record))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True, help="QS_SEED of the run (training and sampling seed)")
    ap.add_argument("--run-dir", default=None, help="quickstart output folder (default runs/quickstart_seedN)")
    ap.add_argument("--existing", action="store_true", help="grade a finished run in --run-dir; do not run it")
    ap.add_argument("--wall-s", type=float, default=None, help="with --existing: the run's wall seconds")
    ap.add_argument("--cpu-s", type=float, default=None, help="with --existing: the run's CPU seconds")
    ap.add_argument(
        "--install-s",
        type=float,
        default=None,
        help="seconds the fresh clone's install took before the run (`pip install ...`), recorded beside wall_s",
    )
    ap.add_argument("--git-sha", default=None, help="with --existing: the commit the run was made with (default HEAD)")
    ap.add_argument("--recon-images", type=int, default=768, help="images per split for the tokenizer's adherence")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default bench/results)")
    args = ap.parse_args()
    run_dir = Path(args.run_dir or f"runs/quickstart_seed{args.seed}")
    sha = args.git_sha if args.existing and args.git_sha else git_sha()
    wall, cpu = args.wall_s, args.cpu_s
    if not args.existing:
        env = {**os.environ, "QS_SEED": str(args.seed)}
        # bash reads a script as it runs it: a copy (with the recipes it reads) keeps an edit of the checkout's
        # script during the run from breaking the run
        with tempfile.TemporaryDirectory(prefix="quickstart_") as tmp:
            recipes = shutil.copytree(SCRIPT.parent, Path(tmp) / "recipes")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(["bash", str(recipes / SCRIPT.name), str(run_dir)], env=env, check=True)
            wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    scores = grade(run_dir)
    tok = run_dir / "tokenizer" / "final"
    recon, recon_by = recon_adherence(tok, "val", args.recon_images)
    recon_ho, recon_ho_by = recon_adherence(tok, "holdout", args.recon_images)
    m = machine()
    entry = {
        "seed": args.seed,
        "recipe": recipe_id(),
        "cpu": cpu_label(m),
        "wall_s": None if wall is None else round(wall, 1),
        "cpu_s": None if cpu is None else round(cpu, 1),
        **({} if args.install_s is None else {"install_s": round(args.install_s, 1)}),
        "seen_guided_reranked": scores["seen_guided_reranked"],
        "heldout_guided_reranked": scores["heldout_guided_reranked"],
        "seen_guided": scores["seen_guided_all"],
        "heldout_guided": scores["heldout_guided_all"],
        "seen_unguided": scores["seen_unguided_reranked"],
        "heldout_unguided": scores["heldout_unguided_reranked"],
        "seen_unguided_all": scores["seen_unguided_all"],
        "heldout_guided_by_pair": picks_by_pair(run_dir),
        "heldout_unguided_all": scores["heldout_unguided_all"],
        "tokenizer_recon_adherence": recon,
        "tokenizer_recon_adherence_heldout": recon_ho,
        "tokenizer_recon_by_shape": {"val": recon_by, "heldout": recon_ho_by},
        "recon_images": args.recon_images,
        "load_1m": os.getloadavg()[0],
        "git_sha": sha,
    }
    path = Path(args.out) / "quickstart.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    save(path, [*runs, entry], entry["recipe"], args.recon_images, m)
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
