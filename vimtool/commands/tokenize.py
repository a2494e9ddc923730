"""tokenize-dataset: images -> Parquet token shards; prints the shard paths."""

from __future__ import annotations

from typing import Annotated

import typer

from vimtool.commands.options import ConfigPath, SetItems, recipe_config
from vimtool.pipes import emit_path


def tokenize_dataset_cmd(
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer checkpoint folder or Hub repo id.")] = None,
    data: Annotated[str | None, typer.Option(help="Images to tokenize (a --data spec).")] = None,
    out: Annotated[str | None, typer.Option(metavar="DIR", help="Folder for the Parquet token shards.")] = None,
    split: Annotated[str | None, typer.Option(help="Split to tokenize (default train).")] = None,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help="Also write a horizontally flipped copy of each image (left/right swapped in captions).",
        ),
    ] = None,
    shifts: Annotated[
        int | None,
        typer.Option(help="Also write K copies of each image moved by whole pixels (augmentation; default 0)."),
    ] = None,
    max_shift: Annotated[
        int | None, typer.Option(help="Most pixels a --shifts copy moves along each axis (default 2).")
    ] = None,
    rows_per_shard: Annotated[int | None, typer.Option(help="Rows per shard (default 10000).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per encoder batch (default 64).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images of the split.")] = None,
    num_shards: Annotated[
        int | None, typer.Option(help="Cut the split into N disjoint pieces, one per job of an array (default 1).")
    ] = None,
    shard_index: Annotated[
        int | None, typer.Option(help="The piece this job tokenizes, 0 .. N-1 (e.g. $SLURM_ARRAY_TASK_ID).")
    ] = None,
    config_path: ConfigPath = None,
    set_items: SetItems = None,
) -> None:
    """Turn images into Parquet token shards for train-lm / train-t2i; prints the shard paths.

    Resumable (a rerun skips finished shards), multi-process under `accelerate launch` (each rank writes
    its own shards), and splittable into --num-shards pieces for a cluster array job (one folder, no
    collisions). Corrupt images are skipped (counted by cause in the log and tokenize.json), never replaced.

    \b
    Example:
      vimtool tokenize-dataset --tokenizer runs/tok/final --data mnist5k --out shards/
    """
    from vimtool.tokenize import TokenizeConfig, tokenize_dataset  # deferred: imports torch

    options = {
        "tokenizer": tokenizer,
        "data": data,
        "out": out,
        "split": split,
        "flip": flip,
        "shifts": shifts,
        "max_shift": max_shift,
        "rows_per_shard": rows_per_shard,
        "batch_size": batch_size,
        "limit": limit,
        "num_shards": num_shards,
        "shard_index": shard_index,
    }
    for path in tokenize_dataset(recipe_config(TokenizeConfig, config_path, options, set_items)):
        emit_path(path)
