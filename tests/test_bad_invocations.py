"""Bad invocations of the command line end in ONE line: `error: ...` (or click's usage error), exit code != 0,
never a traceback. A table of paths, kinds, numbers, recipes, `--set` keys, prompts, data specs and checkpoints
(wrong family, corrupt, crafted sizes), run in-process with Typer's CliRunner; every input fails fast (nothing
trains), so the whole table takes seconds."""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest
from typer.testing import CliRunner
from vim_fixtures import make_shards, make_tokenizer

from vimtool.checkpoint import save_model, tokenizer_identity, write_pointer
from vimtool.commands import app
from vimtool.data.shards import TokenizerIdentity, tokenizer_record
from vimtool.models.vim import VIM, size_config

W: dict[str, str] = {}  # name -> path, filled by the `world` fixture before any case runs


def _crafted(root, vim, name, edit):
    """A copy of the VIM checkpoint whose config.json (or weights) `edit` spoils."""
    folder = root / name
    shutil.copytree(vim, folder)
    meta = json.loads((folder / "config.json").read_text())
    edit(meta, folder)
    (folder / "config.json").write_text(json.dumps(meta))
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_invocations")
    tok, other = make_tokenizer(root / "tok"), make_tokenizer(root / "tok2", seed=1)
    make_shards(root / "shards", tok)
    make_shards(root / "shards2", other)
    record = tokenizer_record(TokenizerIdentity.from_dict(tokenizer_identity(tok)), str(tok))
    vim = save_model(VIM(size_config("micro", vocab_size=64, grid=(4, 4), num_classes=3)), root / "vim", extra=record)
    (root / "afile.txt").write_text("hello\n")
    (root / "empty").mkdir()
    (root / "bad.yaml").write_text("a: [1,\n")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "config.json").write_text("{not json")
    W.update(
        root=str(root), tok=str(tok), tok2=str(other), vim=str(vim), S=str(root / "shards"),
        S2=str(root / "shards2"), file=str(root / "afile.txt"), empty=str(root / "empty"), out=str(root / "out"),
        png=str(root / "out.png"), bad_yaml=str(root / "bad.yaml"), corrupt=str(root / "corrupt"),
    )  # fmt: skip
    spoil = {
        "neg": lambda m, d: m["config"].update(dim=-32),
        "wide": lambda m, d: m["config"].update(dim=4096),
        "huge": lambda m, d: m["config"].update(dim=65536),
        "heads": lambda m, d: m["config"].update(heads=3),
        "depth0": lambda m, d: m["config"].update(depth=0),
        "classes": lambda m, d: m["config"].update(num_classes=2_000_000_000),
        "grid": lambda m, d: m["config"].update(grid=[100000, 100000]),
        "strdim": lambda m, d: m["config"].update(dim="abc"),
        "vocab": lambda m, d: m["config"].update(vocab_size=10**9),
        "kind": lambda m, d: m.update(model_type="nope"),
        "noweights": lambda m, d: (d / "model.safetensors").unlink(),
        "garbage": lambda m, d: (d / "model.safetensors").write_bytes(b"\x00" * 100),
    }
    W.update({name: _crafted(root, vim, name, edit) for name, edit in spoil.items()})
    run = root / "run"  # a run folder whose checkpoint has no training state: --resume must say so
    save_model(VIM(size_config("micro", vocab_size=64, grid=(4, 4), num_classes=3)), run / "checkpoints" / "s1")
    write_pointer(run / "latest", run / "checkpoints" / "s1")
    W["run"] = str(run)


