"""tokenize-dataset: images -> Parquet token shards; prints the shard paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vimtool.commands.options import ConfigPath, HubPrivate, SetItems, recipe_config
from vimtool.logs import is_main_process
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
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO_ID",
            help="Upload the shards with a dataset card to this Hugging Face Hub dataset repo (user/name); "
            "needs `hf auth login`.",
        ),
    ] = None,
    hub_private: HubPrivate = None,
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
    cfg = recipe_config(TokenizeConfig, config_path, options, set_items)
    paths = tokenize_dataset(cfg)  # every rank's shards, on every rank
    if push_to_hub and is_main_process():
        _push(Path(cfg.out), paths, push_to_hub, hub_private)
    for path in paths:
        emit_path(path)


def _push(folder: Path, paths: list[Path], repo_id: str, private: bool | None) -> None:
    """The shards of this run, their card and tokenize.json to a Hub dataset repo (main process only)."""
    from vimtool.data.hub import push_shards  # deferred: huggingface_hub
    from vimtool.data.shards import read_shard_metadata
    from vimtool.tokenize import MANIFEST

    metas = [read_shard_metadata(p) for p in paths]
    files = [(Path(p).resolve().relative_to(folder.resolve()).as_posix(), int(m["rows"])) for p, m in zip(paths, metas)]
    source = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    push_shards(folder, repo_id, metas[0]["identity"].to_dict(), files, source, private=private)
