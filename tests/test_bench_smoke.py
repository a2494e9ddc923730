"""Every benchmark and study in bench/ runs at its smoke size and writes a results file with sane numbers; the
committed docs/BENCHMARKS.md is exactly what bench/make_docs.py generates from the committed results.

The scripts are discovered by glob (bench/bench_*.py, bench/studies/*.py with a __main__), run in parallel
(seconds each) with `--smoke --out TMP`, and their smoke_*.json records are checked against EXPECTED: the rows
that must be there and the columns whose every number must be positive and finite. A new script without an entry
in EXPECTED fails here, so a benchmark cannot join bench/ untested. Speed targets are never asserted (the CI
machine is shared and noisy); bench/ prints the numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def discover() -> list[Path]:
    scripts = sorted(BENCH.glob("bench_*.py")) + sorted((BENCH / "studies").glob("*.py"))
    return [p for p in scripts if 'if __name__ == "__main__"' in p.read_text()]


def script_id(path: Path) -> str:
    return path.relative_to(BENCH).with_suffix("").as_posix()


# script -> {results name (without smoke_): (first-column values that must be among the rows, or a row count;
#            columns whose numbers must be positive and finite)}
EXPECTED: dict[str, dict[str, tuple[set[str] | int, list[str]]]] = {
    "bench_data": {"data": ({"shapes render 32px", "shard write (zstd)", "shard read TokenShardReader"},
                            ["rate (median)", "rate (best)"])},
    "bench_data_pipeline": {"data_pipeline": ({"naive PIL loop, 64px", "ImageDataset, draft, 64px"},
                                              ["images/s (median)", "images/s (best)", "x naive"])},
    "bench_decode": {"decode_kernels": ({"qkv", "attn out", "mlp in", "mlp out", "head"}, ["F.linear us"]),
                     "decode_step": ({"VIM", "Parti"}, ["tok/s", "ms/step"]),
                     "decode_precision": ({"fp32", "bf16", "int8"},
                                          ["tokens_per_s", "ratio_vs_fp32", "roofline_fraction", "quality"])},
    "bench_engine": {"engine": ({"bare PyTorch", "vimtool engine"}, ["CPU ms/step", "wall ms/step"])},
    "bench_eval_memory": {"eval_memory": ({"reference pass", "all metrics, small N", "all metrics, large N",
                                           "all metrics, big N"}, ["peak RSS MB", "wall s"])},
    "bench_eval_suite": {"eval_suite": ({"fid", "fid,sfid,is,precision,recall,kid"}, ["img/s pass", "RSS peak MB"])},
    "bench_fid": {"fid": ({"mnist 28x28 png", "photos 256x256 jpg"}, ["seconds", "images/s"])},
    "bench_malloc": {"malloc": (2, ["step ms", "peak RSS MB"])},
    "bench_memory": {"memory": ({"ddp", "ddp + activation ckpt", "fsdp", "fsdp + activation ckpt"},
                                ["parameters per process", "state MB", "peak RSS MB"])},
    "bench_paper_shapes": {"paper_shapes": ({"tokenizer SS"}, ["parameters", "s/step", "peak measured MB"])},
    "bench_peers": {"peers_sampling": ({"16", "64"}, ["vimtool Parti tok/s", "vimtool VIM tok/s"]),
                    "peers_training": ({"vimtool Parti", "vimtool VIM"}, ["step ms", "tokens/s", "GFLOP/s"])},
    "bench_plan": {"plan_check": ({"vim d64 x2"}, ["parameters", "FLOPs measured", "peak measured MB"])},
    "bench_sample": {"sample": ({"vim", "parti"}, ["KV cache tok/s", "no cache tok/s"])},
    "bench_scaling": {"scaling": ({"sampling s/image", "tokenize-dataset s"}, ["seconds (cached)"])},
    "bench_tokenizer": {"tokenizer": ({"tiny 32x32"}, ["encode img/s", "decode img/s", "end to end img/s"]),
                        "tokenizer_train_step": ({"tanh GELU, NCHW refiner (before)", "erf GELU, channels-last refiner"},
                                                 ["ms per step", "time ratio"])},
    "bench_transformer": {"transformer": ({"fp32"}, ["tok/s", "GFLOP/s"]),
                          "train_mfu": ({"fp32"}, ["tokens_per_s", "mfu", "matmul_gflops"])},
    "studies/codebook_drift": {"codebook_drift_shapes_init2": ({"shapes"}, ["codes used (64 img)"])},
    "studies/guidance": {"guidance": ({"seen", "held out"}, ["n prompts", "samples each"])},
    "studies/noble": {"noble_study": ({"vim"}, ["steps", "seeds", "final val loss", "step speedup"])},
    "studies/probe": {"probe": ({"block 1", "block 2", "raw pixels", "raw tokens", "picked on train"}, [])},
    "studies/probe_kfold": {"probe_kfold": ({"0", "pooled"}, ["held out", "block 1", "raw pixels"])},
    "studies/tokenizer_lookup": {"tokenizer_lookup": (2, ["perplexity", "PSNR dB"])},
}  # fmt: skip

SCRIPTS = discover()


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every discovered script at --smoke, a few at a time (each is seconds; together well under a minute)."""
    root = tmp_path_factory.mktemp("bench_smoke")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def run(script: Path):
        out = root / script_id(script).replace("/", "_")
        res = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)], capture_output=True,
                             text=True, env=env, cwd=root, timeout=300)  # fmt: skip
        return script_id(script), (res, out)

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        return dict(pool.map(run, SCRIPTS))


