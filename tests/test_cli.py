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


def test_threads_option_and_env_var_set_torch_threads(tmp_path):
    # A subprocess, so the global thread setting of the test process stays untouched.
    code = (
        "import sys, torch; from vimtool.cli import main; sys.argv = ['vimtool', *sys.argv[1:]]\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "print('THREADS', torch.get_num_threads())"
    )
    out = tmp_path / "preview.png"
    for args, env in (["--threads", "1"], {}), ([], {"VIMTOOL_THREADS": "1"}):
        res = subprocess.run(
            [sys.executable, "-c", code, *args, "data", "preview", "--data", "shapes", "--n", "4", "--out", str(out)],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, **env},
            timeout=120,
        )
        assert "THREADS 1" in res.stdout, res.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "vimtool", "--threads", "0", "data", "preview"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--threads" in bad.stderr


@pytest.mark.parametrize("args", [["train-lm", "--bogus"], ["sample", "--top-k", "many"], ["no-such-command"]])
def test_usage_errors_are_short_messages_not_tracebacks(args):
    res = subprocess.run([sys.executable, "-m", "vimtool", *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "Error" in res.stderr, res.stderr


@pytest.mark.parametrize(
    "command, module, function",
    [
        ("train-tokenizer", "vimtool.train.tokenizer", "train_tokenizer"),
        ("train-lm", "vimtool.train.lm", "train_lm"),
        ("train-t2i", "vimtool.train.t2i", "train_t2i"),
    ],
)
def test_training_commands_share_the_engine_flags(monkeypatch, tmp_path, command, module, function):
    # the library function is replaced to capture the typed config the command built (nothing is trained)
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(module), function, lambda cfg: seen.append(cfg) or tmp_path)
    res = runner.invoke(app, [command, "--compile", "--resume", "--steps", "3", "--noble-rank", "8"])
    assert res.exit_code == 0, res.output
    train = seen[0].train
    assert (train.compile, train.resume, train.steps) == (True, True, 3)
    res = runner.invoke(app, [command])
    assert res.exit_code == 0 and seen[1].train.compile is False  # off unless asked
