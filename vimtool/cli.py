"""The `vimtool` command line: one thin, typed command per pipeline arrow (DESIGN.md).

Each command builds a typed config (recipe file <- options <- `--set key=value`) and calls ONE library
function. The library never imports this module. stdout carries only written paths (the pipe contract);
logs and progress bars go to stderr. A `VimtoolError` becomes a one-line `error: ...` and exit code 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from vimtool.errors import VimtoolError

app = typer.Typer(
    name="vimtool",
    help="Autoregressive image generation with discrete tokens: ViT-VQGAN tokenizers, VIM and Parti "
    "transformers, NOBLE layers, sampling, probing and FID.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Look at data before training on it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from vimtool.provenance import describe

        typer.echo(describe())  # e.g. "vimtool 0.1.0 (git 6ed31aa75584), torch 2.13.0+cpu": what a bug report needs
        raise typer.Exit()


@app.callback()
def _root(
    version: bool | None = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging on stderr."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        envvar="VIMTOOL_THREADS",
        min=1,
        help="CPU threads for torch (default: torch's, one per core). On a busy or shared CPU, 1 can be many times faster.",
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    _set_threads(threads)


def _set_threads(threads: int | None) -> None:
    """Apply --threads (the engine hints at it when training on a CPU busier than its cores)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# Commands are registered below as their library modules exist (no command that only says "not implemented").
# --- commands --- (in pipeline order: --help lists them so)


@app.command("train-tokenizer")
def train_tokenizer_cmd(
    data: str | None = typer.Option(
        None,
        "--data",
        help="Training images: shapes[:size=32], mnist5k, imagenet, user/name, a folder or .parquet files.",
    ),
    size: str | None = typer.Option(
        None, "--size", help="Named size: tiny, SS, BB, SL, LL (small/base/large) (default tiny)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Image side in pixels; a multiple of the patch size (default size's own)."
    ),
    quantizer: str | None = typer.Option(
        None, "--quantizer", help="factorized (l2, lookup dim 32; paper) or plain (Table 4 ablation)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (default 500000; recipes set less)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size (default 256)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 1e-4)."),
    out_dir: str | None = typer.Option(None, "--out-dir", help="Run folder (default runs/tokenizer)."),
    resume: bool | None = typer.Option(
        None, "--resume/--no-resume", help="Continue from the run folder's latest checkpoint."
    ),
    compile_model: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the model (train.compile): for GPUs; little change on CPUs."
    ),
    noble_rank: int | None = typer.Option(None, "--noble-rank", help="NOBLE branch rank on the ViT linears (0 = off)."),
    noble_act: str | None = typer.Option(
        None, "--noble-act", help="NOBLE activation (cosnet, cos, gelu, relu2, identity, ...)."
    ),
    noble_placement: str | None = typer.Option(
        None, "--noble-placement", help="NOBLE sites: all or a comma list of q,k,v,out,mlp_in,mlp_out."
    ),
    config_path: str | None = typer.Option(
        None, "--config", help="Recipe file (YAML/TOML/JSON), e.g. recipes/tokenizer_mnist.yaml."
    ),
    set_items: list[str] | None = typer.Option(
        None, "--set", help="Override any setting: --set loss.perceptual=0 --set train.eval_every=500."
    ),
) -> None:
    """Train a ViT-VQGAN image tokenizer (stage 1); prints the final checkpoint folder.

    Example: vimtool train-tokenizer --config recipes/tokenizer_mnist.yaml
    """
    from vimtool.config import deep_merge, load_config, parse_set
    from vimtool.nn.noble import noble_from_cli
    from vimtool.pipes import emit_path
    from vimtool.train.tokenizer import TokenizerRunConfig, train_tokenizer

    model = {"quantizer": quantizer, "noble": noble_from_cli(noble_rank, noble_act, noble_placement) or None}
    train = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "out_dir": out_dir,
        "resume": resume,
        "compile": compile_model,
    }
    options = {"data": data, "size": size, "image_size": image_size, "model": model, "train": train}
    cfg = load_config(TokenizerRunConfig, config_path, deep_merge(options, parse_set(set_items)))
    emit_path(train_tokenizer(cfg))


