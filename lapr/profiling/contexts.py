"""Input contexts for head stratification: token ids [B, T], deterministic per seed.

Paper B's claim is that a head's rank group does not depend on the input. To test it, profiling
runs the same model on inputs of very different kinds:

- "gutenberg": natural prose, windows of the shipped Gutenberg *valid* books (held out from
  training); each sample is a random window of one book (book chosen with probability
  proportional to its length), starting at a word boundary.
- "wikitext": natural encyclopaedic text, random windows of WikiText-2 (raw) test.
- "attack": a repetitive, out-of-distribution input: a short random block of numbers and rare
  Unicode characters (runes, Tifinagh, astrological and typographic symbols), tiled to T tokens.
- "needle": needle-in-a-haystack (the passkey retrieval prompt of Mohtashami & Jaggi 2023): the
  filler "The grass is green. ..." repeated, a passkey sentence with a random 5-digit key
  at a random depth in [10%, 90%], and a closing question "What is the pass key? ...".

    ids = make_context("needle", tokenizer, T=2048, batch=4, seed=0)   # LongTensor [4, 2048]

Every sample of a context draws from numpy's Generator seeded with (seed, crc32(name)), so
contexts are reproducible and independent of each other.
"""
from __future__ import annotations

import functools
import zlib

import numpy as np
import torch

NATURAL = ("gutenberg", "wikitext")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
RARE_CHARS = ("ᚠᚢᚦᚨᚱᚲᚷᚹᚺᚾⵣⴰⴱⴳⴷ☿♆♅⚷⚸⸘‽¤¶§†‡‰⁂※⌘⍟⎈⏚⟁⧖ꙮ")


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


@functools.lru_cache(maxsize=4)
def _documents(corpus: str) -> tuple[str, ...]:
    from lapr.data import documents
    return tuple(documents(corpus))


def _check(T: int, batch: int) -> None:
    if int(T) < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")


def text_windows(docs, tokenizer, T: int, batch: int, rng: np.random.Generator,
                 chars_per_token: float = 6.0) -> torch.Tensor:
    """[batch, T] token windows of random spans of `docs` (a doc chosen by length, word-aligned start)."""
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError("no non-empty documents to draw windows from")
    rows = []
    for _ in range(batch):
        span = max(64, int(T * chars_per_token))
        while True:
            eligible = [d for d in docs if len(d) > span]
            pool = eligible or ["\n\n".join(docs)]
            lengths = np.array([len(d) for d in pool], dtype=np.float64)
            doc = pool[int(rng.choice(len(pool), p=lengths / lengths.sum()))]
            start = int(rng.integers(0, max(1, len(doc) - span)))
            space = doc.find(" ", start)
            start = space + 1 if 0 <= space < start + 200 else start  # begin at a word
            ids = _encode(tokenizer, doc[start:start + span])
            if len(ids) >= T:
                rows.append(ids[:T])
                break
            if not eligible or span > len(doc):
                raise ValueError(f"corpus too short for {T} tokens (got {len(ids)} from {span} chars)")
            span *= 2
    return torch.tensor(rows, dtype=torch.long)


def gutenberg(tokenizer, T: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Windows of the held-out Gutenberg valid books."""
    _check(T, batch)
    return text_windows(_documents("gutenberg_valid"), tokenizer, T, batch, _rng("gutenberg", seed))


def wikitext(tokenizer, T: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Windows of WikiText-2 (raw) test."""
    _check(T, batch)
    return text_windows(_documents("wikitext2_test_raw"), tokenizer, T, batch, _rng("wikitext", seed))


def _tile(ids: list[int], n: int) -> list[int]:
    if not ids:
        raise ValueError("tokenizer returned no tokens for a context block")
    return (ids * (n // len(ids) + 1))[:n]


def attack(tokenizer, T: int, batch: int = 1, seed: int = 0, block_items: int = 12) -> torch.Tensor:
    """A random block of numbers and rare characters (different per sample), repeated to T tokens."""
    _check(T, batch)
    rng = _rng("attack", seed)
    rows = []
    for _ in range(batch):
        items = []
        for _ in range(block_items):
            if rng.random() < 0.5:
                items.append(str(int(rng.integers(10, 100000))))
            else:
                items.append("".join(rng.choice(list(RARE_CHARS), size=int(rng.integers(1, 4)))))
        rows.append(_tile(_encode(tokenizer, " ".join(items) + " "), T))
    return torch.tensor(rows, dtype=torch.long)


def needle(tokenizer, T: int, batch: int = 1, seed: int = 0, depth=(0.1, 0.9)) -> torch.Tensor:
    """Passkey retrieval: filler, a passkey sentence at a random depth, filler, the question."""
    _check(T, batch)
    rng = _rng("needle", seed)
    filler, question = _encode(tokenizer, FILLER), _encode(tokenizer, QUESTION)
    rows = []
    for _ in range(batch):
        key = int(rng.integers(10000, 100000))
        sentence = _encode(tokenizer, NEEDLE.format(key=key))
        n_fill = T - len(sentence) - len(question)
        if n_fill < 0:
            raise ValueError(f"T={T} is too short for the needle context "
                             f"(needs {len(sentence) + len(question)} tokens without filler)")
        # the needle goes between two whole filler sentences-blocks, at a random depth
        n_before = int(float(rng.uniform(*depth)) * n_fill) // len(filler) * len(filler)
        rows.append(_tile(filler, n_before) + sentence + _tile(filler, n_fill - n_before) + question)
    return torch.tensor(rows, dtype=torch.long)


CONTEXTS = {"gutenberg": gutenberg, "wikitext": wikitext, "attack": attack, "needle": needle}


def make_context(name: str, tokenizer, T: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Token ids [batch, T] of context `name` (one of CONTEXTS)."""
    if name not in CONTEXTS:
        raise ValueError(f"unknown context {name!r}; known: {sorted(CONTEXTS)}")
    return CONTEXTS[name](tokenizer, int(T), int(batch), int(seed))


__all__ = ["CONTEXTS", "NATURAL", "make_context", "gutenberg", "wikitext", "attack", "needle",
           "text_windows"]
