"""Class-balanced sampling (`sample --per-class N`): a class's images depend on (seed, class, j) alone -- not on
the other classes asked, the batch size or the number of processes -- and `--npz` writes what eval-fid reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from launch import launch_two_processes
from PIL import Image
from typer.testing import CliRunner

from vimtool.commands import app
from vimtool.errors import VimtoolError
from vimtool.sampling import SampleConfig
from vimtool.sampling.command import sample
from vimtool.sampling.vim import CLASS_INDEX_STRIDE, sample_indices

runner = CliRunner()


def run(vim_world, out: Path, **settings) -> tuple[np.ndarray, np.ndarray, dict]:
    """One in-process `sample` run -> (tokens, labels, sampling.json)."""
    settings = {"seed": 3, "device": "cpu", **settings}
    sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), out=str(out), **settings))
    record = json.loads((out / "sampling.json").read_text())
    return np.load(out / "tokens.npy"), np.load(out / "labels.npy"), record


def test_per_class_numbering_is_by_class_id_and_the_old_one_is_kept():
    assert sample_indices([2, 0], 3, by_class=False).tolist() == [0, 1, 2, 3, 4, 5]  # --class 2 --class 0 -n 3
    s = CLASS_INDEX_STRIDE
    assert sample_indices([2, 0], 3, by_class=True).tolist() == [2 * s, 2 * s + 1, 2 * s + 2, 0, 1, 2]
    with pytest.raises(VimtoolError, match="class-conditional"):
        sample_indices([None], 3, by_class=True)


def test_a_class_gets_the_same_images_whatever_else_is_asked_and_the_batch_size(vim_world, tmp_path):
    every, every_labels, record = run(vim_world, tmp_path / "all", per_class=3, batch_size=4)
    assert every.shape == (9, 16) and every_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert record["numbering"] == "class id" and record["processes"] == 1
    assert [im["sample_index"] for im in record["images"]][3:6] == [CLASS_INDEX_STRIDE + j for j in range(3)]
    assert len(np.unique(every, axis=0)) > 3  # real sampling, not one sequence repeated

    batch8, _, _ = run(vim_world, tmp_path / "b8", per_class=3, batch_size=8)
    assert np.array_equal(batch8, every)

    only1, only1_labels, _ = run(vim_world, tmp_path / "one", per_class=3, classes=[1], batch_size=8)
    assert only1_labels.tolist() == [1, 1, 1] and np.array_equal(only1, every[3:6])
    # the same pixels too, file by file
    for a, b in zip(
        sorted((tmp_path / "one" / "images").iterdir()), sorted((tmp_path / "all" / "images").iterdir())[3:6]
    ):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))

    # fewer per class: the first images of the larger run (the numbering does not depend on N)
    two, _, _ = run(vim_world, tmp_path / "two", per_class=2, classes=[2, 1], batch_size=3)
    assert np.array_equal(two, np.concatenate([every[6:8], every[3:5]]))

    # the old numbering is by position in the request: --class 1 alone draws rows 0.. like class 0 does
    old, _, old_record = run(vim_world, tmp_path / "old", classes=[1], num_samples=3)
    assert old_record["numbering"] == "request order" and not np.array_equal(old, every[3:6])


def test_npz_is_the_adm_batch_eval_fid_reads(vim_world, tmp_path):
    from vimtool.metrics.eval_fid import EvalFidConfig, resolve_input

    npz = tmp_path / "batch" / "samples.npz"
    res = runner.invoke(app, ["sample", "-c", str(vim_world["ckpt"]), "--per-class", "2", "--classes", "2,0", "--npz", str(npz),
                         "--out", str(tmp_path / "s"), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    paths = res.stdout.strip().splitlines()
    assert len(paths) == 4 and all(p.endswith(".png") for p in paths)  # stdout stays image paths only
    with np.load(npz) as f:
        assert sorted(f.files) == ["arr_0", "arr_1"]
        arr, labels = f["arr_0"], f["arr_1"]
    assert arr.shape == (4, 16, 16, 3) and arr.dtype == np.uint8 and labels.tolist() == [2, 2, 0, 0]
    for image, path in zip(arr, paths):  # the PNGs' pixels exactly
        assert np.array_equal(image, np.asarray(Image.open(path).convert("RGB")))
    read = resolve_input(str(npz), "A", EvalFidConfig())
    assert read.kind == "npz-images" and read.count == 4 and next(iter(read.images)).shape == (16, 16, 3)
    assert json.loads((tmp_path / "s" / "sampling.json").read_text())["npz"] == str(npz)


def test_per_class_option_errors_are_clear(vim_world, tmp_path):
    res = runner.invoke(app, ["sample", "-c", str(vim_world["ckpt"]), "--per-class", "2", "-n", "3"])
    assert res.exit_code == 2 and "error: " in res.output and "drop -n" in res.output  # one line, not a traceback
    res = runner.invoke(app, ["sample", "-c", str(vim_world["ckpt"]), "--classes", "0,x", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "error: " in res.output and "separated by commas" in res.output
    with pytest.raises(VimtoolError, match="must end in .npz"):
        sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), per_class=1, npz=str(tmp_path / "x.npy")))
    with pytest.raises(VimtoolError, match=r"class id\(s\) \[5\] out of range"):
        sample(
            SampleConfig(checkpoint=str(vim_world["ckpt"]), per_class=1, classes=[5], out=str(tmp_path), device="cpu")
        )


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(vim_world, tmp_path):
    args = ["-c", str(vim_world["ckpt"]), "--per-class", "3", "--seed", "3", "--guidance-scale", "1.5"]
    res = launch_two_processes("-m", "vimtool", "sample", *args, "--batch-size", "2", "--device", "cpu",
                               "--out", str(tmp_path / "two"), "--npz", str(tmp_path / "two.npz"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(res.stdout.strip().splitlines()) == 9  # the main process alone prints the paths
    two = json.loads((tmp_path / "two" / "sampling.json").read_text())
    assert two["processes"] == 2

    one, labels, _ = run(vim_world, tmp_path / "one", per_class=3, guidance_scale=1.5, batch_size=8,
                         npz=str(tmp_path / "one.npz"))  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "two" / "tokens.npy"), one)
    assert np.array_equal(np.load(tmp_path / "two" / "labels.npy"), labels)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