@app.command("eval-tokenizer")
def eval_tokenizer_cmd(
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="Tokenizer checkpoint folder or Hub repo id."),
    data: str | None = typer.Option(None, "--data", help="Held-out images (a --data spec)."),
    split: str | None = typer.Option(None, "--split", help="Split to evaluate on (default val)."),
    num_images: int | None = typer.Option(
        None, "--num-images", help="Images to evaluate (default 256: usage is per 256 images)."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Folder for metrics.json and reconstructions.png (default tokenizer_eval)."
    ),
    config_path: str | None = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: list[str] | None = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """Tokenizer health: held-out L2/PSNR, codebook usage per 256 images, perplexity, dead codes, and a PNG of
    originals beside reconstructions; prints the two written paths.

    Example: vimtool eval-tokenizer --tokenizer runs/tok_mnist/final --data mnist5k --out eval_mnist
    """
    from vimtool.config import load_config, parse_set
    from vimtool.pipes import emit_path
    from vimtool.train.tokenizer import TokenizerEvalConfig, run_tokenizer_eval

    options = {"tokenizer": tokenizer, "data": data, "split": split, "num_images": num_images, "out": out}
    cfg = load_config(TokenizerEvalConfig, config_path, {**options, **parse_set(set_items)})
    for path in run_tokenizer_eval(cfg):
        emit_path(path)


@app.command("tokenize-dataset")
def tokenize_dataset_cmd(
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="Tokenizer checkpoint folder or Hub repo id."),
    data: str | None = typer.Option(None, "--data", help="Images to tokenize (a --data spec)."),
    out: str | None = typer.Option(None, "--out", help="Folder for the Parquet token shards."),
    split: str | None = typer.Option(None, "--split", help="Split to tokenize (default train)."),
    flip: bool | None = typer.Option(
        None,
        "--flip/--no-flip",
        help="Also write a horizontally flipped copy of each image (left/right swapped in captions).",
    ),
    shifts: int | None = typer.Option(
        None, "--shifts", help="Also write K copies of each image moved by whole pixels (augmentation; default 0)."
    ),
    max_shift: int | None = typer.Option(
        None, "--max-shift", help="Most pixels a --shifts copy moves along each axis (default 2)."
    ),
    rows_per_shard: int | None = typer.Option(None, "--rows-per-shard", help="Rows per shard (default 10000)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per encoder batch (default 64)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images of the split."),
    config_path: str | None = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: list[str] | None = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """Turn images into Parquet token shards for train-lm / train-t2i; prints the shard paths.

    Resumable (a rerun skips finished shards) and multi-process under `accelerate launch` (each rank writes
    its own shards). Example: vimtool tokenize-dataset --tokenizer runs/tok/final --data mnist5k --out shards/
    """
    from vimtool.config import load_config, parse_set
    from vimtool.pipes import emit_path
    from vimtool.tokenize import TokenizeConfig, tokenize_dataset

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
    }
    cfg = load_config(TokenizeConfig, config_path, {**options, **parse_set(set_items)})
    for path in tokenize_dataset(cfg):
        emit_path(path)