def number(cell) -> float | None:
    """A table cell as a number: its first word ('12.5%', '3.1x', '4232 / 4298', '5.64 [5.6, 5.7]' count too);
    None for text, blanks and n/a."""
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, int | float):
        return float(cell)
    words = str(cell).split()
    text = words[0].rstrip("%x").replace(",", "") if words else ""
    try:
        return float(text)
    except ValueError:
        return None


def test_every_discovered_script_has_expectations():
    found = {script_id(p) for p in SCRIPTS}
    assert len(found) >= 10, found  # the glob finds the benchmarks and studies
    assert found == set(EXPECTED), f"add or remove EXPECTED entries: {found ^ set(EXPECTED)}"


@pytest.mark.parametrize("name", [script_id(p) for p in SCRIPTS])
def test_smoke_run_writes_results_with_positive_finite_numbers(name, smoke_runs):
    res, out = smoke_runs[name]
    assert res.returncode == 0, res.stderr[-3000:]
    for results, (rows_expected, positive) in EXPECTED[name].items():
        path = out / f"smoke_{results}.json"
        assert path.is_file(), f"{name} wrote {sorted(p.name for p in out.glob('*'))}, not {path.name}"
        record = json.loads(path.read_text())
        assert record["smoke"] is True and record["command"].startswith("python bench/")
        assert record["machine"]["threads"] >= 1 and record["machine"]["torch"]
        header, rows = record["header"], record["rows"]
        assert rows and all(len(r) == len(header) for r in rows), rows
        first = {str(r[0]) for r in rows}
        if isinstance(rows_expected, int):
            assert len(rows) == rows_expected, rows
        else:
            assert rows_expected <= first, f"{results}: rows {sorted(first)} lack {sorted(rows_expected - first)}"
        for column in positive:
            values = [number(r[header.index(column)]) for r in rows]
            numbers = [v for v in values if v is not None]
            assert numbers, f"{results}: no numbers in column {column!r}"
            assert all(math.isfinite(v) and v > 0 for v in numbers), f"{results}: {column} = {values}"


def test_sampling_with_and_without_cache_gives_the_same_tokens(smoke_runs):
    res, out = smoke_runs["bench_sample"]
    record = json.loads((out / "smoke_sample.json").read_text())
    assert all(r[record["header"].index("same ids")] is True for r in record["rows"])


