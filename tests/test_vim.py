"""VIM model and `train-lm`: cached decoding, class tokens / null class, NOBLE, shards -> checkpoint, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from vim_fixtures import CLASSES, VOCAB, lm_config, make_shards, make_tokenizer, pattern_tokens

from vimtool.errors import VimtoolError
from vimtool.models.vim import SIZES, VIM, size_config


def _micro(**over) -> VIM:
    torch.manual_seed(0)
    return VIM(size_config("micro", vocab_size=VOCAB, grid=(4, 4), **over)).eval()


def test_paper_sizes_match_the_spec():
    # docs/PAPERS.md section 2: Base 24/16/1536/6144, Large 36/32/2048/8192
    assert [SIZES["base"].depth, SIZES["base"].heads, SIZES["base"].dim, SIZES["base"].mlp_dim] == [24, 16, 1536, 6144]
    assert [SIZES["large"].depth, SIZES["large"].heads, SIZES["large"].dim, SIZES["large"].mlp_dim] == [
        36,
        32,
        2048,
        8192,
    ]
    assert SIZES["base"].dropout == 0.1


def test_cached_and_uncached_logits_match():
    model = _micro(num_classes=3)
    x = torch.randint(0, VOCAB, (2, 16))
    y = torch.tensor([0, 2])
    full = model(x[:, :15], y)  # (2, 16, V)
    cache = model.new_cache(2)
    steps = [model.step(cache, None, y)] + [model.step(cache, x[:, i : i + 1]) for i in range(15)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # prefill a prefix in one call, then continue one token at a time
    cache = model.new_cache(2)
    a = model.step(cache, x[:, :6], y)
    b = model.step(cache, x[:, 6:7])
    torch.testing.assert_close(torch.cat([a, b], 1), full[:, :8], atol=1e-5, rtol=1e-5)


def test_unconditional_model_starts_from_a_learned_bos():
    model = _micro()
    assert model.start_emb.weight.shape == (1, 32)
    x = torch.randint(0, VOCAB, (3, 15))
    logits = model(x)
    assert logits.shape == (3, 16, VOCAB)
    # the first position's logits come from BOS alone: identical for every row
    torch.testing.assert_close(logits[0, 0], logits[2, 0])
    with pytest.raises(VimtoolError, match="unconditional"):
        model(x, torch.tensor([0, 1, 0]))


def test_class_token_changes_predictions_and_null_class_exists():
    model = _micro(num_classes=3)
    assert model.start_emb.weight.shape[0] == 4  # 3 classes + null
    x = torch.randint(0, VOCAB, (1, 15)).repeat(2, 1)
    logits = model(x, torch.tensor([0, 1]))
    assert not torch.allclose(logits[0], logits[1])
    null = model(x[:1], torch.tensor([3]))  # the null id is accepted (guidance rows)
    torch.testing.assert_close(null, model(x[:1], None))
    with pytest.raises(VimtoolError, match=r"class ids must be in \[0, 2\]"):
        model(x[:1], torch.tensor([4]))


def test_label_dropout_only_in_training_mode():
    model = _micro(num_classes=3, label_dropout=0.5, dropout=0.0)
    x = torch.randint(0, VOCAB, (64, 15))
    y = torch.zeros(64, dtype=torch.long)
    eval_logits = model(x, y)
    model.train()
    torch.manual_seed(1)
    train_logits = model(x, y)
    null_logits = model.eval()(x, torch.full((64,), 3))
    same_as_null = torch.isclose(train_logits[:, 0], null_logits[:, 0]).all(dim=1)
    same_as_class = torch.isclose(train_logits[:, 0], eval_logits[:, 0]).all(dim=1)
    assert (same_as_null | same_as_class).all()
    assert 10 < int(same_as_null.sum()) < 54  # ~half of 64 rows dropped to the null class


def test_too_long_input_and_bad_token_ids_are_clear_errors():
    model = _micro()
    with pytest.raises(VimtoolError, match="at most 15 input tokens"):
        model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(VimtoolError, match=r"token ids must be in \[0, 64\)"):
        model(torch.full((1, 4), VOCAB))


@pytest.mark.slow
def test_class_conditional_noble_vim_compiles_to_one_graph_with_eager_values():
    # train.compile: the eager-only checks (label and token ranges) must not split the graph, and the values and
    # gradients stay those of eager mode
    from torch._dynamo.utils import counters

    from vimtool.nn.noble import NobleConfig

    model = _micro(num_classes=10, noble=NobleConfig(rank=4))
    tokens, labels = torch.randint(0, VOCAB, (3, 15)), torch.tensor([1, 7, 10])  # 10: the null class
    breaks = sum(counters["graph_break"].values())
    outs, grads = [], []
    for run in (model, torch.compile(model)):
        out = run(tokens, labels)
        outs.append(out)
        grads.append(torch.autograd.grad(out.logsumexp(-1).sum(), list(model.parameters())))
    assert sum(counters["graph_break"].values()) == breaks
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for g_compiled, g_eager in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-5)


def test_noble_option_puts_branches_on_the_decoder():
    from vimtool.nn.noble import NobleConfig, NobleLinear, noble_param_count

    model = _micro(noble=NobleConfig(rank=4, placement=("q", "mlp_in")))
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, NobleLinear)]
    assert len(kinds) == 2 * model.config.depth
    total, noble = noble_param_count(model)
    assert 0 < noble < total


def test_train_lm_records_tokenizer_and_validation_bits(vim_world):
    ckpt = Path(vim_world["ckpt"])
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["model_type"] == "vim"
    assert meta["tokenizer"]["codebook_size"] == VOCAB and meta["tokenizer"]["grid"] == [4, 4]
    assert Path(meta["tokenizer_path"]) == Path(vim_world["tokenizer"]).resolve()
    assert meta["config"]["num_classes"] == 3 and meta["config"]["vocab_size"] == VOCAB
    records = [json.loads(line) for line in (ckpt.parent.parent / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/val_bits_per_token" in r]
    assert evals, "no validation record"
    bits = evals[-1]["eval/val_bits_per_token"]
    # uniform guessing costs log2(64) = 6 bits; the pattern shards are learnable well below that
    assert 0 < bits < 5.0
    losses = [r["loss/model"] for r in records if "loss/model" in r]
    assert losses[-1] < losses[0]


def test_unlabelled_shards_train_an_unconditional_model(tmp_path):
    from vimtool.train.lm import LMTask

    tok = make_tokenizer(tmp_path / "tok")
    shards = make_shards(tmp_path / "shards", tok, n=40, labels=False)
    task = LMTask(lm_config(shards, tmp_path / "run"))
    assert task.model_cfg.num_classes == 0
    with pytest.raises(VimtoolError, match="label on every training row"):
        LMTask(lm_config(shards, tmp_path / "run", conditional="yes"))


def _empty_shard(folder: Path, tok: Path) -> Path:
    """A valid token shard with zero rows (ShardWriter never writes one, but other tools may)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vimtool.checkpoint import tokenizer_identity
    from vimtool.data.shards import META_KEY, _schema

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "identity": tokenizer_identity(tok), "vocab_size": VOCAB, "grid": [4, 4], "rows": 0}
    table = pa.Table.from_pylist([], schema=_schema()).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, folder / "shard-r000-00000.parquet")
    return folder / "shard-r000-00000.parquet"