@app.command("train-lm")
def train_lm_cmd(
    shards: list[str] | None = typer.Option(
        None, "--shards", help="Token shards: files, folders, globs, or '-' for paths on stdin (repeatable)."
    ),
    val_shards: list[str] | None = typer.Option(
        None, "--val-shards", help="Held-out token shards (default: hold out --val-fraction of --shards)."
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Fraction of training rows held out when no --val-shards (default 0.05)."
    ),
    size: str | None = typer.Option(
        None, "--size", help="Named size: base, large (paper), small, tiny (CPU), micro (default tiny)."
    ),
    conditional: str | None = typer.Option(
        None, "--conditional", help="auto (class-conditional when every row has a label), yes, no."
    ),
    label_dropout: float | None = typer.Option(
        None, "--label-dropout", help="P(label -> null class) for classifier-free guidance (default 0.1)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (default 450000; recipes set less)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size (default 1024)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 4.5e-4)."),
    out_dir: str | None = typer.Option(None, "--out-dir", help="Run folder (default runs/vim)."),
    resume: bool | None = typer.Option(
        None, "--resume/--no-resume", help="Continue from the run folder's latest checkpoint."
    ),
    compile_model: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the model (train.compile): for GPUs; little change on CPUs."
    ),
    noble_rank: int | None = typer.Option(
        None, "--noble-rank", help="NOBLE branch rank on the transformer linears (0 = off)."
    ),
    noble_act: str | None = typer.Option(
        None, "--noble-act", help="NOBLE activation (cosnet, cos, gelu, relu2, identity, ...)."
    ),
    noble_placement: str | None = typer.Option(
        None, "--noble-placement", help="NOBLE sites: all or a comma list of q,k,v,out,mlp_in,mlp_out."
    ),
    config_path: str | None = typer.Option(
        None, "--config", help="Recipe file (YAML/TOML/JSON), e.g. recipes/vim_mnist.yaml."
    ),
    set_items: list[str] | None = typer.Option(
        None, "--set", help="Override any setting: --set model.dropout=0 --set train.eval_every=200."
    ),
) -> None:
    """Train a VIM decoder-only image transformer on token shards (stage 2); prints the final checkpoint folder.

    Example: vimtool tokenize-dataset --tokenizer runs/tok/final --data mnist5k --out shards | vimtool train-lm --shards - --config recipes/vim_mnist.yaml
    """
    from vimtool.config import deep_merge, load_config, parse_set
    from vimtool.nn.noble import noble_from_cli
    from vimtool.pipes import emit_path
    from vimtool.train.lm import LMRunConfig, train_lm

    model = {"label_dropout": label_dropout, "noble": noble_from_cli(noble_rank, noble_act, noble_placement) or None}
    train = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "out_dir": out_dir,
        "resume": resume,
        "compile": compile_model,
    }
    options = {
        "shards": shards or None,
        "val_shards": val_shards or None,
        "val_fraction": val_fraction,
        "size": size,
        "conditional": conditional,
        "model": model,
        "train": train,
    }
    cfg = load_config(LMRunConfig, config_path, deep_merge(options, parse_set(set_items)))
    emit_path(train_lm(cfg))


@app.command("train-t2i")
def train_t2i_cmd(
    shards: list[str] | None = typer.Option(
        None, "--shards", help="Captioned token shards: files, folders, globs, or '-' for paths on stdin (repeatable)."
    ),
    val_shards: list[str] | None = typer.Option(
        None, "--val-shards", help="Held-out token shards (default: hold out --val-fraction of --shards)."
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Fraction of training rows held out when no --val-shards (default 0.02)."
    ),
    size: str | None = typer.Option(
        None, "--size", help="Named size: 350M, 750M, 3B, 20B (paper), tiny, micro (CPU) (default tiny)."
    ),
    text_vocab_size: int | None = typer.Option(
        None, "--text-vocab-size", help="Most entries of the text tokenizer trained on the captions (default 16000)."
    ),
    cond_drop: float | None = typer.Option(
        None, "--cond-drop", help="P(prompt -> learned null) in training, for classifier-free guidance (default 0.1)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (default 450000; recipes set less)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size (default 256)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 4.5e-5)."),
    out_dir: str | None = typer.Option(None, "--out-dir", help="Run folder (default runs/t2i)."),
    resume: bool | None = typer.Option(
        None, "--resume/--no-resume", help="Continue from the run folder's latest checkpoint."
    ),
    compile_model: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the model (train.compile): for GPUs; little change on CPUs."
    ),
    noble_rank: int | None = typer.Option(
        None, "--noble-rank", help="NOBLE branch rank on the transformer linears (0 = off)."
    ),
    noble_act: str | None = typer.Option(
        None, "--noble-act", help="NOBLE activation (cosnet, cos, gelu, relu2, identity, ...)."
    ),
    noble_placement: str | None = typer.Option(
        None, "--noble-placement", help="NOBLE sites: all or a comma list of q,k,v,out,mlp_in,mlp_out."
    ),
    config_path: str | None = typer.Option(
        None, "--config", help="Recipe file (YAML/TOML/JSON), e.g. recipes/parti_shapes.yaml."
    ),
    set_items: list[str] | None = typer.Option(
        None, "--set", help="Override any setting: --set model.dec_depth=6 --set train.eval_every=500."
    ),
) -> None:
    """Train a Parti text-to-image transformer on captioned token shards; prints the final checkpoint folder.

    Example: vimtool tokenize-dataset --tokenizer runs/tok/final --data shapes:size=32 --out shards | vimtool train-t2i --shards - --config recipes/parti_shapes.yaml
    """
    from vimtool.config import deep_merge, load_config, parse_set
    from vimtool.nn.noble import noble_from_cli
    from vimtool.pipes import emit_path
    from vimtool.train.t2i import T2IRunConfig, train_t2i

    model = {"noble": noble_from_cli(noble_rank, noble_act, noble_placement) or None}
    train = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "out_dir": out_dir,
        "resume": resume,
        "compile": compile_model,
    }
    options = {
        "shards": shards or None,
        "val_shards": val_shards or None,
        "val_fraction": val_fraction,
        "size": size,
        "text_vocab_size": text_vocab_size,
        "cond_drop": cond_drop,
        "model": model,
        "train": train,
    }
    cfg = load_config(T2IRunConfig, config_path, deep_merge(options, parse_set(set_items)))
    emit_path(train_t2i(cfg))


