"""Sampling: logits processing, KV-cached vs recomputed decoding, guidance, seeds, and the `sample` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from vim_fixtures import VOCAB

from vimtool.errors import VimtoolError
from vimtool.sampling import DEFAULT_TEMPERATURE, SampleConfig
from vimtool.sampling.command import sample
from vimtool.sampling.logits import (
    SamplingParams,
    autoregressive_sample,
    filter_logits,
    guided_logits,
    row_uniforms,
    sample_from_logits,
)
from vimtool.sampling.vim import generate, generate_batch

runner = CliRunner()


# ------------------------------------------------------------------------------------------- logits
def test_top_k_one_and_temperature_zero_are_argmax():
    logits = torch.randn(8, 50)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_from_logits(logits, SamplingParams(top_k=1), g), logits.argmax(1))
    assert torch.equal(sample_from_logits(logits, SamplingParams(temperature=0.0), g), logits.argmax(1))


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    # nucleus 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it -> two tokens
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).tolist() == [[True, False, False, False]]
    draws = torch.stack(
        [sample_from_logits(logits, SamplingParams(top_k=2), torch.Generator().manual_seed(s)) for s in range(200)]
    )
    assert set(draws.flatten().tolist()) == {0, 1}


def test_sampling_follows_the_softmax_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().repeat(20000, 1)
    ids = sample_from_logits(logits, SamplingParams(), torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=3).float() / len(ids)
    assert torch.allclose(freq, probs, atol=0.015)
    hot = sample_from_logits(logits, SamplingParams(temperature=0.5), torch.Generator().manual_seed(0))
    assert (hot == 0).float().mean() > 0.7  # temperature < 1 sharpens: p0 ~ 0.36/(0.36+0.09+0.01) = 0.78


def test_guidance_formula_and_bad_params():
    c, u = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert guided_logits(c, u, 1.0).tolist() == [[2.0, 0.0]]
    assert guided_logits(c, u, 0.0).tolist() == [[1.0, 1.0]]
    assert guided_logits(c, u, 3.0).tolist() == [[4.0, -2.0]]  # u + 3 (c - u)
    for bad in (dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5), dict(guidance_scale=-1)):
        with pytest.raises(VimtoolError):
            SamplingParams(**bad)


def test_decode_loop_feeds_the_same_token_to_both_guidance_halves():
    fed = []

    def step(new):
        fed.append(new)
        return torch.zeros(4, 5)  # 2 conditional + 2 unconditional rows

    out = autoregressive_sample(
        step, 2, 3, SamplingParams(guidance_scale=2.0), torch.Generator().manual_seed(0), guided=True
    )
    assert out.shape == (2, 3) and fed[0] is None
    for new in fed[1:]:
        assert torch.equal(new[:2], new[2:])


# ------------------------------------------------------------------------------------------- VIM decoding
@pytest.fixture(scope="module")
def lm(vim_world):
    from vimtool.checkpoint import load_model

    return load_model(vim_world["ckpt"])


def test_cached_sampling_equals_uncached_token_for_token(lm):
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    u = row_uniforms(7, 0, 6, lm.num_tokens)
    for params in (SamplingParams(), SamplingParams(top_k=10, top_p=0.9), SamplingParams(guidance_scale=2.5)):
        cached = generate_batch(lm, labels, params, u, use_cache=True)
        uncached = generate_batch(lm, labels, params, u, use_cache=False)
        assert torch.equal(cached, uncached), params
    assert len(torch.unique(cached, dim=0)) > 1  # real sampling, not a constant


def test_guidance_scale_one_equals_plain_conditional_sampling(lm):
    labels = torch.tensor([0, 1, 2, 0])
    u = row_uniforms(3, 0, 4, lm.num_tokens)
    plain = generate_batch(lm, labels, SamplingParams(), u)
    doubled = generate_batch(lm, labels, SamplingParams(guidance_scale=1.0), u, guided=True)  # cond + null rows
    assert torch.equal(plain, doubled)
    strong = generate_batch(lm, labels, SamplingParams(guidance_scale=4.0), u)
    assert not torch.equal(plain, strong)


def test_top_k_one_is_greedy_decoding(lm):
    labels = torch.tensor([0, 2])
    got = generate_batch(lm, labels, SamplingParams(top_k=1), row_uniforms(0, 0, 2, lm.num_tokens))
    prefix = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(lm.num_tokens):
            nxt = lm(prefix, labels)[:, -1].argmax(-1, keepdim=True)
            prefix = torch.cat([prefix, nxt], 1)
    assert torch.equal(got, prefix)


def test_a_seed_fixes_the_samples_whatever_the_batch_size(lm):
    labels = torch.tensor([0, 1, 2, 0, 1])
    a = generate(lm, labels, 5, SamplingParams(), seed=11, batch_size=5)
    b = generate(lm, labels, 5, SamplingParams(), seed=11, batch_size=2)
    c = generate(lm, labels, 5, SamplingParams(), seed=12, batch_size=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_class_id_out_of_range_is_a_clear_error(lm):
    with pytest.raises(VimtoolError, match=r"class ids must be in \[0, 2\]"):
        generate(lm, torch.tensor([3]), 1, SamplingParams())


# ------------------------------------------------------------------------------------------- the command
def test_sample_command_writes_images_grid_tokens_and_settings(vim_world, tmp_path):
    from vimtool.commands import app

    out = tmp_path / "s"
    res = runner.invoke(app, ["sample", "-c", str(vim_world["ckpt"]), "--class", "0", "--class", "2", "-n", "3",
                              "--guidance-scale", "1.5", "--seed", "5", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 6 and all(Path(p).is_file() and p.endswith(".png") for p in lines)
    assert [Path(p).name for p in lines][:1] == ["00000_c0.png"] and lines[-1].endswith("_c2.png")
    tokens, labels = np.load(out / "tokens.npy"), np.load(out / "labels.npy")
    assert tokens.shape == (6, 16) and tokens.max() < VOCAB and labels.tolist() == [0, 0, 0, 2, 2, 2]
    record = json.loads((out / "sampling.json").read_text())
    assert record["settings"]["guidance_scale"] == 1.5 and record["settings"]["seed"] == 5
    assert (
        record["tokenizer"]["sha256"]
        == json.loads((Path(vim_world["ckpt"]) / "config.json").read_text())["tokenizer"]["sha256"]
    )
    from PIL import Image

    assert Image.open(out / "grid.png").size[0] > 16 and Image.open(lines[0]).size == (16, 16)
    # same seed again -> the same tokens
    again = sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), classes=[0, 2], num_samples=3, guidance_scale=1.5, seed=5,
                                out=str(tmp_path / "again"), device="cpu", use_cache=False))  # fmt: skip
    assert len(again) == 6 and np.array_equal(np.load(tmp_path / "again" / "tokens.npy"), tokens)


def test_sample_refuses_another_tokenizer(vim_world, tmp_path):
    with pytest.raises(VimtoolError, match="tokenizer mismatch"):
        sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), classes=[0], num_samples=1, out=str(tmp_path),
                            tokenizer=str(vim_world["other_tokenizer"]), device="cpu"))  # fmt: skip


def test_sample_cli_errors_are_one_line(vim_world, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vimtool", "sample", "-c", str(vim_world["ckpt"]), "--class", "7",
                           "--out", str(tmp_path), "--device", "cpu"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith("error: class id(s) [7] out of range")
    with pytest.raises(VimtoolError, match="--class ID"):
        sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), out=str(tmp_path), device="cpu"))
    with pytest.raises(VimtoolError, match="needs --classifier"):
        sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), classes=[0], acceptance=0.5, out=str(tmp_path)))


def test_parquet_token_output_is_a_readable_shard(vim_world, tmp_path):
    from vimtool.data.shards import load_token_table

    sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), all_classes=True, num_samples=2, out=str(tmp_path),
                        token_format="parquet", device="cpu"))  # fmt: skip
    tokens, labels, _, identity = load_token_table(sorted(tmp_path.glob("samples-*.parquet")))
    assert tokens.shape == (6, 16) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert identity.codebook_size == VOCAB


# ------------------------------------------------------------------------------------------- the pipeline
def test_pipeline_generate_equals_the_sample_command_and_its_per_class_decoding(vim_world, tmp_path):
    from PIL import Image

    from vimtool.data.transforms import to_pil
    from vimtool.pipeline import Stage2Pipeline

    sample(SampleConfig(checkpoint=str(vim_world["ckpt"]), classes=[2, 0], num_samples=3, guidance_scale=1.5, seed=5,
                        top_k=20, batch_size=2, out=str(tmp_path), device="cpu"))  # fmt: skip
    pipe = Stage2Pipeline.load(vim_world["ckpt"], device="cpu")
    gen = pipe.generate(classes=[2, 0], num_samples=3, guidance_scale=1.5, seed=5, top_k=20, batch_size=4)
    assert np.array_equal(gen.tokens.numpy(), np.load(tmp_path / "tokens.npy"))
    assert gen.labels == [2, 2, 2, 0, 0, 0] and gen.group.tolist() == [0, 0, 0, 1, 1, 1]
    # what the command computed before the pipeline existed: class k of the request draws rows (seed, 3k + j)
    params = SamplingParams(DEFAULT_TEMPERATURE["vim"], top_k=20, guidance_scale=1.5)  # the tuned default of both
    before = [
        generate(pipe.model, torch.full((3,), c), 3, params, seed=5, first_index=3 * k) for k, c in enumerate([2, 0])
    ]
    assert torch.equal(gen.tokens, torch.cat(before))
    written = np.asarray(Image.open(tmp_path / "images" / "00003_c0.png"))
    assert np.array_equal(np.asarray(to_pil(pipe.decode(gen.tokens[3:4])[0])), written)


def test_pipeline_refuses_a_tokenizer_checkpoint_and_decoding_without_its_tokenizer(vim_world):
    from vimtool.pipeline import Stage2Pipeline

    with pytest.raises(VimtoolError, match="stage-2 generation takes vim, parti"):
        Stage2Pipeline.load(vim_world["tokenizer"], device="cpu")
    pipe = Stage2Pipeline.load(vim_world["ckpt"], device="cpu", load_tokenizer=False)
    tokens = pipe.generate(num_samples=2).tokens  # unconditional (the null class) needs no image tokenizer
    assert tokens.shape == (2, 16)
    with pytest.raises(VimtoolError, match="without its image tokenizer"):
        pipe.decode(tokens)
    with pytest.raises(VimtoolError, match="prompts are for text-to-image"):
        pipe.generate(prompts=["a red circle"])
    with pytest.raises(VimtoolError, match="tokenizer mismatch"):
        Stage2Pipeline.load(vim_world["ckpt"], tokenizer=str(vim_world["other_tokenizer"]), device="cpu")
