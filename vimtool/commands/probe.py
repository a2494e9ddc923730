"""probe: linear probes of a frozen VIM, block by block; prints the paths of probe.json and the heads."""

from __future__ import annotations

from typing import Annotated

import typer

from vimtool.commands.options import ConfigPath, Device, SetItems, recipe_config
from vimtool.pipes import emit_path


def probe_cmd(
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", "-c", help="The VIM checkpoint to probe (frozen).")
    ] = None,
    shards: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PATH", help="Labelled token shards to train the classifier on (paths, globs, folders, '-')."
        ),
    ] = None,
    val_shards: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH", help="Held-out labelled shards for top-1 (default: hold out 10% of --shards)."),
    ] = None,
    blocks: Annotated[
        list[int] | None,
        typer.Option("--block", metavar="N", help="Block to probe, 1-based (repeatable; default: every block)."),
    ] = None,
    baselines: Annotated[
        str | None,
        typer.Option(
            help="Comma list of baselines: pixels (decoded), tokens (bag of ids), raw_pixels (the original images; "
            "opt-in). Default pixels,tokens; '' for none."
        ),
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer folder for the pixel baseline, if moved.")] = None,
    device: Device = None,
    out: Annotated[
        str | None, typer.Option(metavar="DIR", help="Folder for probe.json and the heads (default probe).")
    ] = None,
    config_path: ConfigPath = None,
    set_items: SetItems = None,
) -> None:
    """Linear probe of a frozen VIM: top-1 per block (table on stderr, probe.json) and saved heads; prints the paths.

    The best block's head (head_best/) and the baselines' heads (head_pixels/, head_tokens/) can score samples:
    vimtool sample ... --classifier probe/head_pixels --acceptance 0.5.

    \b
    Example:
      vimtool probe -c runs/vim_mnist/final --shards shards/train --val-shards shards/val --out probe_mnist
    """
    from vimtool.probe import ProbeConfig, probe  # deferred: imports torch

    options = {
        "checkpoint": checkpoint,
        "shards": shards or None,
        "val_shards": val_shards or None,
        "blocks": blocks or None,
        "baselines": None if baselines is None else [b.strip() for b in baselines.split(",") if b.strip()],
        "tokenizer": tokenizer,
        "device": device,
        "out": out,
    }
    for path in probe(recipe_config(ProbeConfig, config_path, options, set_items)):
        emit_path(path)