@app.command("sample")
def sample_cmd(
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", "-c", help="Stage-2 checkpoint (VIM or Parti): folder, run folder or Hub repo id."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Folder for images/, grid.png, tokens and sampling.json (default samples)."
    ),
    num_samples: int | None = typer.Option(
        None, "--num-samples", "-n", help="Images per class / per prompt / in total (default 16)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences decoded together (default 32)."),
    seed: int | None = typer.Option(
        None, "--seed", help="Random seed: the same seed gives the same images (default 0)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Softmax temperature; 0 = greedy (default 1.0)."
    ),
    top_k: int | None = typer.Option(None, "--top-k", help="Sample among the k most likely tokens; 0 = off (default)."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling mass; 1 = off (default)."),
    guidance_scale: float | None = typer.Option(
        None,
        "--guidance-scale",
        help="Classifier-free guidance s: u + s (c - u); 1 = off (default: 1 for VIM, 1.5 for Parti).",
    ),
    class_ids: list[int] | None = typer.Option(None, "--class", help="VIM: class id to sample (repeatable)."),
    all_classes: bool | None = typer.Option(None, "--all-classes", help="VIM: sample every class of the checkpoint."),
    classifier: str | None = typer.Option(
        None, "--classifier", help="VIM: probe head folder (vimtool probe) for rejection sampling."
    ),
    acceptance: float | None = typer.Option(
        None, "--acceptance", help="Rejection sampling: fraction of candidates kept (VIM: 0.5)."
    ),
    judge: str | None = typer.Option(
        None,
        "--judge",
        help="VIM: a probe head that only scores the kept samples (class consistency in sampling.json).",
    ),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer folder, if moved (must be the one the checkpoint records)."
    ),
    use_cache: bool | None = typer.Option(
        None, "--cache/--no-cache", help="Decode with the KV cache (default) or recompute the prefix."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N (default auto)."),
    decode_dtype: str | None = typer.Option(
        None, "--decode-dtype", help="fp32 (default) or bf16 decode weights: ~1.3x faster on CPU, not bit-equal."
    ),
    token_format: str | None = typer.Option(
        None, "--token-format", help="npy (tokens.npy + labels.npy) or parquet (a token shard)."
    ),
    prompt: list[str] | None = typer.Option(
        None, "--prompt", "-p", help='Parti: text prompt (repeatable; "" = empty prompt).'
    ),
    prompts_file: str | None = typer.Option(
        None,
        "--prompts-file",
        help="Parti: prompts, one per line, or a PartiPrompts .tsv with a Prompt column ('-' = stdin).",
    ),
    samples_per_prompt: int | None = typer.Option(
        None, "--samples-per-prompt", help="Parti: images per prompt, reranked best first (same as --num-samples)."
    ),
    rerank: str | None = typer.Option(
        None,
        "--rerank",
        help="Parti: likelihood (default: log p(image|text)), contrastive[:A] (log p(image|text) - A log p(image|null); A=1 = pmi), none, shapes, module:function.",
    ),
    checker: str | None = typer.Option(
        None,
        "--checker",
        help="Parti: score every sample for evaluation (shapes or module:function); pass rates go to sampling.json.",
    ),
    config_path: str | None = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: list[str] | None = typer.Option(None, "--set", help="Override any setting: --set grid_cols=10."),
) -> None:
    """Generate images with a stage-2 checkpoint; prints the image paths (grid, tokens, sampling.json go to --out).

    Example: vimtool sample -c runs/vim_mnist/final --all-classes -n 8 --guidance-scale 2 --out samples
    """
    from vimtool.config import load_config, parse_set
    from vimtool.pipes import emit_path
    from vimtool.sampling import SampleConfig, sample

    options = dict(
        checkpoint=checkpoint,
        out=out,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        guidance_scale=guidance_scale,
        classes=class_ids or None,
        all_classes=all_classes,
        classifier=classifier,
        acceptance=acceptance,
        judge=judge,
        tokenizer=tokenizer,
        use_cache=use_cache,
        device=device,
        token_format=token_format,
        decode_dtype=decode_dtype,
    )
    options.update(prompts=prompt or None, prompts_file=prompts_file, rerank=rerank, checker=checker)
    if samples_per_prompt is not None:
        options["num_samples"] = samples_per_prompt
    cfg = load_config(SampleConfig, config_path, {**options, **parse_set(set_items)})
    for path in sample(cfg):
        emit_path(path)


