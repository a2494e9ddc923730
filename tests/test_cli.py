"""CLI smoke tests: every registered command answers --help with flags shown as flags; errors are one line; the
training commands share one set of engine options."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vimtool import __version__
from vimtool.commands import app

runner = CliRunner()
TRAINING_COMMANDS = ["train-tokenizer", "train-lm", "train-t2i", "train-reranker"]


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


@pytest.mark.parametrize("path", [(), *_commands(app)])
def test_every_command_has_help_with_flags_shown_as_flags(path):
    res = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output
    assert "<bool>" not in res.output  # a flag takes no value (Typer's Rich panels print `--resume <bool>`)


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_training_help_offers_the_hub_upload(command):
    res = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.strip().startswith("--")}
    assert "--push-to-hub" in lines and "REPO_ID" in lines["--push-to-hub"]
    assert "--hub-private" in lines and "<bool>" not in res.output


def test_python_dash_m_runs():
    res = subprocess.run([sys.executable, "-m", "vimtool", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and __version__ in res.stdout


def test_threads_option_and_env_var_set_torch_threads(tmp_path):
    # A subprocess, so the global thread setting of the test process stays untouched.
    code = (
        "import sys, torch; from vimtool.commands import main; sys.argv = ['vimtool', *sys.argv[1:]]\n"
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
        ("train-reranker", "vimtool.train.reranker", "train_reranker"),
    ],
)
def test_training_commands_share_the_engine_flags(monkeypatch, tmp_path, command, module, function):
    # the library function is replaced to capture the typed config the command built (nothing is trained)
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(module), function, lambda cfg: seen.append(cfg) or tmp_path)
    res = runner.invoke(app, [
        command, "--compile", "--resume", "--steps", "3", "--noble-rank", "8", "--noble-placement", "q,v",
        "--seed", "7", "--trackers", "tensorboard, wandb", "--out-dir", str(tmp_path / "run"),
        "--push-to-hub", "user/repo", "--hub-private",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg, train = seen[0], seen[0].train
    assert (train.compile, train.resume, train.steps, train.seed) == (True, True, 3, 7)
    assert train.trackers == ["tensorboard", "wandb"] and train.out_dir == str(tmp_path / "run")
    assert (train.push_to_hub, train.hub_private) == ("user/repo", True)
    assert cfg.model["noble"] == {"rank": 8, "placement": ["q", "v"]}
    res = runner.invoke(app, [command])
    assert res.exit_code == 0
    train = seen[1].train
    assert train.compile is False and train.resume is False  # off unless asked
    assert (train.push_to_hub, train.hub_private) == (None, None)  # no upload; visibility left to the Hub


def test_a_recipe_value_survives_when_the_flag_is_not_given(monkeypatch, tmp_path):
    import vimtool.train.lm

    seen = []
    monkeypatch.setattr(vimtool.train.lm, "train_lm", lambda cfg: seen.append(cfg) or tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  resume: true\n  hub_private: true\n  push_to_hub: me/vim\n")
    assert runner.invoke(app, ["train-lm", "--config", str(recipe)]).exit_code == 0
    assert runner.invoke(app, ["train-lm", "--config", str(recipe), "--no-resume"]).exit_code == 0
    assert (seen[0].train.resume, seen[0].train.hub_private, seen[0].train.push_to_hub) == (True, True, "me/vim")
    assert seen[1].train.resume is False and seen[1].train.hub_private is True


def test_the_entry_point_destroys_a_process_group_before_exit():
    # A process that exits with a live gloo group can abort while gloo's threads are torn down (SIGABRT after a
    # run that did all its work: seen in CI under `accelerate launch`). A subprocess with a real 1-rank gloo group:
    # the command runs, then main() must have destroyed the group before exiting with the command's code.
    code = (
        "import sys, atexit, torch.distributed as dist\n"
        "dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)\n"
        "atexit.register(lambda: print('GROUP ALIVE AT EXIT', dist.is_initialized()))\n"
        "from vimtool.commands import main; sys.argv = ['vimtool', *sys.argv[1:]]; main()"
    )
    for args, rc in ((["--version"], 0), (["sample", "--top-k", "many"], 2)):
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == rc and "GROUP ALIVE AT EXIT False" in res.stdout, res.stdout + res.stderr
