"""Model checkpoints: a folder you can load anywhere, push to the Hub, and pair safely with its tokenizer.

Layout of a model checkpoint folder (docs/ARCHITECTURE.md)::

    config.json         {"model_type", "config": {...the model's config dataclass...}, "vimtool_version",
                         "software": {vimtool, git_commit, git_dirty, torch, python} (vimtool/provenance.py),
                         **extra}   e.g. extra = {"tokenizer": identity, "tokenizer_path": ...} for stage 2
    model.safetensors   the weights (tied tensors stored once; no pickle anywhere)
    README.md           a Hugging Face model card: YAML front matter + what data, how many steps, metrics
    tokenizer/          (stage 2) the image tokenizer it was trained on: config.json + model.safetensors, hard-linked
                        or copied at save time (`embed_tokenizer`), so the checkpoint decodes after a move, a Hub
                        push or on another machine; a tokenizer from the Hub is recorded by repo id + commit instead
    tokenizer.json      (Parti) its text tokenizer
    state/              (training checkpoints only) optimizer/RNG/data position for `--resume`; never needed
                        to use the model and never pushed to the Hub

`load_model(spec)` takes a local folder, a training run folder (follows its `final`, then `latest`
pointer), a pointer file, or a Hub repo id (`org/name`, optional revision) resolved by huggingface_hub --
offline (`HF_HUB_OFFLINE=1`) it resolves from the Hub cache exactly as huggingface_hub lays it out.

Every write is atomic (vimtool/atomic.py): files go to a temporary folder first and are moved in with
`os.replace`, so a crash mid-save leaves either the old files or the new ones, never half a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model
from torch import nn

from vimtool import __version__
from vimtool.atomic import atomic_dir, atomic_path
from vimtool.config import ConfigError, build
from vimtool.errors import VimtoolError
from vimtool.models.registry import get_config_class, get_model_class
from vimtool.preflight import build_for_weights
from vimtool.provenance import describe, software_info

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
STATE_DIR = "state"
TOKENIZER_DIR = "tokenizer"  # a stage-2 checkpoint's own copy of its image tokenizer
# Pointer names inside a run folder (written by the training engine): newest checkpoint, and the finished one.
POINTERS = ("final", "latest")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ----------------------------------------------------------------------------------------------- saving
def save_model(model: nn.Module, folder: str | Path, card: dict | None = None, extra: dict | None = None) -> Path:
    """Write config.json, model.safetensors and README.md into `folder` atomically; returns the folder.

    `model` needs `.config` (a dataclass) and a class attribute `model_type`. Files already in `folder`
    that are not ours (a `state/` dir, a `tokenizer.json`) are kept; ours are replaced file by file.
    """
    model_type = getattr(model, "model_type", None)
    config = getattr(model, "config", None)
    if not isinstance(model_type, str) or not dataclasses.is_dataclass(config):
        raise TypeError(
            f"{type(model).__name__} needs a `model_type` class attribute and a dataclass `.config` to be saved"
        )
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model_type": model_type,
        "config": _jsonable(dataclasses.asdict(config)),
        "vimtool_version": __version__,
        "software": software_info(),
    }
    meta.update(_jsonable(extra or {}))
    with atomic_dir(folder, merge=True) as tmp:  # an existing folder keeps its other files (state/, tokenizer.json)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        # safetensors' save_model drops duplicate storage of tied weights (and load_model restores the ties).
        st_save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "model_type": model_type})
        (tmp / CARD_FILE).write_text(model_card(meta, card or {}), encoding="utf-8")
        default_modes(tmp)
    return folder


def default_modes(folder: Path) -> None:
    """safetensors (0600) makes private files; a checkpoint is shared like any other file."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# Hub pipeline tag per model type. A tokenizer's input and output are both images (it is judged by how well
# encode -> decode reconstructs them), so image-to-image; its tokens are a compressed image, not features for a head.
PIPELINE_TAGS = {
    "vim": "unconditional-image-generation",
    "parti": "text-to-image",
    "vitvqgan": "image-to-image",
    "dual_encoder": "zero-shot-image-classification",  # the Hub's tag for CLIP-style image-text models
}
# What the usage snippet names the checkpoint unless the card knows its Hub repo (card["repo_id"], e.g. push_to_hub).
CARD_PLACEHOLDER = "PATH_OR_REPO_ID"


def model_card(meta: dict, card: dict) -> str:
    """A Hugging Face model card: YAML front matter (license, library, pipeline tag, datasets, tags, model-index
    with the last evaluation's numbers) + a short human summary and a usage snippet that runs as written once
    PATH_OR_REPO_ID names the checkpoint (card["repo_id"] fills it in)."""
    model_type = meta["model_type"]
    title = card.get("title", model_type)
    front: dict[str, Any] = {"license": card.get("license", "apache-2.0"), "library_name": "vimtool"}
    if model_type in PIPELINE_TAGS:
        front["pipeline_tag"] = PIPELINE_TAGS[model_type]
    front["tags"] = ["vimtool", model_type, "image-generation"]
    data = card.get("data")
    hub_data = isinstance(data, str) and _REPO_ID.match(data.split(":")[0]) and not Path(data).exists()
    if hub_data:  # a Hub dataset id
        front["datasets"] = [data.split(":")[0]]
    metrics = card.get("metrics") or {}
    evals = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("loss/")}
    if evals:  # the last evaluation (e.g. val_loss): what the Hub shows as this model's results
        front["model-index"] = [
            {
                "name": title,
                "results": [
                    {
                        "task": {"type": front.get("pipeline_tag", model_type)},
                        "dataset": {"name": str(data or "training data")[:100],
                                    "type": data.split(":")[0] if hub_data else "custom"},
                        "metrics": [{"type": k, "name": k.replace("_", " "), "value": float(v)}
                                    for k, v in sorted(evals.items())],
                    }
                ],
            }
        ]  # fmt: skip
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {title}", ""]
    lines.append(
        f"A `{model_type}` model trained with vimtool {__version__} (autoregressive image generation with discrete tokens)."
    )
    lines += ["", "| | |", "|---|---|", f"| model type | `{model_type}` |"]
    if meta.get("software"):
        lines.append(f"| software | {describe(meta['software'])} |")
    for key in ("task", "data", "steps", "samples_seen", "ema"):
        if card.get(key) is not None:
            lines.append(f"| {key.replace('_', ' ')} | {card[key]} |")
    if meta.get("tokenizer"):
        tok = meta["tokenizer"]
        lines.append(f"| tokenizer | {tok.get('name')} (sha256 {str(tok.get('sha256'))[:12]}) |")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())
        ]
    where = card.get("repo_id") or CARD_PLACEHOLDER
    how = "" if card.get("repo_id") else f" ({CARD_PLACEHOLDER}: this checkpoint's folder or Hub repo id)"
    lines += ["", "## Use", "", f"With vimtool installed{how}:", "", "```python"]
    lines += _usage(model_type, meta.get("config") or {}, where) + ["```", ""]
    if card.get("train"):
        lines += ["## Training configuration", "", "```json", json.dumps(_jsonable(card["train"]), indent=2), "```", ""]
    return "\n".join(lines)


def _usage(model_type: str, config: dict, where: str) -> list[str]:
    """The card's Python snippet (a test runs it against a real checkpoint of each family)."""
    if model_type == "vitvqgan":
        size = int(config.get("image_size") or 256)
        return [
            "import vimtool",
            "from PIL import Image",
            "",
            f'tokenizer = vimtool.load_tokenizer("{where}")',
            f'ids = tokenizer.encode([Image.new("RGB", ({size}, {size}), "red")])  # (1, tokens) ids',
            "images = tokenizer.decode(ids)  # PIL images",
        ]
    if model_type == "dual_encoder":  # a reranker: `vimtool sample --rerank clip:FOLDER`, or as a scorer
        size = int(config.get("image_size") or 32)
        return [
            "from PIL import Image",
            "from vimtool.sampling.clip import ClipScorer",
            "",
            f'scorer = ClipScorer.load("{where}")',
            f'images = [Image.new("RGB", ({size}, {size}), c) for c in ("red", "blue")]',
            'scores = scorer(images, ["a red circle", "a red circle"])  # cosine similarities, higher = closer',
        ]
    if model_type == "parti":
        call = 'pipe.generate("a red circle top left", n=4, guidance=3.0, rerank=8, seed=0)'
    elif model_type == "vim":
        label = "0" if int(config.get("num_classes") or 0) > 0 else "None"
        call = f"pipe.generate({label}, n=4, seed=0)  # a class id, or None: unconditional"
    else:
        return ["from vimtool.checkpoint import load_model", "", f'model = load_model("{where}")']
    return ["import vimtool", "", f'pipe = vimtool.load("{where}")', f"images = {call}", 'images[0].save("sample.png")']


