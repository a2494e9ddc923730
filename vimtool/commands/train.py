"""train-tokenizer, train-lm, train-t2i, train-reranker: each prints its final checkpoint folder.

Only the options that are a command's own are declared here; the ones all three take (run folder, resume,
compile, seed, trackers, --push-to-hub, NOBLE, --config, --set) come from `options.TrainingOptions`. Library
imports are deferred into the commands: they pull in torch, and `vimtool --help` should not wait for it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vimtool.commands.options import TrainingOptions, training_command
from vimtool.pipes import emit_path

ShardPaths = Annotated[
    list[str] | None,
    typer.Option(
        "--shards",
        metavar="PATH",
        help="Token shards: files, folders (also `datasets` save_to_disk folders), globs, Hub dataset ids "
        "(user/name[:split]), or '-' for paths on stdin (repeatable).",
    ),
]
ValShards = Annotated[
    list[str] | None,
    typer.Option(
        "--val-shards", metavar="PATH", help="Held-out token shards (default: hold out --val-fraction of --shards)."
    ),
]


@training_command
def train_tokenizer_cmd(
    data: Annotated[
        str | None,
        typer.Option(
            help="Training images: shapes[:size=32], mnist5k, imagenet, user/name, a folder or .parquet files."
        ),
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Named size: tiny, SS, BB, SL, LL (small/base/large) (default tiny).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Image side in pixels; a multiple of the patch size (default size's own).")
    ] = None,
    quantizer: Annotated[
        str | None, typer.Option(help="factorized (l2, lookup dim 32; paper) or plain (Table 4 ablation).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default 500000; recipes set less).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (default 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 1e-4).")] = None,
    *,
    run: TrainingOptions,
) -> None:
    """Train a ViT-VQGAN image tokenizer (stage 1); prints the final checkpoint folder.

    \b
    Example:
      vimtool train-tokenizer --config recipes/tokenizer_mnist.yaml
    """
    from vimtool.train.tokenizer import TokenizerRunConfig, train_tokenizer

    options = {
        "data": data,
        "size": size,
        "image_size": image_size,
        "model": {"quantizer": quantizer},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr},
    }
    emit_path(train_tokenizer(run.config(TokenizerRunConfig, options)))


@training_command
def train_lm_cmd(
    shards: ShardPaths = None,
    val_shards: ValShards = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Fraction of training rows held out when no --val-shards (default 0.05).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Named size: base, large (paper), small, tiny (CPU), micro (default tiny).")
    ] = None,
    conditional: Annotated[
        str | None, typer.Option(help="auto (class-conditional when every row has a label), yes, no.")
    ] = None,
    label_dropout: Annotated[
        float | None, typer.Option(help="P(label -> null class) for classifier-free guidance (default 0.1).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default 450000; recipes set less).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (default 1024).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 4.5e-4).")] = None,
    *,
    run: TrainingOptions,
) -> None:
    """Train a VIM decoder-only image transformer on token shards (stage 2); prints the final checkpoint folder.

    \b
    Example:
      vimtool tokenize-dataset --tokenizer runs/tok/final --data mnist5k --out shards |
        vimtool train-lm --shards - --config recipes/vim_mnist.yaml
    """
    from vimtool.train.lm import LMRunConfig, train_lm

    options = {
        "shards": shards or None,
        "val_shards": val_shards or None,
        "val_fraction": val_fraction,
        "size": size,
        "conditional": conditional,
        "model": {"label_dropout": label_dropout},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr},
    }
    emit_path(train_lm(run.config(LMRunConfig, options)))


@training_command
def train_t2i_cmd(
    shards: ShardPaths = None,
    val_shards: ValShards = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Fraction of training rows held out when no --val-shards (default 0.02).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Named size: 350M, 750M, 3B, 20B (paper), tiny, micro (CPU) (default tiny).")
    ] = None,
    text_vocab_size: Annotated[
        int | None, typer.Option(help="Most entries of the text tokenizer trained on the captions (default 16000).")
    ] = None,
    cond_drop: Annotated[
        float | None,
        typer.Option(help="P(prompt -> learned null) in training, for classifier-free guidance (default 0.1)."),
    ] = None,
    image_shards: Annotated[
        list[str] | None,
        typer.Option(
            "--image-shards",
            metavar="PATH",
            help="Token shards of images without captions: the rows that drop their prompt (--cond-drop) show "
            "these instead, so the unconditional model learns them too (repeatable).",
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default 450000; recipes set less).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (default 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 4.5e-5).")] = None,
    *,
    run: TrainingOptions,
) -> None:
    """Train a Parti text-to-image transformer on captioned token shards; prints the final checkpoint folder.

    \b
    Example:
      vimtool tokenize-dataset --tokenizer runs/tok/final --data shapes:size=32 --out shards |
        vimtool train-t2i --shards - --config recipes/parti_shapes.yaml
    """
    from vimtool.train.t2i import T2IRunConfig, train_t2i

    options = {
        "shards": shards or None,
        "val_shards": val_shards or None,
        "val_fraction": val_fraction,
        "size": size,
        "text_vocab_size": text_vocab_size,
        "cond_drop": cond_drop,
        "image_shards": image_shards or None,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr},
    }
    emit_path(train_t2i(run.config(T2IRunConfig, options)))


@training_command
def train_reranker_cmd(
    data: Annotated[
        str | None,
        typer.Option(help="Captioned training images: shapes[:size=32,...], a folder with metadata.jsonl, user/name."),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Image side in pixels the reranker reads (default 32); Parti's samples are resized."),
    ] = None,
    text_tower: Annotated[
        str | None,
        typer.Option(
            help="transformer (default: word order counts) or bow (bag of words: order-blind, slightly cheaper)."
        ),
    ] = None,
    hard_negatives: Annotated[
        int | None,
        typer.Option(
            help="Per image, this many training captions one word away from its own as extra negatives "
            "('a red square' vs 'a red circle'), so the model must read every word (default 0: in-batch only)."
        ),
    ] = None,
    image_negatives: Annotated[
        float | None,
        typer.Option(
            help="Per image, this many damaged copies (a small block of its outline moved: a bump or a notch) as "
            "extra negatives of every caption, so the model reads outlines, not only colour and place "
            "(0.5: one for every other image; default 0)."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default 1500).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch size: the negatives of each pair (default 128).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 2e-3).")] = None,
    *,
    run: TrainingOptions,
) -> None:
    """Train a contrastive image-text reranker (a small CLIP) for `sample --rerank clip:FOLDER`; prints the final
    checkpoint folder.

    \b
    Example:
      vimtool train-reranker --config recipes/reranker_shapes.yaml
      vimtool sample -c runs/t2i_shapes/final --prompt "a red circle in the top left" --rerank clip:runs/reranker_shapes
    """
    from vimtool.train.reranker import RerankerRunConfig, train_reranker

    options = {
        "data": data,
        "image_size": image_size,
        "model": {"text_tower": text_tower},
        "hard_negatives": hard_negatives,
        "image_negatives": image_negatives,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr},
    }
    emit_path(train_reranker(run.config(RerankerRunConfig, options)))
