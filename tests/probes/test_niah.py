"""NIAH / passkey: deterministic samples of exact length, verifiable answers, greedy decoding."""
import numpy as np
import pytest
import torch

from lapr.data import load_tokenizer
from lapr.models import build_model
from lapr.probes import niah


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gutenberg-bpe-8k")


@pytest.fixture(scope="module")
def filler(tok):
    return niah.filler_tokens(tok, "gutenberg_valid", max_chars=20_000)


def test_deterministic_and_exact_length(tok, filler):
    a = niah.make_samples(tok, filler, [64, 100], [0.0, 0.5, 1.0], 3, seed=5)
    b = niah.make_samples(tok, filler, [64, 100], [0.0, 0.5, 1.0], 3, seed=5)
    assert [(s.prompt_ids, s.key) for s in a] == [(s.prompt_ids, s.key) for s in b]
    c = niah.make_samples(tok, filler, [64, 100], [0.0, 0.5, 1.0], 3, seed=6)
    assert [s.key for s in a] != [s.key for s in c]
    assert len(a) == 2 * 3 * 3
    assert all(len(s.prompt_ids) == s.context_len for s in a)


def test_needle_where_promised_and_answer_verifiable(tok, filler):
    q_len = len(tok(niah.QUESTION, add_special_tokens=False)["input_ids"])
    for s in niah.make_samples(tok, filler, [80], [0.0, 0.25, 1.0], 2, seed=0, digits=6):
        needle = tok.decode(s.prompt_ids[s.needle_start:s.needle_start + s.needle_len])
        assert needle == niah.NEEDLE.format(key=s.key)
        assert len(s.key) == 6 and s.key.isdigit() and s.key[0] != "0"
        F = s.context_len - s.needle_len - q_len
        assert s.needle_start == round(s.depth * F)
        assert tok.decode(s.prompt_ids[-q_len:]) == niah.QUESTION
        assert tok.decode(s.answer_ids).strip() == s.key
        # the haystack is a contiguous window of the corpus
        hay = s.prompt_ids[:s.needle_start] + s.prompt_ids[s.needle_start + s.needle_len:-q_len]
        f = np.asarray(filler)
        starts = np.flatnonzero(f[:len(f) - len(hay) + 1] == hay[0])
        assert any((f[i:i + len(hay)] == hay).all() for i in starts)


def test_grid_validation(tok, filler):
    with pytest.raises(ValueError, match="too short"):
        niah.make_samples(tok, filler, [10], [0.5], 1)
    with pytest.raises(ValueError, match="depths"):
        niah.make_samples(tok, filler, [64], [1.5], 1)
    with pytest.raises(ValueError, match="lengths"):
        niah.make_samples(tok, filler, [], [0.5], 1)
    with pytest.raises(ValueError, match="n must"):
        niah.make_samples(tok, filler, [64], [0.5], 0)


def test_is_correct():
    assert niah.is_correct(" 71432.", "71432")
    assert niah.is_correct("71432 is", "71432")
    assert not niah.is_correct(" 7143", "71432")
    assert not niah.is_correct(" the 71432", "71432")


def test_evaluate_rows_and_greedy(tok, filler):
    model = build_model(dict(family="gated_deltanet", hidden_size=32, num_layers=1, num_heads=2, head_k_dim=16,
                             head_v_dim=16, vocab_size=len(tok), mlp_ratio=2), seed=0).eval()
    samples = niah.make_samples(tok, filler, [48], [0.0, 1.0], 2, seed=0)
    df = niah.evaluate(model, tok, samples, batch_size=4)
    assert len(df) == 4 and set(df["correct"]) <= {True, False}
    cells = niah.cell_table(df)
    assert list(cells["n"]) == [2, 2] and cells["accuracy"].between(0, 1).all()
    # greedy with the cache == argmax of full re-forwards
    x = torch.tensor([samples[0].prompt_ids])
    gen = niah.greedy(model, x, 3)
    seq = x
    with torch.no_grad():
        for _ in range(3):
            seq = torch.cat([seq, model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(gen, seq[:, -3:])
    # teacher forcing: a sample's scores do not depend on the batch (right padding is inert)
    alone = niah.teacher_forced(model, samples[:1])[0]
    assert alone == pytest.approx(niah.teacher_forced(model, samples)[0], rel=1e-5)
