"""The Parti text tokenizer (vimtool/data/text.py): specials, truncation, Unicode, save/load."""

import logging

import pytest
import torch

from vimtool.data import shapes
from vimtool.data.text import TextTokenizer
from vimtool.errors import VimtoolError

CAPTIONS = shapes.captions(300, "train")


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(CAPTIONS, vocab_size=400, max_length=16)


def test_vocabulary_is_small_for_shapes_captions_and_starts_with_specials(tok):
    assert 260 <= tok.vocab_size <= 400  # 256 bytes + specials + a few merges for the ~40 caption words
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    ids = tok.encode("a small red circle in the top left")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert len(ids) < 12  # whole words were merged into single pieces
    assert tok.decode(ids) == "a small red circle in the top left"


def test_empty_prompt_is_just_the_specials(tok):
    assert tok.encode("") == [tok.bos_id, tok.eos_id]
    assert tok.encode(None) == [tok.bos_id, tok.eos_id]
    ids, mask = tok.encode_batch(["", "a red circle"])
    assert mask[0].tolist()[:3] == [True, True, False] and ids[0, 2] == tok.pad_id


def test_long_prompt_is_truncated_to_the_limit_with_a_warning(tok, caplog):
    long = " ".join(["a blue square above a yellow triangle"] * 10)
    with caplog.at_level(logging.WARNING, logger="vimtool.data.text"):
        ids = tok.encode(long)
    assert len(ids) == 16 and ids[-1] == tok.eos_id
    assert any("truncated" in r.message for r in caplog.records)
    batch, mask = tok.encode_batch([long, "a red circle"])
    assert batch.shape == (2, 16) and mask[0].all() and not mask[1].all()


def test_non_ascii_prompts_round_trip_without_unknown_tokens(tok):
    text = "ein grüner Kreis, 赤い三角形 🙂"
    tok = TextTokenizer(tok.tk, max_length=128)  # room for the many byte pieces of unseen characters
    ids = tok.encode(text)
    assert tok.unk_id not in ids  # byte-level: every character falls back to its UTF-8 bytes
    assert tok.decode(ids) == text.lower()  # lower-cased by the normalizer
    assert tok.encode("A RED Circle") == tok.encode("a red circle")


def test_save_and_load_give_the_same_ids(tok, tmp_path):
    path = tok.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.load(tmp_path, max_length=16)
    for t in ["", "a red circle", "ünïcødé", CAPTIONS[5]]:
        assert again.encode(t) == tok.encode(t)
    assert path.name == "tokenizer.json" and not list(tmp_path.glob(".*tmp*"))


def test_unigram_kind_also_trains():
    uni = TextTokenizer.train(CAPTIONS, vocab_size=120, kind="unigram")
    ids, mask = uni.encode_batch(["a red circle", "a blue square above a yellow triangle"])
    assert ids.dtype == torch.long and mask.sum(1).tolist()[0] >= 4


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(VimtoolError, match="byte-level minimum"):
        TextTokenizer.train(CAPTIONS, vocab_size=100)
    with pytest.raises(VimtoolError, match="no captions"):
        TextTokenizer.train([None, ""])
    with pytest.raises(VimtoolError, match="missing"):
        TextTokenizer.load(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(VimtoolError, match="not a readable"):
        TextTokenizer.load(tmp_path / "bad.json")
