"""sample: images from a stage-2 checkpoint (VIM classes or Parti prompts); prints the image paths."""

from __future__ import annotations

from typing import Annotated

import typer

from vimtool.commands.options import ConfigPath, Device, Seed, SetItems, recipe_config
from vimtool.errors import VimtoolError
from vimtool.pipes import emit_path


def parse_class_list(text: str | None) -> list[int]:
    """--classes "0,3,7" -> [0, 3, 7]."""
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VimtoolError(f"--classes {text!r}: give class ids separated by commas, e.g. --classes 0,3,7") from None


def sample_cmd(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint", "-c", help="Stage-2 checkpoint (VIM or Parti): folder, run folder or Hub repo id."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="Folder for images/, grid.png, tokens and sampling.json (default samples)."),
    ] = None,
    num_samples: Annotated[
        int | None,
        typer.Option("--num-samples", "-n", help="Images per class / per prompt / in total (default 16)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences decoded together (default 32).")] = None,
    seed: Seed = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="Softmax temperature; 0 = greedy (default: the tuned one per family, 0.8 for VIM, 0.6 for Parti; "
            "the VIM paper uses 1.0)."
        ),
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="Sample among the k most likely tokens; 0 = off (default).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass; 1 = off (default).")] = None,
    guidance_scale: Annotated[
        float | None,
        typer.Option(help="Classifier-free guidance s: u + s (c - u); 1 = off (default: 1 for VIM, 1.5 for Parti)."),
    ] = None,
    class_ids: Annotated[
        list[int] | None, typer.Option("--class", metavar="ID", help="VIM: class id to sample (repeatable).")
    ] = None,
    all_classes: Annotated[
        bool | None, typer.Option("--all-classes", help="VIM: sample every class of the checkpoint.")
    ] = None,
    class_list: Annotated[
        str | None,
        typer.Option("--classes", metavar="IDS", help="VIM: class ids separated by commas (0,3,7); same as --class."),
    ] = None,
    per_class: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="VIM: N images of each class (--classes, default all), seeded by (seed, class, j) alone: any "
            "subset, process count or batch size gives a class the same images. Replaces -n.",
        ),
    ] = None,
    npz: Annotated[
        str | None,
        typer.Option(
            metavar="FILE", help="VIM: also write all images as an ADM .npz (arr_0 NHWC uint8, arr_1 labels)."
        ),
    ] = None,
    classifier: Annotated[
        str | None, typer.Option(help="VIM: probe head folder (vimtool probe) for rejection sampling.")
    ] = None,
    acceptance: Annotated[
        float | None, typer.Option(help="Rejection sampling: fraction of candidates kept (VIM: 0.5).")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(help="VIM: a probe head that only scores the kept samples (class consistency in sampling.json)."),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer folder, if moved (must be the one the checkpoint records).")
    ] = None,
    use_cache: Annotated[
        bool | None,
        typer.Option("--cache/--no-cache", help="Decode with the KV cache (default) or recompute the prefix."),
    ] = None,
    device: Device = None,
    weights_dtype: Annotated[
        str | None,
        typer.Option(
            "--weights-dtype",
            "--decode-dtype",
            help="Decode weights: fp32 (default), bf16 or int8 (weight-only); on an AVX512-BF16 CPU ~3.3x / ~3.9x fp32's "
            "tokens/s at batch 1, ~2x at batch 4; not bit-equal (setting decode_dtype).",
        ),
    ] = None,
    token_format: Annotated[
        str | None, typer.Option(help="npy (tokens.npy + labels.npy) or parquet (a token shard).")
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option("--prompt", "-p", metavar="TEXT", help='Parti: text prompt (repeatable; "" = empty prompt).'),
    ] = None,
    prompts_file: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Parti: prompts, one per line, or a PartiPrompts .tsv with a Prompt column ('-' = stdin).",
        ),
    ] = None,
    samples_per_prompt: Annotated[
        int | None,
        typer.Option(help="Parti: images per prompt, reranked best first (same as --num-samples)."),
    ] = None,
    rerank: Annotated[
        str | None,
        typer.Option(
            help="Parti: likelihood (default: log p(image|text)), contrastive[:A] (log p(image|text) - A log "
            "p(image|null); A=1 = pmi), clip:FOLDER (cosine similarity under a `vimtool train-reranker` model), "
            "clipattr:FOLDER (that model asked about each colour and shape word on its own), none, shapes, module:function; A+B sums the parts' scores, each standardised among a prompt's samples, "
            "W*A weighs a part (e.g. clip:FOLDER+0.25*contrastive:0.25)."
        ),
    ] = None,
    checker: Annotated[
        str | None,
        typer.Option(
            help="Parti: score every sample for evaluation (shapes or module:function); pass rates go to sampling.json."
        ),
    ] = None,
    config_path: ConfigPath = None,
    set_items: SetItems = None,
) -> None:
    """Generate images with a stage-2 checkpoint; prints the image paths (grid, tokens, sampling.json go to --out).

    \b
    Example:
      vimtool sample -c runs/vim_mnist/final --all-classes -n 8 --guidance-scale 2 --out samples
      accelerate launch -m vimtool sample -c runs/vim_mnist/final --per-class 50 --npz samples.npz
    """
    from vimtool.sampling import SampleConfig
    from vimtool.sampling.command import sample  # deferred: imports torch

    if per_class is not None and (num_samples is not None or samples_per_prompt is not None):
        raise VimtoolError("--per-class N already says how many images per class: drop -n / --num-samples")
    classes = list(class_ids or []) + parse_class_list(class_list)

    options = {
        "checkpoint": checkpoint,
        "out": out,
        "num_samples": num_samples if samples_per_prompt is None else samples_per_prompt,
        "batch_size": batch_size,
        "seed": seed,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "guidance_scale": guidance_scale,
        "classes": classes or None,
        "all_classes": all_classes,
        "per_class": per_class,
        "npz": npz,
        "classifier": classifier,
        "acceptance": acceptance,
        "judge": judge,
        "tokenizer": tokenizer,
        "use_cache": use_cache,
        "device": device,
        "token_format": token_format,
        "decode_dtype": weights_dtype,
        "prompts": prompt or None,
        "prompts_file": prompts_file,
        "rerank": rerank,
        "checker": checker,
    }
    for path in sample(recipe_config(SampleConfig, config_path, options, set_items)):
        emit_path(path)
