"""Shipped tokenizers: vocab sizes, special tokens, lossless round trip, reproducible training."""
import hashlib
import random

import pytest

from lapr.data import load_tokenizer, read_text, train_tokenizer
from lapr.data.tokenizer import GUTENBERG_BPE_PATH

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ 0123456789 .,;:!?'\"()-\n\t  éàüßñ—“”€你好😀\u00a0"


def _random_texts(seed, n=50):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 200))) for _ in range(n)]


@pytest.mark.parametrize("fixture, size, eos_id", [("bpe8k", 8192, 0), ("gpt2", 50257, 50256)])
def test_vocab_and_special_tokens(request, fixture, size, eos_id):
    tok = request.getfixturevalue(fixture)
    assert len(tok) == size
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == eos_id
    assert tok.pad_token_id == eos_id


@pytest.mark.parametrize("fixture", ["bpe8k", "gpt2"])
def test_round_trip(request, fixture):
    tok = request.getfixturevalue(fixture)
    texts = _random_texts(seed=0) + ["It was the best of times,\n\nit was the worst of times."]
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
        assert all(0 <= i < len(tok) for i in ids)


def test_gpt2_known_ids(gpt2):
    assert gpt2("Hello world").input_ids == [15496, 995]


def test_compression_on_gutenberg(bpe8k, gpt2):
    # measured on all of gutenberg_valid: 0.275 (8k) and 0.260 (gpt2) tokens per byte
    text = read_text("gutenberg_valid")[:300_000]
    for tok in (bpe8k, gpt2):
        tpb = len(tok(text, add_special_tokens=False).input_ids) / len(text.encode())
        assert 0.2 < tpb < 0.3, (tok.name_or_path, tpb)


@pytest.mark.slow
def test_retraining_reproduces_shipped(tmp_path, request):
    # full retrain on 20M chars takes 10-30 s on 2 cores: run only when asked for (-m slow)
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("full tokenizer retrain; select with -m slow")
    out = train_tokenizer(tmp_path / "tok.json")
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(GUTENBERG_BPE_PATH.read_bytes()).digest()


def test_training_is_deterministic(tmp_path):
    small = [train_tokenizer(tmp_path / f"s{i}.json", vocab_size=600, max_chars=300_000) for i in range(2)]
    assert small[0].read_bytes() == small[1].read_bytes()
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(small[0])).get_vocab_size() == 600


def test_local_dir_and_offline_hub(tmp_path, bpe8k):
    bpe8k.save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert len(tok) == 8192 and tok.pad_token_id == 0
    text = _random_texts(seed=1, n=1)[0]
    assert tok(text).input_ids == bpe8k(text).input_ids
    with pytest.raises(OSError, match="no-such-org/no-such-tokenizer.*HF_HUB_OFFLINE"):
        load_tokenizer("no-such-org/no-such-tokenizer")