LM = ["train-lm", "--shards", "{S}", "--size", "micro", "--out-dir", "{out}"]
SAMPLE = ["sample", "--out", "{out}", "-c"]
TOKD = ["tokenize-dataset", "--out", "{out}", "--tokenizer"]
NO_VGG = ["--set", "loss.perceptual=0", "--out-dir", "{out}"]  # reach the data check (no VGG weights offline)
CASES = {
    # paths
    "shards missing": ["train-lm", "--shards", "/nonexistent/shards"],
    "shards not parquet": ["train-lm", "--shards", "{file}"],
    "shards folder empty": ["train-lm", "--shards", "{empty}"],
    "no shards": ["train-lm"],
    "out-dir is a file": [*LM[:-1], "{file}", "--steps", "1", "--batch-size", "8"],
    "out-dir under a file": [*LM[:-1], "{file}/run", "--steps", "1", "--batch-size", "8"],
    "recipe missing": ["train-lm", "--config", "/nonexistent.yaml"],
    "recipe does not parse": ["train-lm", "--config", "{bad_yaml}"],
    "recipe of unknown format": ["train-lm", "--config", "{file}"],
    "two stdin lists": ["train-lm", "--shards", "-", "--val-shards", "-"],
    "resume without state": [*LM[:-1], "{run}", "--resume", "--batch-size", "8"],
    # --set keys, kinds and numbers
    "unknown --set key": [*LM, "--set", "model.nope=1"],
    "--set of a wrong type": [*LM, "--set", "train.steps=abc"],
    "--set without =": [*LM, "--set", "foo"],
    "negative lr": [*LM, "--lr", "-1"],
    "unknown size": [*LM, "--size", "huge"],
    "unknown conditional": [*LM, "--conditional", "maybe"],
    "zero steps": [*LM, "--steps", "0"],
    "zero batch": [*LM, "--batch-size", "0"],
    "val fraction above 1": [*LM, "--val-fraction", "1.5"],
    "heads not dividing width": [*LM, "--set", "model.heads=3"],
    "negative width": [*LM, "--set", "model.dim=-4"],
    "zero depth": [*LM, "--set", "model.depth=0"],
    "vocab set by hand": [*LM, "--set", "model.vocab_size=5"],
    "unknown optimizer": [*LM, "--set", "train.optimizer=sgd"],
    "unknown schedule": [*LM, "--set", "train.schedule=linear"],
    "num_classes below labels": [*LM, "--set", "num_classes=1"],
    "num_classes absurd": [*LM, "--set", "num_classes=2000000000"],
    "dropout above 1": [*LM, "--set", "model.dropout=2"],
    "ema above 1": [*LM, "--set", "train.ema=1.5"],
    "batch not divisible": [*LM, "--batch-size", "8", "--set", "train.grad_accum=3"],
    "unknown tracker": [*LM, "--trackers", "foo"],
    # shards of the wrong kind
    "val shards of another tokenizer": ["train-lm", "--shards", "{S}", "--val-shards", "{S2}"],
    "shards of two tokenizers": ["train-lm", "--shards", "{S}", "--shards", "{S2}"],
    "t2i on uncaptioned shards": ["train-t2i", "--shards", "{S}", "--size", "micro", "--out-dir", "{out}"],
    "t2i unknown size": ["train-t2i", "--shards", "{S}", "--size", "nope"],
    "t2i cond-drop above 1": ["train-t2i", "--shards", "{S}", "--cond-drop", "1.5"],
    "t2i without shards": ["train-t2i"],
    "reranker without data": ["train-reranker"],
    "reranker unknown text tower": ["train-reranker", "--data", "shapes:n=8", "--text-tower", "nope", "--out-dir", "{out}"],
    "reranker one eval image": ["train-reranker", "--data", "shapes:n=8", "--set", "eval_images=1", "--out-dir", "{out}"],
    "reranker unknown data": ["train-reranker", "--data", "nope_dataset", "--out-dir", "{out}"],
    "reranker negative hard negatives": ["train-reranker", "--data", "shapes:n=8", "--hard-negatives", "-1", "--out-dir", "{out}"],
    # data specs
    "shapes size not a number": ["train-tokenizer", "--data", "shapes:size=abc", *NO_VGG],
    "shapes size negative": ["train-tokenizer", "--data", "shapes:size=-4", *NO_VGG],
    "shapes n not a number": ["train-tokenizer", "--data", "shapes:n=abc", *NO_VGG],
    "unknown dataset": ["train-tokenizer", "--data", "nope_dataset", *NO_VGG],
    "data folder missing": ["train-tokenizer", "--data", "/nonexistent/folder", *NO_VGG],
    "unknown tokenizer size": ["train-tokenizer", "--data", "shapes", "--size", "ZZ"],
    "image size not a patch multiple": ["train-tokenizer", "--data", "shapes", "--image-size", "30"],
    "unknown quantizer": ["train-tokenizer", "--data", "shapes", "--quantizer", "fancy"],
    "preview size not a number": ["data", "preview", "--data", "shapes:size=abc", "--out", "{png}"],
    "preview zero images": ["data", "preview", "--data", "shapes", "--n", "0", "--out", "{png}"],
    "preview unknown split": ["data", "preview", "--data", "shapes", "--split", "nope", "--out", "{png}"],
    "preview out under a file": ["data", "preview", "--data", "shapes:n=4", "--n", "4", "--out", "{file}/x.png"],
    # tokenize-dataset
    "tokenize without arguments": ["tokenize-dataset"],
    "tokenize with a VIM": [*TOKD, "{vim}", "--data", "shapes"],
    "tokenize with a missing tokenizer": [*TOKD, "/nonexistent", "--data", "shapes"],
    "tokenize bad data spec": [*TOKD, "{tok}", "--data", "shapes:size=abc"],
    "tokenize zero rows per shard": [*TOKD, "{tok}", "--data", "shapes", "--rows-per-shard", "0"],
    "tokenize negative shifts": [*TOKD, "{tok}", "--data", "shapes", "--shifts", "-1"],
    "tokenize out is a file": ["tokenize-dataset", "--out", "{file}", "--tokenizer", "{tok}", "--data", "shapes:n=4"],
    "tokenize with a crafted tokenizer": [*TOKD, "{neg}", "--data", "shapes"],
    # sample: checkpoints of the wrong family, missing, corrupt, crafted; numbers; prompts
    "sample a tokenizer": [*SAMPLE, "{tok}"],
    "sample a missing checkpoint": [*SAMPLE, "/nonexistent"],
    "sample without checkpoint": ["sample", "--out", "{out}"],
    "sample corrupt config": [*SAMPLE, "{corrupt}"],
    "sample negative width": [*SAMPLE, "{neg}"],
    "sample width 4096 on small weights": [*SAMPLE, "{wide}"],
    "sample width 65536": [*SAMPLE, "{huge}"],
    "sample heads not dividing": [*SAMPLE, "{heads}"],
    "sample zero depth": [*SAMPLE, "{depth0}"],
    "sample 2e9 classes": [*SAMPLE, "{classes}"],
    "sample huge grid": [*SAMPLE, "{grid}"],
    "sample width not a number": [*SAMPLE, "{strdim}"],
    "sample huge vocab": [*SAMPLE, "{vocab}"],
    "sample unknown model type": [*SAMPLE, "{kind}"],
    "sample without weights": [*SAMPLE, "{noweights}"],
    "sample garbage weights": [*SAMPLE, "{garbage}"],
    "sample another tokenizer": [*SAMPLE, "{vim}", "--tokenizer", "{tok2}"],
    "sample negative temperature": [*SAMPLE, "{vim}", "--temperature", "-1"],
    "sample top-p above 1": [*SAMPLE, "{vim}", "--top-p", "2"],
    "sample negative top-k": [*SAMPLE, "{vim}", "--top-k", "-3"],
    "sample class out of range": [*SAMPLE, "{vim}", "--class", "99"],
    "sample prompt to a VIM": [*SAMPLE, "{vim}", "--prompt", "a red circle"],
    "sample zero samples": [*SAMPLE, "{vim}", "-n", "0"],
    "sample zero batch": [*SAMPLE, "{vim}", "--batch-size", "0"],
    "sample unknown token format": [*SAMPLE, "{vim}", "--token-format", "xyz"],
    "sample unknown dtype": [*SAMPLE, "{vim}", "--decode-dtype", "float8"],
    "sample unknown device": [*SAMPLE, "{vim}", "--device", "tpu"],
    "sample negative guidance": [*SAMPLE, "{vim}", "--guidance-scale", "-5"],
    "sample unknown --set key": [*SAMPLE, "{vim}", "--set", "nope=1"],
    # probe, eval-fid, eval-tokenizer
    "probe a tokenizer": ["probe", "-c", "{tok}", "--shards", "{S}", "--out", "{out}"],
    "probe shards of another tokenizer": ["probe", "-c", "{vim}", "--shards", "{S2}", "--out", "{out}"],
    "probe block out of range": ["probe", "-c", "{vim}", "--shards", "{S}", "--block", "99", "--out", "{out}"],
    "probe unknown baseline": ["probe", "-c", "{vim}", "--shards", "{S}", "--baselines", "zzz", "--out", "{out}"],
    "fid one missing set": ["eval-fid", "/nonexistent", "--out", "{out}"],
    "fid list of missing images": ["eval-fid", "{file}", "{file}", "--out", "{out}"],
    "fid zero images": ["eval-fid", "{empty}", "--n", "0", "--out", "{out}"],
    "eval-tokenizer a VIM": ["eval-tokenizer", "--tokenizer", "{vim}", "--data", "shapes", "--out", "{out}"],
    "eval-tokenizer negative count": ["eval-tokenizer", "--tokenizer", "{tok}", "--data", "shapes", "--num-images", "-1"],
    # usage errors (click's own message)
    "unknown command": ["nope"],
    "unknown option": ["sample", "--nope"],
    "zero threads": ["--threads", "0", "sample"],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_logging():
    # The CLI's logging.basicConfig binds a handler to the stderr of the invocation that configured it; CliRunner
    # swaps stderr per invocation, so each case starts with no handler (as every real process does).
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    yield
    root.handlers[:] = saved


def test_the_table_is_large():
    assert len(CASES) >= 50


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_invocation_ends_in_one_error_line(name):
    args = [a.format(**W) for a in CASES[name]]
    t0 = time.process_time()  # CPU seconds: parallel test workers stretch the wall clock, not the work done
    res = CliRunner().invoke(app, args)
    took = time.process_time() - t0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code != 0, f"{name}: exit 0\n{res.output}"
    assert res.exception is None or isinstance(res.exception, SystemExit), f"{name}: {res.exception!r}"
    assert "Traceback" not in res.output
    assert lines and lines[-1].startswith(("error: ", "Error: ")), f"{name}: {res.output}"
    assert took < 20, f"{name} took {took:.1f} CPU-s: bad input must fail fast"
