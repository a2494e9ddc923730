"""Peak memory of the real `vimtool eval-fid` command against the number of images N it evaluates.

    python bench/bench_eval_memory.py                      # every row (CPU: about an hour of Inception passes)
    python bench/bench_eval_memory.py --rows big           # only the 50,000-image row (no pass: ~20 min)
    python bench/bench_eval_memory.py --smoke              # tiny sizes, no fid+sfid rows: 4 eval-fid runs (CI)

Each row runs `python -m vimtool eval-fid ...` in a fresh child process and reads that child's peak resident
set size (`ru_maxrss` from `os.wait4`, the kernel's high-water mark of the process, exact, no polling). Images
are procedural 32x32 colour fields written as ADM `.npz` batches (`arr_0`), upsampled to 299x299 by eval-fid's
resize (torch-bilinear). Weights: the real pt_inception file when it resolves, else the tests' seeded stand-in
weights of the same shapes (memory and speed do not depend on the values).

Rows (N = images in B, the generated set; A is the reference):
- `reference pass`: A alone (`--metrics is --save-stats --feature-cache`), which writes A's statistics and
  caches A's Inception outputs for the rows below (not a comparison row).
- `fid+sfid`: FID and sFID only, B streamed against A's saved statistics: nothing per image is kept, so the
  peak must not grow with N at all.
- `all metrics`: eval-fid's default suite (FID, sFID, IS, precision, recall, KID) against A's cached features.
  Precision, recall and KID need every pool_3 vector and IS every logit vector: N x (2048 + 1008) float32 are
  kept ("kept MB", both sets), so the peak may grow by those arrays and no more ("peak - kept").
- `all metrics, big N`: 50,000 images against a 10,000-image reference, the default suite. Their Inception
  outputs come from eval-fid's feature cache, pre-filled by this script with synthetic vectors of the real
  shapes under the keys eval-fid computes (a pass over 60,000 images takes ~2 hours on 2 CPU cores): the row
  measures everything eval-fid holds and computes at that N (loading 60,000 x 3056 floats, the six metrics,
  the protocol card) except the pass itself, whose memory the rows above show to be flat in N.
- `all metrics, real pass, large N` (optional, `--large N`): the default suite with a real pass over N images.

"x small N" is the peak over the same kind of row's peak at the smallest N (`all metrics` rows: over
`all metrics` at the small N); the goal for N = 2,000 against 250 is <= 1.10. "card" checks that protocol.json
was written with the expected counts. Writes bench/results/eval_memory.{json,md}; rows already in that file
and not re-run are kept (a run can be resumed row by row: `--rows`), and the data and the primed cache are kept
in `--work` between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # fid_fixtures: the stand-in weights when the real file is absent

from bench.harness import parser, setup, write_results  # noqa: E402
from vimtool.errors import VimtoolError  # noqa: E402
from vimtool.metrics import feature_cache  # noqa: E402
from vimtool.metrics.batches import write_image_batch  # noqa: E402
from vimtool.metrics.feature_cache import npz_identity  # noqa: E402
from vimtool.metrics.inception import FEATURE_DIM, NUM_CLASSES, SPATIAL_DIM, sha256_file  # noqa: E402
from vimtool.metrics.suite import RunningGaussian, SetFeatures  # noqa: E402
from vimtool.provenance import software_info  # noqa: E402

NAME = "eval_memory"
HEADER = ("row", "N (B)", "reference", "metrics", "pass", "peak RSS MB", "kept MB", "peak - kept MB",
          "x small N", "wall s", "card")  # fmt: skip
FULL = {"ref": 1000, "small": 250, "large": 2000, "big": 50_000, "big_ref": 10_000, "batch": 50}
SMOKE = {"ref": 8, "small": 4, "large": 16, "big": 64, "big_ref": 32, "batch": 4}
KEPT_PER_IMAGE = (FEATURE_DIM + NUM_CLASSES) * 4  # float32 pool_3 + logits


def procedural_images(n: int, seed: int, size: int = 32):
    """Smooth random colour fields (not white noise, so the Inception sees structure), 32x32 uint8."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        low = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
        img = np.kron(low, np.ones((size // 4, size // 4, 1), np.float32))
        yield np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def batch_file(work: Path, name: str, n: int, seed: int) -> Path:
    path = work / f"{name}_{n}.npz"
    if not path.is_file():  # written atomically: an interrupted run leaves no half file
        write_image_batch(path, procedural_images(n, seed), n)
    return path


def weights_file(work: Path) -> tuple[Path, str]:
    from vimtool.metrics.inception import resolve_inception_weights

    try:
        return resolve_inception_weights(download=False), "real"
    except VimtoolError:
        from fid_fixtures import write_weights

        path = work / "pt_inception-2015-12-05-6726825d.pth"
        if not path.is_file():
            write_weights(work, seed=0)
        return path, "seeded stand-in (tests/fid_fixtures.py)"


def synthetic_features(n: int, seed: int) -> SetFeatures:
    """What one Inception pass would give for n images, with random values of the real shapes and dtypes."""
    rng = np.random.default_rng(seed)
    pool = np.empty((n, FEATURE_DIM), np.float32)
    logits = np.empty((n, NUM_CLASSES), np.float32)
    gauss, spatial = RunningGaussian(FEATURE_DIM), RunningGaussian(SPATIAL_DIM)
    for i in range(0, n, 2000):
        m = min(2000, n - i)
        pool[i : i + m] = np.abs(rng.standard_normal((m, FEATURE_DIM), np.float32))  # post-ReLU average pool
        logits[i : i + m] = 3 * rng.standard_normal((m, NUM_CLASSES), np.float32)
        gauss.add(pool[i : i + m])
        spatial.add(np.abs(rng.standard_normal((m, SPATIAL_DIM), np.float32)))
    return SetFeatures(n, gauss.stats(), spatial.stats(), pool, logits, {"32x32": n})


def fill_cache(cache: Path, batch: Path, weights: Path, seed: int) -> None:
    """Put `batch`'s (synthetic) Inception outputs where `eval-fid --feature-cache` looks for them."""
    key = feature_cache.cache_key(npz_identity(sha256_file(batch), None), sha256_file(weights), "torch-bilinear", True)
    if not (cache / f"{key}.npz").is_file():
        feature_cache.save(cache, key, synthetic_features(int(batch.stem.rsplit("_", 1)[1]), seed))


def run_cli(args: list[str], threads: int) -> tuple[float, float, str]:
    """Run `python -m vimtool ARGS` as a child; (its peak RSS in MB, wall seconds, stderr tail)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO),
           "VIMTOOL_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}  # fmt: skip
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([sys.executable, "-m", "vimtool", *args], stdout=null, stderr=subprocess.PIPE,
                                env=env, cwd=REPO)  # fmt: skip
        err = proc.stderr.read().decode(errors="replace")  # EOF when the child exits
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss in KiB on Linux
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"eval-fid failed ({proc.returncode}): {' '.join(args)}\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, wall, err[-2000:]


def check_card(out: Path, counts: dict[str, int]) -> str:
    """'ok' when eval-fid wrote protocol.json and scores.json with the expected image counts, else what is wrong."""
    card, scores = out / "protocol.json", out / "scores.json"
    if not card.is_file() or not scores.is_file():
        return "missing"
    got = json.loads(scores.read_text())["counts"]
    wrong = {k: got.get(k) for k, v in counts.items() if got.get(k) != v}
    json.loads(card.read_text())  # readable JSON
    return "ok" if not wrong else f"counts {wrong}"


def main() -> None:
    p = parser(__doc__, threads=1)
    p.add_argument(
        "--rows", default="", help="comma list of: ref, fid, suite, big, large, none (default: all but large)"
    )
    p.add_argument("--large", type=int, default=0, help="also a real pass over this many images (row 'large')")
    p.add_argument("--merge", nargs="*", default=[], help="also keep the rows of these eval_memory.json files "
                   "(rows measured by runs with another --out; rows measured now replace them)")  # fmt: skip
    p.add_argument("--work", default="", help="folder for the image batches and caches (kept; default: a temp dir)")
    args = setup(p.parse_args())
    sizes = SMOKE if args.smoke else FULL
    wanted = {"ref", "suite", "big"} | ({"large"} if args.large else set()) | (set() if args.smoke else {"fid"})
    if args.rows:
        wanted = set(args.rows.split(",")) - {"none"}  # none: only re-render the rows kept or merged
    work = (
        Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / f"vimtool-eval-memory-{os.getuid()}"
    )
    if not wanted:  # --rows none: re-render the kept (and merged) rows only
        save(records_from(Path(args.out) / f"{NAME}.json", args), args, SMOKE if args.smoke else FULL)
        return
    work = work / ("smoke" if args.smoke else "full")
    work.mkdir(parents=True, exist_ok=True)
    weights, weights_kind = weights_file(work)
    common = ["--inception-weights", str(weights), "--batch-size", str(sizes["batch"]), "--device", "cpu"]
    records = records_from(Path(args.out) / f"{NAME}.json", args)

    def measure(rid, label, n, ref_desc, metrics, pass_desc, cli, counts, kept_images):
        out = work / "out" / rid
        shutil.rmtree(out, ignore_errors=True)
        peak, wall, err = run_cli(["eval-fid", *cli, "--out", str(out), *common], args.threads)
        kept = kept_images * KEPT_PER_IMAGE / 2**20
        records[rid] = {"id": rid, "label": label, "n": n, "reference": ref_desc, "metrics": metrics,
                        "pass": pass_desc, "peak_rss_mb": round(peak, 1), "kept_mb": round(kept, 1),
                        "wall_s": round(wall, 1), "card": check_card(out, counts), "weights": weights_kind,
                        "command": "vimtool eval-fid " + " ".join(cli), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                        "git_commit": software_info()["git_commit"]}  # fmt: skip
        print(f"{label}: N={n} peak {peak:.0f} MB, kept {kept:.0f} MB, {wall:.0f} s", file=sys.stderr, flush=True)
        save(records, args, sizes)

    ref = batch_file(work, "ref", sizes["ref"], seed=0)
    ref_stats, ref_cache = work / f"ref_{sizes['ref']}_stats.npz", work / "ref_cache"
    primed = ref_stats.is_file() and any(ref_cache.glob("*.npz"))
    if "ref" in wanted or (wanted & {"fid", "suite", "large"} and not primed):
        shutil.rmtree(ref_cache, ignore_errors=True)
        cli = [str(ref), "--metrics", "is", "--save-stats", str(ref_stats), "--feature-cache", str(ref_cache)]
        measure("ref", "reference pass", sizes["ref"], "-", "is (+ stats, cache)", "real", cli, {"A": sizes["ref"]},
                sizes["ref"])  # fmt: skip
    ref_desc = f"{sizes['ref']} (cached)"
    for tag, n in (("small", sizes["small"]), ("large", sizes["large"])):
        if "suite" in wanted:
            gen = batch_file(work, "gen", n, seed=1)
            cache = work / "cache" / f"all_{tag}"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(ref_cache, cache)  # A's outputs only: B is run through the Inception
            cli = [str(ref), str(gen), "--feature-cache", str(cache)]
            measure(f"all_{tag}", f"all metrics, {tag} N", n, ref_desc, "all", "real (B)", cli,
                    {"A": sizes["ref"], "B": n}, sizes["ref"] + n)  # fmt: skip
    if "big" in wanted:
        n, r = sizes["big"], sizes["big_ref"]
        big_ref, gen = batch_file(work, "ref", r, seed=2), batch_file(work, "gen", n, seed=3)
        cache = work / "cache" / "big"
        fill_cache(cache, big_ref, weights, seed=2)
        fill_cache(cache, gen, weights, seed=3)
        cli = [str(big_ref), str(gen), "--feature-cache", str(cache)]
        measure("big", "all metrics, big N", n, f"{r} (cached, synthetic)", "all", "none (cached, synthetic)",
                cli, {"A": r, "B": n}, r + n)  # fmt: skip
    for tag, n in (("small", sizes["small"]), ("large", sizes["large"])):
        if "fid" in wanted:
            gen = batch_file(work, "gen", n, seed=1)
            cli = [str(ref_stats), str(gen), "--metrics", "fid,sfid"]
            measure(f"fid_{tag}", f"fid+sfid, {tag} N", n, f"{sizes['ref']} (stats)", "fid,sfid", "real", cli,
                    {"B": n}, 0)  # fmt: skip
    if "large" in wanted and args.large:
        n = args.large
        gen = batch_file(work, "gen", n, seed=4)
        cache = work / "cache" / "large"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(ref_cache, cache)
        cli = [str(ref), str(gen), "--feature-cache", str(cache)]
        measure("real_large", "all metrics, real pass, large N", n, ref_desc, "all", "real (B)", cli,
                {"A": sizes["ref"], "B": n}, sizes["ref"] + n)  # fmt: skip
    save(records, args, sizes)


def records_from(results: Path, args) -> dict:
    """Rows measured before (resume: kept unless re-run now) and the rows of the --merge files."""
    records = {}
    if results.is_file() and not args.smoke:
        records = {r["id"]: r for r in json.loads(results.read_text()).get("records", [])}
    for other in args.merge:
        records.update({r["id"]: r for r in json.loads(Path(other).read_text()).get("records", [])})
    return records


ORDER = ("ref", "fid_small", "fid_large", "all_small", "all_large", "big", "real_large")


def save(records: dict, args, sizes: dict) -> None:
    """Write every measured row so far (each row as soon as it is measured, so a stopped run keeps its rows)."""
    recs = [records[k] for k in ORDER if k in records]
    base = {
        "fid": records.get("fid_small"),
        "all": records.get("all_small"),
        "big": records.get("all_small"),
        "real": records.get("all_small"),
    }
    rows, notes = [], []
    for r in recs:
        b = base.get(r["id"].split("_")[0])
        ratio = round(r["peak_rss_mb"] / b["peak_rss_mb"], 3) if b else None
        rows.append((r["label"], r["n"], r["reference"], r["metrics"], r["pass"], round(r["peak_rss_mb"]),
                     round(r["kept_mb"]), round(r["peak_rss_mb"] - r["kept_mb"]), ratio, r["wall_s"], r["card"]))  # fmt: skip
    for kind in ("fid", "all"):
        s, g = records.get(f"{kind}_small"), records.get(f"{kind}_large")
        if s and g:
            ratio = g["peak_rss_mb"] / s["peak_rss_mb"]
            verdict = "meets" if ratio <= 1.10 else "MISSES"
            notes.append(f"{kind}: peak at N={g['n']} / N={s['n']} = {ratio:.3f} ({verdict} the <= 1.10 goal)")
    big, large = records.get("big"), records.get("all_large")
    if big and large:
        growth = (big["peak_rss_mb"] - big["kept_mb"]) / (large["peak_rss_mb"] - large["kept_mb"])
        notes.append(f"big N: peak {big['peak_rss_mb']:.0f} MB = kept features {big['kept_mb']:.0f} MB + "
                     f"{big['peak_rss_mb'] - big['kept_mb']:.0f} MB ({growth:.2f}x the N={large['n']} row's "
                     "peak - kept, which includes the Inception pass that the big row skips)")  # fmt: skip
    notes.append("rows are measured one or a few at a time (--rows) and kept in this file between runs; the command "
                 "above is the last run's, each row's own eval-fid command and time are in the JSON's records")  # fmt: skip
    notes.append(f"weights: {recs[0]['weights'] if recs else '?'}; batch size {sizes['batch']}; "
                 f"{args.threads} torch thread(s) in each eval-fid child")  # fmt: skip
    write_results(NAME, HEADER, rows, args.out, extra={"records": recs, "notes": notes},
                  title="eval-fid peak memory (RSS high-water mark of the CLI process) against N")  # fmt: skip


if __name__ == "__main__":
    main()