def test_empty_or_missing_shards_are_clear_errors(tmp_path):
    from vimtool.train.lm import LMTask

    tok = make_tokenizer(tmp_path / "tok")
    with pytest.raises(VimtoolError, match="hold no rows"):
        LMTask(lm_config([_empty_shard(tmp_path / "empty", tok)], tmp_path / "run"))
    with pytest.raises(VimtoolError, match="does not exist"):
        LMTask(lm_config([tmp_path / "nope.parquet"], tmp_path / "run"))
    with pytest.raises(VimtoolError, match="needs token shards"):
        LMTask(lm_config([], tmp_path / "run"))


def test_model_keys_that_come_from_the_shards_are_refused(tmp_path):
    from vimtool.config import ConfigError
    from vimtool.train.lm import LMTask

    tok = make_tokenizer(tmp_path / "tok")
    shards = make_shards(tmp_path / "shards", tok, n=40)
    with pytest.raises(ConfigError, match="model.vocab_size comes from the token shards"):
        LMTask(lm_config(shards, tmp_path / "run", model={"vocab_size": 10}))


@pytest.mark.slow
def test_pipe_into_train_lm_with_stdin_dash(tmp_path):
    """`... | vimtool train-lm --shards -`: paths on stdin, the checkpoint path (only) on stdout."""
    tok = make_tokenizer(tmp_path / "tok")
    shards = make_shards(tmp_path / "shards", tok, n=48)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vimtool", "train-lm", "--shards", "-", "--size", "micro", "--steps", "3", "--batch-size", "8",
           "--lr", "1e-3", "--out-dir", str(tmp_path / "run"), "--set", "train.warmup_steps=0", "--set", "train.schedule=constant",
           "--set", "train.progress=false"]  # fmt: skip
    proc = subprocess.run(
        cmd, input="\n".join(map(str, shards)) + "\n", capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and (Path(lines[0]) / "model.safetensors").is_file()
    assert json.loads((Path(lines[0]) / "config.json").read_text())["config"]["num_classes"] == 3


def test_pattern_tokens_are_class_dependent():
    toks, labs = pattern_tokens(30)
    assert toks.max() < VOCAB and set(labs.tolist()) <= set(range(CLASSES))
    a, b = toks[labs == 0], toks[labs == 1]
    assert (a == (3 * np.arange(16)) % VOCAB).mean() > 0.6 and (b == (7 + 3 * np.arange(16)) % VOCAB).mean() > 0.6


def test_checkpoint_trained_from_relative_paths_finds_its_tokenizer_from_another_cwd(tmp_path, monkeypatch):
    from vimtool.pipeline import Stage2Pipeline
    from vimtool.train.lm import train_lm

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(work)
    shards = make_shards(Path("shards"), make_tokenizer(Path("tok")), n=24)  # the shards name the tokenizer "tok"
    final = (work / train_lm(lm_config(shards, Path("run"), steps=2))).resolve()
    assert json.loads((final / "config.json").read_text())["tokenizer_path"] == str(work.resolve() / "tok")
    monkeypatch.chdir(elsewhere)
    pipe = Stage2Pipeline.load(final, device="cpu")
    assert pipe.decode(pipe.generate(classes=[1], num_samples=1).tokens).shape == (1, 3, 16, 16)
