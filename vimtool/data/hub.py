"""Token shards on the Hugging Face Hub: `--shards user/name` inputs, the dataset card, and the push.

- `resolve_shard_spec(spec) -> list[str] | None`: what `--shards` does with a spec that is not a plain file, folder
  or glob. A `DatasetDict.save_to_disk` folder becomes its `train` split (its `dataset_dict.json` names the splits);
  a spec shaped like a Hub dataset id (`user/name`, optional `:split`) that is no local path becomes the Parquet
  files of that dataset repo, through `huggingface_hub.snapshot_download` (the same download `datasets.load_dataset`
  does for a Parquet repo; with HF_HUB_OFFLINE=1 it reads the local Hub cache and never the network).
- `dataset_card(repo_id, identity, files, source) -> str`: README.md text for a shard set: YAML (the files as the
  `train` split, the tokenizer identity, grid, codebook size, source data, row counts) and a usage snippet.
  `identity` is `TokenizerIdentity.to_dict()`, `files` [(name in the folder, rows)], `source` the settings
  tokenize-dataset recorded (`tokenize.json`).
- `push_shards(folder, repo_id, identity, files, source, private=None) -> str`: writes the card into the folder and
  uploads the Parquet shards, the card and `tokenize.json` to a Hub dataset repo; returns the commit URL.

This module takes the shard facts as arguments rather than reading them: `data.shards` imports it (for `--shards`),
so it imports nothing of `data.shards` back.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import yaml

from vimtool.atomic import write_text
from vimtool.errors import VimtoolError

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")
_UPLOADED = ["*.parquet", CARD_FILE, "tokenize.json"]  # the shards, the card, and tokenize-dataset's settings


def resolve_shard_spec(spec: str) -> list[str] | None:
    """The specs a `--shards` value stands for, or None when it is an ordinary path / glob (see the module doc)."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        return [str(_dataset_dict_split(path, "train"))]
    if path.exists() or any(ch in spec for ch in "*?[") or not _HUB_ID.match(spec):
        return None
    repo_id, _, split = spec.partition(":")
    folder = _snapshot(repo_id)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in (".parquet", ".arrow"))
    chosen = _split_files(files, folder, split or "train", strict=bool(split))
    if not chosen:
        raise VimtoolError(f"Hub dataset {repo_id!r} holds no Parquet files{f' for split {split!r}' if split else ''}")
    log.info("--shards %s: %d file(s) from %s", spec, len(chosen), folder)
    return [str(f) for f in chosen]


def _dataset_dict_split(folder: Path, split: str) -> Path:
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError):
        splits = []
    if split not in splits:
        raise VimtoolError(
            f"{folder} is a saved DatasetDict without a '{split}' split (it has {', '.join(splits) or 'none'}); "
            f"pass the split's folder, e.g. {folder / (splits[0] if splits else 'SPLIT')}"
        )
    return folder / split


def _snapshot(repo_id: str) -> Path:
    # deferred on purpose: huggingface_hub is only needed when a Hub id is given
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.parquet", "*.arrow", CARD_FILE]))
    except Exception as e:
        raise VimtoolError(
            f"--shards {repo_id!r} is no local path, and the Hub dataset {repo_id!r} could not be read "
            f"({type(e).__name__}: {' '.join(str(e).split())[:160]}); check the path or id, run `hf auth login` for "
            "a private repo, and when offline (HF_HUB_OFFLINE=1) download it once while online"
        ) from None


def _split_files(files: list[Path], root: Path, split: str, strict: bool) -> list[Path]:
    """The files of one split, named as the Hub names them (`data/train-00000-of-00001.parquet`, `train/...`).
    With no split asked for (`strict` False) and no file named for `train`, every file: a vimtool shard folder
    pushed as it is holds one split."""

    def in_split(f: Path) -> bool:
        parts = f.relative_to(root).parts
        return split in parts[:-1] or re.match(rf"{re.escape(split)}[-_.]", parts[-1]) is not None

    chosen = [f for f in files if in_split(f)]
    return chosen if chosen or strict else files


# --------------------------------------------------------------------------------------------- the dataset card
def dataset_card(repo_id: str, identity: dict, files: list[tuple[str, int]], source: dict) -> str:
    """README.md for a shard set pushed to `repo_id` (see the module docstring)."""
    rows = sum(n for _, n in files)
    h, w = identity["grid"]
    meta = {
        "tags": ["vimtool", "image-tokens", "vector-quantization"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "*.parquet"}]}],
        "vimtool": {
            "tokenizer": identity,
            "grid": [h, w],
            "codebook_size": identity["codebook_size"],
            "source": {k: v for k, v in source.items() if k != "tokenizer_sha256"},
            "rows": rows,
            "files": len(files),
        },
    }
    name = repo_id
    body = f"""# {name}: image tokens

{rows} images as {h}x{w} = {h * w} token ids each (codebook of {identity["codebook_size"]}), made by the
tokenizer `{identity["name"]}` (sha256 `{identity["sha256"][:12]}...`, {identity["image_size"]}px images) with
`vimtool tokenize-dataset`{f" from `{source['data']}` (split `{source.get('split', 'train')}`)" if source else ""}.

Columns: `tokens` (uint16 ids, raster order), `label` (int, null if none), `caption` (string, null if none),
`source_id`, `tokenizer` (the tokenizer identity as JSON: stage-2 training refuses tokens of another tokenizer).

## Use

```bash
vimtool train-lm --shards {name} --config recipes/vim_mnist.yaml
```

```python
from datasets import load_dataset

ds = load_dataset("{name}", split="train")
```

## Files

| file | rows |
|---|---|
""" + "".join(f"| {f} | {n} |\n" for f, n in files)
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n{body}"


def push_shards(
    folder: str | Path,
    repo_id: str,
    identity: dict,
    files: list[tuple[str, int]],
    source: dict,
    private: bool | None = None,
) -> str:
    """Write the dataset card into `folder` and upload the shards to the Hub dataset repo `repo_id`; returns the
    commit URL."""
    # deferred on purpose: huggingface_hub is only needed for a push
    from huggingface_hub import HfApi

    folder = Path(folder)
    write_text(folder / CARD_FILE, dataset_card(repo_id, identity, files, source))
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            allow_patterns=_UPLOADED,
            commit_message=f"Upload token shards from {folder.name} with vimtool",
        )
    except Exception as e:
        raise VimtoolError(
            f"push to Hub dataset repo '{repo_id}' failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
            "check `hf auth login` and the repo name"
        ) from e
    url = str(getattr(info, "commit_url", info))
    log.info("pushed the token shards in %s to https://huggingface.co/datasets/%s (%s)", folder, repo_id, url)
    return url
