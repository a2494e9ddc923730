"""`vimtool data preview`: writes a grid PNG, prints only its path; bad specs are one-line errors."""

import subprocess
import sys

from PIL import Image
from typer.testing import CliRunner

from vimtool.commands import app

runner = CliRunner()


def test_preview_writes_a_png_and_prints_only_its_path(tmp_path):
    out = tmp_path / "grid.png"
    res = runner.invoke(
        app, ["data", "preview", "--data", "shapes:size=32", "--n", "6", "--size", "32", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines() == [str(out)]
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] == 3 * (96 + 2) + 2  # 3 columns of 32-px cells shown at 96 px


def test_preview_of_labelled_mnist5k_via_set_override(tmp_path):
    out = tmp_path / "digits.png"
    res = runner.invoke(
        app, ["data", "preview", "--set", "data=mnist5k", "--set", "n=4", "--size", "28", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] == 2 * (112 + 2) + 2


def test_preview_unknown_dataset_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vimtool", "data", "preview", "--data", "no-such-set", "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().startswith("error: unknown dataset 'no-such-set'")
    assert len(proc.stderr.strip().splitlines()) == 1