def test_docs_are_generated_from_the_committed_results(tmp_path, monkeypatch):
    """docs/BENCHMARKS.md == bench/make_docs.py's rendering of bench/docs_template.md and the results files."""
    sys.path.insert(0, str(REPO))
    from bench import make_docs

    text = make_docs.render(make_docs.TEMPLATE.read_text(encoding="utf-8"))
    generated = tmp_path / "BENCHMARKS.md"
    generated.write_text(text, encoding="utf-8")
    committed = (REPO / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert committed == generated.read_text(encoding="utf-8"), "run `python bench/make_docs.py` and commit the docs"


def test_docs_quote_every_results_file_and_nothing_else():
    """Each committed results JSON has a table in the docs (no orphans), and the docs name no missing file."""
    template = (BENCH / "docs_template.md").read_text(encoding="utf-8")
    results = [p for p in BENCH.glob("**/results/**/*.json") if not p.name.startswith("smoke_")]
    quoted = {p for p in results if "{{ " + p.relative_to(BENCH).with_suffix("").as_posix() in template}
    assert results and set(results) == quoted, sorted(str(p) for p in set(results) - quoted)


def test_two_studies_asking_for_one_cached_tokenizer_at_once_both_get_it(tmp_path):
    """The smoke runs above run studies side by side over one cache (runs/bench/smoke): the second process asking
    for the same tokenizer must wait for the first's build and reuse it, not collide with its run lock."""
    code = ("import sys; from pathlib import Path; from bench.studies import fixtures as fx; fx.quiet(); "
            "print(fx.tokenizer('mnist5k', 2, Path(sys.argv[1])))")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    paths = {Path(out.strip().splitlines()[-1]).resolve() for out, _ in outs}  # `final` links to the last step
    assert paths == {(tmp_path / "tok_mnist5k_2" / "final").resolve()}
    assert len(list((tmp_path / "tok_mnist5k_2" / "checkpoints").iterdir())) == 1  # one build, not two


@pytest.mark.parametrize(("flags", "tier"), [("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "AMX"),
                                             ("avx2 avx512f avx512_bf16 avx512_vnni", "AVX512-BF16"),
                                             ("avx2 avx512f avx512bw", "AVX-512"), ("sse4_2 avx avx2 fma", "AVX2"),
                                             ("sse4_2", "")])  # fmt: skip
def test_results_name_the_cpus_widest_matmul_instructions(tmp_path, flags, tier):
    """'AMD EPYC' is Zen 3 (AVX2 only) on one machine and Zen 4 (AVX512-BF16) on the next: the machine line says
    which, read from the flags line of /proc/cpuinfo."""
    from bench.harness import cpu_isa

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n", encoding="utf-8")
    assert cpu_isa(cpuinfo) == tier
    assert cpu_isa(tmp_path / "missing") == ""


def test_quickstart_grading_counts_held_out_picks_per_colour_and_shape(tmp_path):
    """bench/quickstart_runs.py's per-pair count reads a sampling.json as `vimtool sample` writes it: the pick is
    the rank-0 image, "any" a prompt with a passing sample, "samples" the mean pass share per prompt."""
    from bench.quickstart_runs import picks_by_pair

    prompts = ["there is a small green square in the top left", "a large green square", "a blue circle"]
    checks = {0: [0.0, 1.0], 1: [1.0, 1.0], 2: [0.0, 0.0]}  # per prompt, in rank order
    images = [{"prompt_index": i, "rank": r, "check": c} for i, cs in checks.items() for r, c in enumerate(cs)]
    folder = tmp_path / "samples" / "heldout_guided"
    folder.mkdir(parents=True)
    (folder / "sampling.json").write_text(json.dumps({"prompts": prompts, "images": images[::-1]}), encoding="utf-8")
    assert picks_by_pair(tmp_path) == {
        "blue circle": {"prompts": 1, "picked": 0, "any": 0, "samples": 0.0},
        "green square": {"prompts": 2, "picked": 1, "any": 2, "samples": 0.75},
    }
