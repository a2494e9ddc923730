"""Options that several commands share, each declared once (flag, type, help), and how they become a config.

An option used by one command is declared in that command's signature; an option two or more commands take is an
`Annotated` alias here, so its flag and help read the same everywhere. The options every training command takes
are the fields of `TrainingOptions`; `training_command` adds them to a command's signature, so train-tokenizer,
train-lm, train-t2i and train-reranker list only what is their own.

Boolean options are flags (`--resume`, `--hub-private`), never `--resume true`; those typed `bool | None` keep
None for "not given", so a recipe's value survives unless the flag is on the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from vimtool.config import deep_merge, load_config, parse_set

T = TypeVar("T")

# --- recipe and overrides: every command that builds a config
ConfigPath = Annotated[
    str | None,
    typer.Option("--config", metavar="FILE", help="Recipe file (YAML/TOML/JSON), e.g. recipes/vim_mnist.yaml."),
]
SetItems = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override any setting (repeatable): --set train.eval_every=500 --set model.dropout=0.",
    ),
]

# --- shared by several commands
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N (default auto).")]
Seed = Annotated[
    int | None, typer.Option("--seed", help="Random seed (default 0): the same seed repeats the same random draws.")
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        envvar="VIMTOOL_THREADS",
        min=1,
        help="CPU threads for torch (default: torch's, one per core). On a busy or shared CPU, 1 can be many times faster.",
    ),
]

# --- training commands (the fields of TrainingOptions below)
OutDir = Annotated[
    str | None,
    typer.Option("--out-dir", metavar="DIR", help="Run folder (default runs/<task>: tokenizer, vim, t2i or reranker)."),
]
Resume = Annotated[
    bool | None, typer.Option("--resume/--no-resume", help="Continue from the run folder's latest checkpoint.")
]
Compile = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile", help="torch.compile the model (train.compile): for GPUs; little change on CPUs."
    ),
]
Trackers = Annotated[
    str | None,
    typer.Option("--trackers", metavar="NAMES", help="Comma list of experiment trackers: tensorboard, wandb."),
]
PushToHub = Annotated[
    str | None,
    typer.Option(
        "--push-to-hub",
        metavar="REPO_ID",
        help="Upload the final checkpoint to this Hugging Face Hub model repo (user/name); needs `hf auth login`.",
    ),
]
HubPrivate = Annotated[
    bool | None,
    typer.Option("--hub-private", help="Create the --push-to-hub repo private (default: the account's default)."),
]
NobleRank = Annotated[
    int | None, typer.Option("--noble-rank", help="NOBLE branch rank on the transformer linears (0 = off).")
]
NobleAct = Annotated[
    str | None,
    typer.Option("--noble-act", help="NOBLE activation (cosnet, cos, gelu, relu2, identity, ...)."),
]
NoblePlacement = Annotated[
    str | None,
    typer.Option("--noble-placement", help="NOBLE sites: all or a comma list of q,k,v,out,mlp_in,mlp_out."),
]
NoblePreset = Annotated[
    str | None,
    typer.Option(
        "--noble-preset",
        metavar="NAME",
        help="NOBLE settings by name (default paper): paper = as the paper describes (main weight N(0, 0.02), M's lr "
        "x (min(d_in,d_out)/r)^0.5); reference = what the authors' runs did (main weight N(0, 0.5/sqrt(d_in)), M at "
        "lr x1). One setting at a time overrides the preset: --set model.noble.KNOB=VALUE with KNOB main_init, "
        "mix_bias, lr_mult_down, lr_mult_up_power, lr_mult_mix_power, lr_mult_freq, lr_mult_phase "
        "(docs/PAPERS.md section 4).",
    ),
]


def recipe_config(cls: type[T], config_path: str | None, options: dict[str, Any], set_items: list[str] | None) -> T:
    """defaults <- recipe file <- command-line options (None = not given) <- `--set key=value`."""
    return load_config(cls, config_path, deep_merge(options, parse_set(set_items)))


@dataclass
class TrainingOptions:
    """What every training command takes besides its own options: run folder, resume, engine switches, Hub upload,
    NOBLE, recipe and overrides. `training_command` turns the fields into command-line options."""

    out_dir: OutDir = None
    resume: Resume = None
    compile_model: Compile = None
    seed: Seed = None
    trackers: Trackers = None
    push_to_hub: PushToHub = None
    hub_private: HubPrivate = None
    noble_rank: NobleRank = None
    noble_act: NobleAct = None
    noble_placement: NoblePlacement = None
    noble_preset: NoblePreset = None
    config_path: ConfigPath = None
    set_items: SetItems = None

    def config(self, cls: type[T], options: dict[str, Any]) -> T:
        """The run config `cls` from the command's own `options` plus these (the `train` and `model.noble` sections)."""
        from vimtool.nn.noble import noble_from_cli  # deferred: imports torch

        train = {
            "out_dir": self.out_dir,
            "resume": self.resume,
            "compile": self.compile_model,
            "seed": self.seed,
            "trackers": None if self.trackers is None else [t.strip() for t in self.trackers.split(",") if t.strip()],
            "push_to_hub": self.push_to_hub,
            "hub_private": self.hub_private,
        }
        noble = noble_from_cli(self.noble_rank, self.noble_act, self.noble_placement, self.noble_preset) or None
        shared = {"train": train, "model": {"noble": noble}}
        return recipe_config(cls, self.config_path, deep_merge(shared, options), self.set_items)


def training_command(command: Callable[..., None]) -> Callable[..., None]:
    """`command(<own options>, *, run: TrainingOptions)` -> a function Typer reads as taking the own options followed
    by every field of TrainingOptions; it packs those into `run` and calls `command`."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "run"
    ]
    hints = typing.get_type_hints(TrainingOptions, include_extras=True)
    fields = [f.name for f in dataclasses.fields(TrainingOptions)]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hints[name]) for name in fields
    ]

    def with_training_options(**kwargs: Any) -> None:
        run = TrainingOptions(**{name: kwargs.pop(name) for name in fields})
        command(**kwargs, run=run)

    with_training_options.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(with_training_options, attr, getattr(command, attr))
    return with_training_options