@app.command("probe")
def probe_cmd(
    checkpoint: str | None = typer.Option(None, "--checkpoint", "-c", help="The VIM checkpoint to probe (frozen)."),
    shards: list[str] | None = typer.Option(
        None, "--shards", help="Labelled token shards to train the classifier on (paths, globs, folders, '-')."
    ),
    val_shards: list[str] | None = typer.Option(
        None, "--val-shards", help="Held-out labelled shards for top-1 (default: hold out 10% of --shards)."
    ),
    blocks: list[int] | None = typer.Option(
        None, "--block", help="Block to probe, 1-based (repeatable; default: every block)."
    ),
    baselines: str | None = typer.Option(
        None,
        "--baselines",
        help="Comma list of baselines: pixels (decoded), tokens (bag of ids), raw_pixels (the original images; opt-in). Default pixels,tokens; '' for none.",
    ),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer folder for the pixel baseline, if moved."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N (default auto)."),
    out: str | None = typer.Option(None, "--out", help="Folder for probe.json and the heads (default probe)."),
    config_path: str | None = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: list[str] | None = typer.Option(
        None, "--set", help="Override any setting: --set l2=[1e-2] --set pixel_classifier=false."
    ),
) -> None:
    """Linear probe of a frozen VIM: top-1 per block (table on stderr, probe.json) and saved heads; prints the paths.

    The best block's head (head_best/) and the baselines' heads (head_pixels/, head_tokens/) can score samples:
    vimtool sample ... --classifier probe/head_pixels --acceptance 0.5. Example:
    vimtool probe -c runs/vim_mnist/final --shards shards/train --val-shards shards/val --out probe_mnist
    """
    from vimtool.config import load_config, parse_set
    from vimtool.pipes import emit_path
    from vimtool.probe import ProbeConfig, probe

    base = None if baselines is None else [b.strip() for b in baselines.split(",") if b.strip()]
    options = dict(
        checkpoint=checkpoint,
        shards=shards or None,
        val_shards=val_shards or None,
        blocks=blocks or None,
        baselines=base,
        tokenizer=tokenizer,
        device=device,
        out=out,
    )
    cfg = load_config(ProbeConfig, config_path, {**options, **parse_set(set_items)})
    for path in probe(cfg):
        emit_path(path)


