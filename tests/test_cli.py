"""CLI smoke tests: every registered command answers --help; errors are one line."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vimtool import __version__
from vimtool.cli import app

runner = CliRunner()


def _commands(typer_app, prefix=()):
    import typer.main

    group = typer.main.get_command(typer_app)
    out = []

    def walk(cmd, path):
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, c in sub.items():
                walk(c, path + (name,))
        else:
            out.append(path)

    walk(group, prefix)
    return out


def test_version_flag_prints_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert __version__ in res.stdout


@pytest.mark.parametrize("path", _commands(app))
def test_every_command_has_help(path):
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_python_dash_m_runs():
    res = subprocess.run([sys.executable, "-m", "vimtool", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and __version__ in res.stdout