def write_pointer(link: str | Path, target: str | Path) -> None:
    """Point `link` at folder `target` atomically: a relative symlink, or a text file where symlinks fail."""
    link, target = Path(link), Path(target)
    rel = os.path.relpath(target, link.parent)
    if link.is_dir() and not link.is_symlink():
        raise VimtoolError(f"{link} is a real folder, expected a pointer; move it away and retry")
    with atomic_path(link) as tmp:
        try:
            os.symlink(rel, tmp, target_is_directory=True)
        except (OSError, NotImplementedError):  # e.g. Windows without developer mode: a pointer file instead
            tmp.write_text(rel + "\n", encoding="utf-8")


def read_pointer(link: str | Path) -> Path | None:
    """The folder a pointer (symlink or text file) names, or None if `link` does not exist."""
    link = Path(link)
    if link.is_symlink():
        return link.resolve()
    if link.is_file():
        text = link.read_text(encoding="utf-8").strip()
        return (link.parent / text).resolve() if text else None
    return None


# ---------------------------------------------------------------------------------------------- loading
def resolve(spec: str | Path, revision: str | None = None) -> Path:
    """A checkpoint spec -> the local folder that holds its config.json (downloading from the Hub if needed)."""
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_file():
            target = read_pointer(p)
            if target is None or not target.is_dir():
                raise VimtoolError(
                    f"{p} is neither a checkpoint folder nor a pointer to one; give a folder with {CONFIG_FILE}"
                )
            p = target
        if not (p / CONFIG_FILE).exists():
            for name in POINTERS:  # a run folder: its finished model, else its newest checkpoint
                target = read_pointer(p / name)
                if target is not None and (target / CONFIG_FILE).exists():
                    return target
            raise VimtoolError(
                f"{p / CONFIG_FILE} is missing: {p} is not a vimtool checkpoint folder (nor a run folder with 'final' or 'latest')"
            )
        return p
    if isinstance(spec, str) and _REPO_ID.match(spec):
        return _from_hub(spec, revision)
    raise VimtoolError(
        f"checkpoint {spec!s} not found: give a checkpoint folder, a run folder, or a Hub repo id like org/name"
    )


def _from_hub(repo_id: str, revision: str | None) -> Path:
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            # read the cache location now, so a changed HF_HUB_CACHE is honoured without re-importing the Hub client
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            ignore_patterns=[f"{STATE_DIR}/*"],
            library_name="vimtool",
            library_version=__version__,
        )
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = (
            "it is not in the local Hub cache and HF_HUB_OFFLINE is set"
            if offline
            else "check the repo id, revision and your network/token"
        )
        raise VimtoolError(
            f"no local folder '{repo_id}' and the Hub repo '{repo_id}' (revision {revision or 'main'}) could not be fetched: {hint} ({type(e).__name__})"
        ) from e
    return Path(folder)


def read_config(spec: str | Path, revision: str | None = None) -> dict[str, Any]:
    """The parsed config.json of a checkpoint (local folder, run folder or Hub repo id)."""
    return _read_config_file(resolve(spec, revision))