@app.command("eval-fid")
def eval_fid(
    a: str = typer.Argument(
        ...,
        help="Set A (usually the real/reference set): image folder, .txt list of paths, "
        "'-' (paths on stdin), .npz (mu/sigma or ADM arr_0), or a --data spec (mnist5k, user/name; "
        "data:SPEC forces one).",
    ),
    b: str | None = typer.Argument(
        None,
        help="Set B (usually generated), same kinds as A. Omit with --tokenizer "
        "(rFID against A itself) or --save-stats.",
    ),
    n: int | None = typer.Option(None, "--n", help="At most N images per set."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per Inception batch (default 50)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N (default auto)."),
    inception_weights: str | None = typer.Option(
        None, "--inception-weights", help="Path of pt_inception-2015-12-05-6726825d.pth."
    ),
    save_stats: str | None = typer.Option(None, "--save-stats", help="Write A's statistics to this .npz."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer checkpoint: rFID of its reconstructions of A."
    ),
    split: str | None = typer.Option(None, "--split", help="Split of --data specs (default train)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of random subsets for --n (default 0)."),
    out: str | None = typer.Option(
        None, "--out", help="Folder for scores.json + protocol.json (default outputs/eval-fid)."
    ),
    config_path: str | None = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: list[str] | None = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """FID (pytorch-fid 0.3.0 numbers) and Inception Score of B against A, or rFID of a tokenizer on A.

    Writes scores.json and a protocol card (protocol.json) to --out, prints a table on stderr and the
    written paths on stdout. Example: vimtool sample ... | vimtool eval-fid ref_stats.npz -
    """
    from vimtool.config import load_config, parse_set
    from vimtool.metrics.eval_fid import EvalFidConfig, evaluate_fid
    from vimtool.pipes import emit_path

    options = dict(
        inputs=[a] + ([b] if b is not None else []),
        n=n,
        batch_size=batch_size,
        device=device,
        inception_weights=inception_weights,
        save_stats=save_stats,
        tokenizer=tokenizer,
        split=split,
        seed=seed,
        out=out,
    )
    cfg = load_config(EvalFidConfig, config_path, {**options, **parse_set(set_items)})
    for path in evaluate_fid(cfg):
        emit_path(path)


@data_app.command("preview")
def data_preview(
    data: str | None = typer.Option(
        None,
        "--data",
        help="Data spec: shapes[:size=32,...], mnist5k, mnist, "
        "cifar10, user/name[:split], an image folder or .parquet files [shapes].",
    ),
    out: str | None = typer.Option(None, "--out", help="PNG to write [preview.png]."),
    n: int | None = typer.Option(None, "--n", help="Number of images [64]."),
    size: int | None = typer.Option(None, "--size", help="Resize + center-crop each image to SIZE [64]."),
    split: str | None = typer.Option(None, "--split", help="train, val, all (shapes also: holdout) [train]."),
    strict: bool | None = typer.Option(
        None, "--strict/--no-strict", help="Fail on the first corrupt image instead of skipping it."
    ),
    config_path: str | None = typer.Option(None, "--config", help="Recipe file (YAML/TOML/JSON)."),
    set_items: list[str] | None = typer.Option(None, "--set", help="Override any setting: --set key=value."),
) -> None:
    """Write a PNG grid of examples with their captions or labels, to look at data before training.

    Example: vimtool data preview --data shapes:size=32 --n 36 --out shapes.png
    """
    from vimtool.config import load_config, parse_set
    from vimtool.data.preview import PreviewConfig, preview
    from vimtool.pipes import emit_path

    options = dict(data=data, out=out, n=n, size=size, split=split, strict=strict)
    cfg = load_config(PreviewConfig, config_path, {**options, **parse_set(set_items)})
    for path in preview(cfg):
        emit_path(path)


def main() -> None:
    """Console entry point: user errors are one line on stderr, exit code 2."""
    try:
        app(standalone_mode=False)
    except VimtoolError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # click usage errors (bad option, missing argument) keep click's own message
        # Duck-typed: typer >= 0.26 raises its vendored copy of click's exceptions, not `click.ClickException`.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise
