"""`vimtool data ...`: look at data before training on it."""

from __future__ import annotations

from typing import Annotated

import typer

from vimtool.commands.options import ConfigPath, SetItems, recipe_config
from vimtool.pipes import emit_path


def data_preview_cmd(
    data: Annotated[
        str | None,
        typer.Option(
            help="Data spec: shapes[:size=32,...], mnist5k, mnist, cifar10, user/name[:split], an image folder or "
            ".parquet files [shapes]."
        ),
    ] = None,
    out: Annotated[str | None, typer.Option(metavar="FILE", help="PNG to write [preview.png].")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of images [64].")] = None,
    size: Annotated[int | None, typer.Option(help="Resize + center-crop each image to SIZE [64].")] = None,
    split: Annotated[str | None, typer.Option(help="train, val, all (shapes also: holdout) [train].")] = None,
    strict: Annotated[
        bool | None,
        typer.Option("--strict/--no-strict", help="Fail on the first corrupt image instead of skipping it."),
    ] = None,
    config_path: ConfigPath = None,
    set_items: SetItems = None,
) -> None:
    """Write a PNG grid of examples with their captions or labels, to look at data before training.

    \b
    Example:
      vimtool data preview --data shapes:size=32 --n 36 --out shapes.png
    """
    from vimtool.data.preview import PreviewConfig, preview  # deferred: imports torch

    options = {"data": data, "out": out, "n": n, "size": size, "split": split, "strict": strict}
    for path in preview(recipe_config(PreviewConfig, config_path, options, set_items)):
        emit_path(path)
