"""Stratification contexts: shapes, determinism per seed, and the content each kind promises."""
import pytest
import torch

from lapr.data import load_tokenizer
from lapr.profiling.contexts import CONTEXTS, FILLER, NATURAL, make_context


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gutenberg-bpe-8k")


@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_shape_and_determinism(tok, name):
    ids = make_context(name, tok, T=96, batch=3, seed=0)
    assert ids.shape == (3, 96) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < len(tok)
    assert torch.equal(ids, make_context(name, tok, T=96, batch=3, seed=0))
    assert not torch.equal(ids, make_context(name, tok, T=96, batch=3, seed=1))
    assert not torch.equal(ids[0], ids[1])  # samples differ


def test_natural_text_is_text(tok):
    assert set(NATURAL) == {"gutenberg", "wikitext"}
    wiki = tok.decode(make_context("wikitext", tok, 200, 1, seed=3)[0])
    assert " @-@ " in wiki or " , " in wiki or " . " in wiki  # WikiText's tokenised style
    book = tok.decode(make_context("gutenberg", tok, 200, 1, seed=3)[0])
    assert sum(c.isalpha() for c in book) > 0.6 * len(book)


def test_attack_is_periodic_and_rare(tok):
    ids = make_context("attack", tok, 300, 1, seed=0)[0].tolist()
    period = next(p for p in range(1, 150) if ids[p:] == ids[:-p])
    assert period < 100
    text = tok.decode(ids[:period])
    assert any(c.isdigit() for c in text) and any(ord(c) > 0x2000 for c in text)


def test_needle_holds_passkey_and_question(tok):
    for seed in range(3):
        text = tok.decode(make_context("needle", tok, 300, 1, seed=seed)[0])
        assert text.endswith("What is the pass key? The pass key is")
        key = text.split("The pass key is ")[1].split(".")[0]
        assert key.isdigit() and len(key) == 5
        assert f"{key} is the pass key." in text and text.count(FILLER.split(".")[0]) >= 3


def test_errors(tok):
    with pytest.raises(ValueError, match="unknown context"):
        make_context("nope", tok, 64)
    with pytest.raises(ValueError, match="too short"):
        make_context("needle", tok, 20)
    with pytest.raises(ValueError, match="batch"):
        make_context("attack", tok, 64, batch=0)
