"""The quickstart's three files stay consistent: both recipes load into their typed configs, the script parses,
and the script trains on the data the tokenizer recipe documents. Runs nothing heavy (< 1 s)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from vimtool.config import load_config
from vimtool.data.shapes import parse_holdout
from vimtool.train.reranker import RerankerRunConfig
from vimtool.train.t2i import T2IRunConfig
from vimtool.train.tokenizer import TokenizerRunConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
QUICKSTART = RECIPES / "quickstart.sh"


def _script_default(name: str) -> str:
    """The default of a `NAME="${QS_...:-DEFAULT}"` or `NAME="VALUE"` line of the quickstart script."""
    text = QUICKSTART.read_text(encoding="utf-8")
    m = re.search(rf'^{name}="([^"]*)"', text, flags=re.M)
    assert m, f"{name}= not found in {QUICKSTART}"
    value = m.group(1)
    wrapped = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)  # "${QS_SAMPLES:-16}" -> "16"
    return wrapped.group(1) if wrapped else value


def test_tokenizer_recipe_builds_the_64_token_model():
    cfg = load_config(TokenizerRunConfig, RECIPES / "parti_shapes_tokenizer.yaml")
    model = cfg.model_config()
    # 32x32 images in 4x4 patches: Parti's sequence is 8x8 = 64 image tokens, the budget the quickstart assumes
    assert (model.image_size, model.patch_size) == (32, 4)
    assert model.grid == (8, 8)
    # the tiny Parti learns 512 codes in its few steps, not 1024 or 2048 (docs/RESULTS.md, Parti section)
    assert model.codebook_size == 512
    assert cfg.train.steps == int(_script_default("TOK_STEPS"))


def test_parti_recipe_loads_and_matches_the_script():
    cfg = load_config(T2IRunConfig, RECIPES / "parti_shapes.yaml")
    assert cfg.size == "tiny"
    assert cfg.train.steps == int(_script_default("PARTI_STEPS"))


def test_script_trains_on_the_recipe_data_with_valid_holdout():
    tok = load_config(TokenizerRunConfig, RECIPES / "parti_shapes_tokenizer.yaml")
    reranker = load_config(RerankerRunConfig, RECIPES / "reranker_shapes.yaml")
    holdout = _script_default("HOLDOUT")
    data = _script_default("DATA").replace("${HOLDOUT}", holdout)
    # what reads captions (Parti via DATA, the reranker) never sees the held-out pairs; the tokenizer sees all
    # images, and so do Parti's prompt-less rows (IMAGE_DATA: the captioned set's size, every pair, no captions read)
    assert data == reranker.data and f"holdout={holdout}" in data
    assert _script_default("TOK_DATA") == tok.data and "holdout" not in tok.data
    assert _script_default("IMAGE_DATA") == data.replace(f",holdout={holdout}", "")
    # ... drawn from another split than the captioned images (other scenes: no captioned picture repeats there)
    assert _script_default("IMAGE_SPLIT") == "val" and '--split "$3"' in QUICKSTART.read_text()
    assert len(parse_holdout(holdout)) == 3
    assert 0 < float(_script_default("TEMPERATURE")) <= 1
    assert int(_script_default("SAMPLES")) >= 2  # reranking needs more than one sample per prompt


def test_quickstart_script_parses():
    done = subprocess.run(["bash", "-n", str(QUICKSTART)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
