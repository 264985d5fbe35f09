"""Token streams: encoding, windows, batches, unigram baseline."""
import math

import numpy as np
import pytest
import torch

from lapr.data import (documents, encode_documents, eval_windows, gutenberg_books, load_tokens,
                       random_windows, read_text, save_tokens, train_batches, unigram_baseline)
from lapr.data.hub import encode_hub_dataset
from lapr.data.streams import split_pieces


@pytest.fixture
def stream():
    return np.random.default_rng(0).integers(0, 1000, size=10_007).astype(np.int32)


def _is_slice(tokens, row):
    starts = np.flatnonzero(tokens[: len(tokens) - len(row) + 1] == int(row[0]))
    return any(np.array_equal(tokens[s:s + len(row)], row.numpy()) for s in starts)


def test_random_windows_deterministic_per_seed(stream):
    a = random_windows(stream, n=16, seq_len=64, seed=3)
    assert a.shape == (16, 64) and a.dtype == torch.long
    assert torch.equal(a, random_windows(stream, n=16, seq_len=64, seed=3))
    assert not torch.equal(a, random_windows(stream, n=16, seq_len=64, seed=4))
    assert all(_is_slice(stream, row) for row in a)


def test_random_windows_edges():
    tokens = np.arange(8, dtype=np.int32)
    assert torch.equal(random_windows(tokens, 3, 8, seed=0), torch.arange(8).repeat(3, 1))
    with pytest.raises(ValueError, match="seq_len=9"):
        random_windows(tokens, 1, 9, seed=0)


def test_train_batches(stream):
    it1, it2 = train_batches(stream, 4, 32, seed=1), train_batches(stream, 4, 32, seed=1)
    b1 = [next(it1) for _ in range(5)]
    assert all(torch.equal(x, next(it2)) for x in b1)
    assert not torch.equal(b1[0], b1[1])  # the stream moves on
    assert b1[0].shape == (4, 32) and all(_is_slice(stream, row) for row in b1[2])


def test_eval_windows_cover_stream(stream):
    w = eval_windows(stream, 100)
    assert w.shape == (100, 100)  # 10_007 // 100; the 7-token tail is dropped
    assert np.array_equal(w.reshape(-1).numpy(), stream[:10_000])
    assert torch.equal(eval_windows(stream, 100, max_windows=3), w[:3])


def test_unigram_baseline_hand_computed():
    # counts over V=3: [2, 1, 0], N=3 -> p = [3/6, 2/6, 1/6]; eval [0, 2] -> nll = (ln 2 + ln 6) / 2
    out = unigram_baseline(np.array([0, 0, 1]), np.array([0, 2]), vocab_size=3)
    assert out["nll"] == pytest.approx(math.log(12) / 2, rel=1e-12)
    assert out["ppl"] == pytest.approx(math.sqrt(12), rel=1e-12)
    assert out["tokens"] == 2
    with pytest.raises(ValueError, match="outside"):
        unigram_baseline(np.array([0, 3]), np.array([0]), vocab_size=3)


def test_unigram_uniform_limit(stream):
    # no training data: every token has p = 1/V, so ppl = V exactly
    assert unigram_baseline(np.array([], dtype=np.int64), stream, 1000)["ppl"] == pytest.approx(1000, rel=1e-9)


def test_save_load_tokens(tmp_path, stream):
    path = save_tokens(tmp_path / "sub" / "ids.npy", stream)
    assert [p.name for p in path.parent.iterdir()] == ["ids.npy"]
    back = load_tokens(path)
    assert back.dtype == np.int32 and np.array_equal(back, stream)
    assert np.array_equal(load_tokens(path, mmap=True)[:10], stream[:10])


def test_pieces_and_piecewise_encoding_equals_whole(bpe8k):
    text = read_text("wikitext2_test_raw")[:60_000]
    pieces = split_pieces(text, 5_000)
    assert "".join(pieces) == text and len(pieces) > 5
    whole = bpe8k(text, add_special_tokens=False).input_ids
    ids = encode_documents([text, "tail"], bpe8k, piece_chars=5_000, progress=False)
    eos = bpe8k.eos_token_id
    tail = bpe8k("tail", add_special_tokens=False).input_ids
    assert ids.dtype == np.int32
    assert ids.tolist() == whole + [eos] + tail + [eos]


def test_gutenberg_books_follow_manifest():
    valid = gutenberg_books("valid")
    assert len(valid) == 15
    assert "\n\n".join(valid) + "\n\n" == read_text("gutenberg_valid")
    assert [len(d) for d in documents("gutenberg_valid", max_chars=70_000)] == [len(valid[0]), 70_000 - len(valid[0])]


def test_hub_offline_error(bpe8k):
    with pytest.raises(RuntimeError, match="offline"):
        encode_hub_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "text", bpe8k, 1000)
