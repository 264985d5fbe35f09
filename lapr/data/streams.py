"""Token streams: corpus -> int32 token array -> training, eval and calibration windows.

A corpus is tokenised once into a flat int32 array (documents joined with EOS
after each), saved as .npy, and then cut into windows:

- `random_windows`: a fixed-seed [n, seq_len] batch, e.g. calibration data for pruning;
- `train_batches`: an endless stream of such batches for training;
- `eval_windows`: contiguous non-overlapping windows covering the stream, for perplexity;
- `unigram_baseline`: the perplexity of add-one smoothed unigram frequencies, the
  floor a trained model must beat.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from lapr.data.registry import read_bytes, read_text

PIECE_CHARS = 1_000_000
# Cut where a word ends (non-space, then whitespace): the GPT-2 pre-tokenizer regex
# always splits there and has no look-behind, so piecewise byte-level BPE encoding
# equals whole-text encoding (tested).
_CUT = re.compile(r"(?<=\S)(?=\s)")


def gutenberg_books(split: str = "train") -> list[str]:
    """The books of `gutenberg_<split>`, cut at the byte offsets listed in the manifest."""
    data = read_bytes(f"gutenberg_{split}")
    rows = [r.split(b"\t") for r in read_bytes("gutenberg_manifest").split(b"\n")[1:] if r]
    books, pos = [], 0
    for row in rows:  # split on b"\n" only: some source paths contain a literal \r
        if row[0].decode() == split:
            n = int(row[4])
            books.append(data[pos:pos + n].decode("utf-8").rstrip("\n"))
            pos += n
    if pos != len(data):
        raise ValueError(f"gutenberg_{split}: manifest covers {pos} of {len(data)} bytes")
    return books


def documents(name: str, max_chars: int | None = None) -> list[str]:
    """Documents of a shipped text corpus: books for Gutenberg, else the whole file."""
    docs = gutenberg_books(name.split("_", 1)[1]) if name in ("gutenberg_train", "gutenberg_valid") \
        else [read_text(name)]
    if max_chars is None:
        return docs
    out, left = [], max_chars
    for doc in docs:
        if left <= 0:
            break
        out.append(doc[:left])
        left -= len(doc)
    return out


def split_pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """Cut `text` into pieces of about `size` chars at word ends (whole text if none)."""
    pieces, start = [], 0
    while len(text) - start > size:
        m = _CUT.search(text, start + size)
        if m is None:
            break
        pieces.append(text[start:m.start()])
        start = m.start()
    pieces.append(text[start:])
    return pieces


def encode_documents(docs: list[str], tokenizer, piece_chars: int = PIECE_CHARS,
                     batch_size: int = 8, progress: bool = True) -> np.ndarray:
    """Tokenise documents (in ~piece_chars pieces, batched) and join them with EOS after each."""
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos_token")
    jobs = [(d, p) for d, doc in enumerate(docs) for p in split_pieces(doc, piece_chars)]
    ids: list[list[int]] = []
    bar = tqdm(total=sum(len(p) for _, p in jobs), unit="char", unit_scale=True,
               desc="tokenising", disable=not progress)
    for i in range(0, len(jobs), batch_size):
        batch = [p for _, p in jobs[i:i + batch_size]]
        ids.extend(tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"])
        bar.update(sum(len(p) for p in batch))
    bar.close()
    parts = []
    for j, (d, _) in enumerate(jobs):
        parts.append(np.asarray(ids[j], dtype=np.int32))
        if j + 1 == len(jobs) or jobs[j + 1][0] != d:
            parts.append(np.array([eos], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def encode_corpus(name: str, tokenizer, max_chars: int | None = None,
                  progress: bool = True) -> np.ndarray:
    """Token ids (int32) of a shipped corpus, EOS after each document (Gutenberg: each book)."""
    return encode_documents(documents(name, max_chars), tokenizer, progress=progress)


def save_tokens(path: str | Path, tokens: np.ndarray) -> Path:
    """Write tokens as .npy atomically (lapr.provenance.atomic_path)."""
    from lapr.provenance import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(tokens))  # a file object: np.save would append .npy to a name
    return path


def load_tokens(path: str | Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None)


def _check_len(tokens, seq_len: int) -> int:
    if seq_len < 1 or len(tokens) < seq_len:
        raise ValueError(f"need seq_len >= 1 and at least seq_len={seq_len} tokens, got {len(tokens)}")
    return len(tokens)


def _windows_at(tokens, starts, seq_len: int):
    import torch

    idx = starts.numpy()[:, None] + np.arange(seq_len, dtype=np.int64)
    return torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))


def random_windows(tokens, n: int, seq_len: int, seed: int):
    """[n, seq_len] LongTensor of windows at uniform random starts (torch.Generator(seed))."""
    import torch

    high = _check_len(tokens, seq_len) - seq_len + 1
    g = torch.Generator().manual_seed(seed)
    return _windows_at(tokens, torch.randint(0, high, (n,), generator=g), seq_len)


def train_batches(tokens, batch_size: int, seq_len: int, seed: int) -> Iterator:
    """Endless [batch_size, seq_len] LongTensor batches of random windows; one generator per call."""
    import torch

    high = _check_len(tokens, seq_len) - seq_len + 1
    g = torch.Generator().manual_seed(seed)
    while True:
        yield _windows_at(tokens, torch.randint(0, high, (batch_size,), generator=g), seq_len)


def eval_windows(tokens, seq_len: int, max_windows: int | None = None):
    """[n, seq_len] LongTensor: tokens[0 : n*seq_len] in order, n = len // seq_len (tail dropped)."""
    import torch

    n = _check_len(tokens, seq_len) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    return torch.from_numpy(np.asarray(tokens[: n * seq_len]).astype(np.int64).reshape(n, seq_len))


def unigram_baseline(train_tokens, eval_tokens, vocab_size: int) -> dict:
    """Add-one smoothed unigram model of train_tokens, scored on eval_tokens.

    p(t) = (count(t) + 1) / (N + V); nll = mean over eval tokens of -ln p(t) (nats);
    ppl = exp(nll).
    """
    train = np.asarray(train_tokens).astype(np.int64)
    ev = np.asarray(eval_tokens).astype(np.int64)
    if len(ev) == 0:
        raise ValueError("eval_tokens is empty")
    for label, arr in (("train", train), ("eval", ev)):
        if len(arr) and (arr.min() < 0 or arr.max() >= vocab_size):
            raise ValueError(f"{label} tokens outside [0, {vocab_size})")
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    logp = np.log(counts + 1.0) - math.log(len(train) + vocab_size)
    nll = float(-logp[ev].mean())
    return {"nll": nll, "ppl": math.exp(nll), "tokens": int(len(ev))}
