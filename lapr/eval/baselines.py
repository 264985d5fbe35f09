"""Chance-level references for the evaluation metrics: add-one smoothed unigram models.

A trained LM must beat a unigram model of its own training text with its own
tokenizer; these helpers give that floor for the two perplexities the suite
reports, on exactly the tokens the model is scored on:

* `lambada_unigram`: LAMBADA perplexity as lm-eval defines it (exp of minus the
  mean, over passages, of the log-probability of the target word's tokens), the
  target tokens split off as lm-eval's `HFLM._encode_pair` does;
* for token streams use `lapr.data.unigram_baseline` (same smoothing).

p(t) = (count(t) + 1) / (N + V), counts from `train_tokens` (as lapr.data.unigram_baseline).
"""
from __future__ import annotations

import math

import numpy as np


def unigram_logprobs(train_tokens, vocab_size: int) -> np.ndarray:
    """log p(t) for every token id of an add-one smoothed unigram model of `train_tokens`."""
    train = np.asarray(train_tokens).astype(np.int64)
    if len(train) and (train.min() < 0 or train.max() >= vocab_size):
        raise ValueError(f"train tokens outside [0, {vocab_size})")
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    return np.log(counts + 1.0) - math.log(len(train) + vocab_size)


def lambada_pair(text: str) -> tuple[str, str]:
    """(context, continuation) of a LAMBADA passage, as the lambada_openai templates build them."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def continuation_tokens(tokenizer, context: str, continuation: str) -> list[int]:
    """Tokens lm-eval scores for `continuation` after `context` (HFLM._encode_pair, causal)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    return whole[len(tokenizer.encode(context)):]


def lambada_unigram(tokenizer, logprobs: np.ndarray, texts: list[str]) -> dict:
    """Unigram LAMBADA perplexity over `texts` (passages), comparable with lm-eval's `perplexity`.

    Returns {"perplexity", "nll" (mean per passage, nats), "docs", "tokens"}.
    """
    if not texts:
        raise ValueError("no LAMBADA passages given")
    nll, tokens = [], 0
    for text in texts:
        ids = continuation_tokens(tokenizer, *lambada_pair(text))
        nll.append(-float(logprobs[ids].sum()))
        tokens += len(ids)
    mean = float(np.mean(nll))
    return {"perplexity": math.exp(mean), "nll": mean, "docs": len(texts), "tokens": tokens}