def _read_config_file(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise VimtoolError(f"{path} is missing; the checkpoint is incomplete (re-save or re-download it)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VimtoolError(f"{path} is corrupt ({e}); re-save or re-download the checkpoint") from None
    if not isinstance(meta, dict) or "model_type" not in meta or not isinstance(meta.get("config"), dict):
        raise VimtoolError(f"{path} lacks 'model_type'/'config'; it was not written by vimtool.checkpoint.save_model")
    return meta


def load_model(spec: str | Path, revision: str | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint: config.json -> registry -> config dataclass -> model <- weights."""
    folder = resolve(spec, revision)
    meta = _read_config_file(folder)
    model_type = meta["model_type"]
    try:
        config = build(get_config_class(model_type), meta["config"])
    except ConfigError as e:
        raise VimtoolError(f"{folder / CONFIG_FILE}: config does not fit this vimtool's {model_type} ({e})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise VimtoolError(f"{weights} is missing; the checkpoint is incomplete (re-save or re-download it)")
    # the config's sizes are checked against the weights file's header before the model is allocated
    model = build_for_weights(get_model_class(model_type), config, weights, folder / CONFIG_FILE)
    try:
        missing, unexpected = st_load_model(model, str(weights), strict=False, device=str(map_location))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise VimtoolError(
            f"{weights} is corrupt or does not match its config.json ({' '.join(str(e).split())[:200]}); re-save or re-download it"
        ) from None
    if missing or unexpected:
        raise VimtoolError(
            f"{weights} does not match the {model_type} built from config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}); re-save or re-download it"
        )
    model.eval()
    return model


# ------------------------------------------------------------------------------------ tokenizer pairing
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _find_key(tree: Any, names: tuple[str, ...]) -> Any:
    """First value under any of `names`, searching nested dicts breadth-first (configs nest sub-configs)."""
    queue = [tree]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            for n in names:
                if n in node and node[n] is not None:
                    return node[n]
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def tokenizer_identity(folder: str | Path, name: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """{"name", "sha256" (of model.safetensors), "codebook_size", "grid": [h, w], "image_size"} of a tokenizer.

    The sha256 is the identity; the rest is what a stage-2 model must agree on (vocabulary and token grid).
    """
    path = resolve(folder, revision)
    meta = _read_config_file(path)
    cfg = meta["config"]
    # top-level keys first (a tokenizer may record them as `extra`), then its config (sub-configs included);
    # never other extras: a stage-2 checkpoint's "tokenizer" entry must not make it look like a tokenizer
    codebook = meta.get("codebook_size") or _find_key(cfg, ("codebook_size", "num_codes", "n_codes"))
    image_size = meta.get("image_size") or _find_key(cfg, ("image_size", "resolution"))
    grid = meta.get("grid") or _find_key(cfg, ("grid",))
    if grid is None and image_size is not None:
        patch = _find_key(cfg, ("patch_size", "patch"))
        if patch:
            grid = [int(image_size) // int(patch)] * 2
    if codebook is None or grid is None:
        raise VimtoolError(
            f"{path / CONFIG_FILE} has no codebook_size/grid: {folder} does not look like a tokenizer checkpoint"
        )
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise VimtoolError(f"{weights} is missing; the tokenizer checkpoint is incomplete")
    if isinstance(grid, int):
        grid = [grid, grid]
    return {
        "name": name or str(folder),
        "sha256": sha256_file(weights),
        "codebook_size": int(codebook),
        "grid": [int(g) for g in grid],
        "image_size": int(image_size) if image_size is not None else None,
    }


def check_pairing(stage2_config: dict[str, Any], identity: dict[str, Any]) -> None:
    """Raise unless the tokenizer `identity` is the one the stage-2 checkpoint was trained on.

    `stage2_config` is a stage-2 config.json dict (holding "tokenizer": identity) or the identity itself.
    A checkpoint that records no tokenizer (e.g. trained on synthetic tokens) cannot be checked: warning.
    """
    recorded = stage2_config if "sha256" in stage2_config else stage2_config.get("tokenizer")
    if not recorded:
        log.warning(
            "this checkpoint records no tokenizer identity; cannot check it was trained with %s", identity.get("name")
        )
        return

    def describe(t: dict) -> str:
        grid = "x".join(str(g) for g in t.get("grid") or [])
        return f"{t.get('name')} (sha256 {str(t.get('sha256'))[:12]}, {t.get('codebook_size')} codes, grid {grid})"

    same = recorded.get("sha256") == identity.get("sha256")
    fits = recorded.get("codebook_size") == identity.get("codebook_size") and list(recorded.get("grid") or []) == list(
        identity.get("grid") or []
    )
    if not (same and fits):
        raise VimtoolError(
            f"tokenizer mismatch: the checkpoint was trained with tokenizer {describe(recorded)} but got {describe(identity)}; "
            "pass the tokenizer it was trained with (the checkpoint's tokenizer/ folder, or config.json 'tokenizer_path') "
            "or retrain stage 2 on this one"
        )


@dataclasses.dataclass(frozen=True)
class TokenizerOrigin:
    """Where a stage-2 checkpoint being saved takes its image tokenizer from (`find_tokenizer`).

    folder      a local tokenizer folder, to embed as tokenizer/ (`embed_tokenizer`)
    revision    the Hub commit of a tokenizer recorded by repo id (config.json "tokenizer_revision")
    Both None: the recorded tokenizer was not found; the checkpoint then needs `--tokenizer` to decode.
    """

    folder: Path | None = None
    revision: str | None = None

    def extra(self) -> dict[str, str]:
        """What config.json records beside the identity ("tokenizer_revision" for a Hub tokenizer)."""
        return {"tokenizer_revision": self.revision} if self.revision else {}


def find_tokenizer(path: str | None, sha256: str) -> TokenizerOrigin:
    """The image tokenizer a stage-2 run trains on (its recorded path or Hub repo id), checked against `sha256`.

    A local folder is embedded into every checkpoint; a Hub one is pinned to the commit it resolves to (no second
    copy of its weights on the Hub). Not found, or other weights than the recorded ones: a warning, no origin."""
    where = Path(path).expanduser() if path else None
    try:
        if where is not None and where.exists():
            folder, hub = resolve(where), False
        elif path and _REPO_ID.match(path):
            folder, hub = _from_hub(path, None), True
        else:
            raise VimtoolError(f"{path!r} is neither a local folder nor a Hub repo id")
    except VimtoolError as e:
        log.warning("image tokenizer %s not found (%s); the checkpoint will need --tokenizer to decode", path, e)
        return TokenizerOrigin()
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or sha256_file(weights) != sha256:
        log.warning("image tokenizer %s is not the one the shards record (sha256 %s); not embedded", path, sha256[:12])
        return TokenizerOrigin()
    if hub:  # huggingface_hub lays a commit out as .../snapshots/<commit>/
        return TokenizerOrigin(revision=folder.name if folder.parent.name == "snapshots" else None)
    return TokenizerOrigin(folder=folder)


def embed_tokenizer(folder: str | Path, tokenizer: str | Path) -> Path:
    """Put the tokenizer checkpoint `tokenizer` into the stage-2 checkpoint `folder` as tokenizer/ (config.json +
    model.safetensors; hard links where the filesystem allows, so no extra disk) atomically; returns tokenizer/."""
    folder, source = Path(folder), resolve(tokenizer)
    dest = folder / TOKENIZER_DIR
    with atomic_dir(dest) as tmp:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            src = (source / name).resolve()  # a Hub cache file is a symlink into blobs/
            try:
                os.link(src, tmp / name)
            except OSError:  # another filesystem, or links not allowed
                shutil.copy2(src, tmp / name)
        default_modes(tmp)
    return dest


def save_stage2(model: nn.Module, folder: str | Path, card: dict | None = None, extra: dict | None = None) -> Path:
    """`save_model` for a stage-2 model whose `extra` records its image tokenizer ({"tokenizer": identity,
    "tokenizer_path": where}, data/shards.py `tokenizer_record`), made self-contained: a local tokenizer is
    embedded as tokenizer/, a Hub one pinned to its commit (`find_tokenizer`, looked up at every save so a
    tokenizer moved mid-run is noticed)."""
    extra = dict(extra or {})
    sha256 = (extra.get("tokenizer") or {}).get("sha256")
    origin = find_tokenizer(extra.get("tokenizer_path"), sha256) if sha256 else TokenizerOrigin()
    folder = save_model(model, folder, card, {**extra, **origin.extra()})
    if origin.folder is not None:
        embed_tokenizer(folder, origin.folder)
    return folder


def paired_tokenizer_location(stage2_folder: str | Path | None, meta: dict[str, Any]) -> tuple[str, str | None]:
    """(path or repo id, revision) of the image tokenizer a stage-2 checkpoint decodes with: its embedded
    tokenizer/ first, then the recorded path or Hub repo id (+ commit); ("", None) when it records none."""
    if stage2_folder is not None and (Path(stage2_folder) / TOKENIZER_DIR / CONFIG_FILE).is_file():
        return str(Path(stage2_folder) / TOKENIZER_DIR), None
    path = meta.get("tokenizer_path") or (meta.get("tokenizer") or {}).get("name") or ""
    return str(path), meta.get("tokenizer_revision")


# ------------------------------------------------------------------------------------------------- Hub
def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
) -> str:
    """Upload a model checkpoint folder (without `state/`) to the Hub repo `repo_id`; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = resolve(folder)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            ignore_patterns=[f"{STATE_DIR}/*", ".tmp-*"],
            commit_message=commit_message or f"Upload {folder.name} with vimtool {__version__}",
            revision=revision,
        )
    except Exception as e:
        raise VimtoolError(
            f"push to Hub repo '{repo_id}' failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); check `hf auth login` and the repo name"
        ) from e
    url = str(getattr(info, "commit_url", info))
    log.info("pushed %s to https://huggingface.co/%s (%s)", folder, repo_id, url)
    return url
