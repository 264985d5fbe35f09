"""Needle-in-a-haystack / passkey retrieval over filler text from the shipped corpora.

One sample of context length L (tokens) and depth d in [0, 1]:

    [filler[:p]] [needle] [filler[p:]] [question]        total exactly L tokens
    needle   = " The pass key is 71432. Remember it. 71432 is the pass key."
    question = " What is the pass key? The pass key is"
    answer   = " 71432"

The key is a random `digits`-digit number (no leading zero); the filler is a contiguous window of
the tokenised corpus (EOS between documents, as in pretraining) at a random start, of length
F = L - len(needle) - len(question); the needle goes after p = round(d * F) filler tokens.
Everything comes from np.random.default_rng([seed, L, depth index, sample index]), so samples
are reproducible and cells independent.

Scoring per sample:
- `correct` (greedy): the model greedily continues the prompt for len(answer tokens) + 2 tokens;
  the leading run of digits of the decoded continuation (after stripping spaces) must start
  with the key. This is the passkey accuracy reported per (L, depth) cell.
- `token_accuracy` (teacher-forced): fraction of the answer tokens that are the argmax given the
  prompt and the answer tokens before them; `answer_logprob`: their summed log-probability.
  Both are informative where small models never get the whole key right.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lapr.eval.stage import CORPUS_NAMES
from lapr.settings import Settings, setting

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"


@dataclass
class Niah(Settings):
    """The NIAH grid of `lapr heads` (the config's `heads.niah`)."""

    SECTION = "heads.niah"
    lengths: list[int] = setting([256, 512], "context lengths in tokens", min_items=1, items=dict(low=8))
    depths: list[float] = setting([0.0, 0.5, 1.0], "needle depths (0: start, 1: end)", min_items=1,
                                  items=dict(low=0, high=1))
    n: int = setting(8, "samples per (length, depth) cell", low=1)
    digits: int = setting(5, "digits of the pass key", low=1, high=12)
    corpus: str = setting("gutenberg_valid", "the haystack's shipped corpus", choices=CORPUS_NAMES)
    max_chars: int | None = setting(400_000, "characters of the corpus tokenised (null: all)", low=1)
    batch_size: int = setting(8, low=1)

    def check(self, where: str) -> None:
        self.depths = [float(d) for d in self.depths]


@dataclass
class NIAHSample:
    context_len: int
    depth: float
    index: int
    key: str
    prompt_ids: list[int]
    answer_ids: list[int]
    needle_start: int       # token index of the first needle token in prompt_ids
    needle_len: int


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def filler_tokens(tokenizer, corpus: str = "gutenberg_valid", max_chars: int | None = 400_000) -> np.ndarray:
    """Token ids of a shipped corpus (lapr.data.encode_corpus), the haystack."""
    from lapr.data import encode_corpus

    return encode_corpus(corpus, tokenizer, max_chars=max_chars, progress=False)


def check_grid(lengths, depths, n) -> tuple[list[int], list[float], int]:
    if not lengths or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0 for x in lengths):
        raise ValueError(f"niah.lengths must be a non-empty list of positive integers, got {lengths!r}")
    if not depths or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d <= 1 for d in depths):
        raise ValueError(f"niah.depths must be a non-empty list of numbers in [0, 1], got {depths!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"niah.n must be a positive integer, got {n!r}")
    return [int(x) for x in lengths], [float(d) for d in depths], int(n)


def make_samples(tokenizer, filler: np.ndarray, lengths, depths, n: int, seed: int = 0,
                 digits: int = 5) -> list[NIAHSample]:
    """n samples per (length, depth) cell (see module doc)."""
    lengths, depths, n = check_grid(lengths, depths, n)
    if not 1 <= digits <= 12:
        raise ValueError(f"niah.digits must be in [1, 12], got {digits}")
    question = _encode(tokenizer, QUESTION)
    filler = np.asarray(filler)
    out = []
    for L in lengths:
        for di, depth in enumerate(depths):
            for i in range(n):
                rng = np.random.default_rng([seed, L, di, i])
                key = str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))
                needle = _encode(tokenizer, NEEDLE.format(key=key))
                F = L - len(needle) - len(question)
                if F < 1:
                    raise ValueError(f"niah context length {L} too short for needle ({len(needle)} tokens) + "
                                     f"question ({len(question)} tokens)")
                if len(filler) < F:
                    raise ValueError(f"filler corpus has {len(filler)} tokens, context length {L} needs {F}")
                start = int(rng.integers(0, len(filler) - F + 1))
                hay = filler[start:start + F].tolist()
                p = int(round(depth * F))
                prompt = hay[:p] + needle + hay[p:] + question
                out.append(NIAHSample(L, depth, i, key, prompt, _encode(tokenizer, " " + key), p, len(needle)))
    return out


def is_correct(text: str, key: str) -> bool:
    """The continuation's leading digits (spaces stripped) start with the key."""
    m = re.match(r"\s*(\d+)", text)
    return bool(m) and m.group(1).startswith(key)


@torch.no_grad()
def greedy(model, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy continuation of equal-length prompts [B, L] -> [B, new_tokens], with fla's cache."""
    from fla.models.utils import Cache

    cache = Cache()
    out = model(input_ids=prompts, use_cache=True, past_key_values=cache)
    tokens = [out.logits[:, -1].argmax(-1)]
    for _ in range(new_tokens - 1):
        out = model(input_ids=tokens[-1][:, None], use_cache=True, past_key_values=out.past_key_values)
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, 1)


@torch.no_grad()
def teacher_forced(model, samples: list[NIAHSample]) -> list[tuple[float, float]]:
    """(token accuracy, answer log-prob) per sample; right-padded batch (causal: padding is inert)."""
    device = next(model.parameters()).device
    seqs = [s.prompt_ids + s.answer_ids for s in samples]
    width = max(len(x) for x in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, x in enumerate(seqs):
        ids[b, :len(x)] = torch.tensor(x)
    logp = torch.log_softmax(model(input_ids=ids.to(device)).logits.float(), -1).cpu()
    out = []
    for b, s in enumerate(samples):
        P, A = len(s.prompt_ids), len(s.answer_ids)
        lp = logp[b, P - 1:P - 1 + A]
        tgt = torch.tensor(s.answer_ids)
        out.append((float((lp.argmax(-1) == tgt).float().mean()), float(lp.gather(1, tgt[:, None]).sum())))
    return out


@torch.no_grad()
def evaluate(model, tokenizer, samples: list[NIAHSample], batch_size: int = 8, progress: bool = False) -> pd.DataFrame:
    """One row per sample: context_len, depth, index, key, continuation, correct, token_accuracy, answer_logprob."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    rows = []
    groups: dict[int, list[NIAHSample]] = {}
    for s in samples:
        groups.setdefault(len(s.prompt_ids), []).append(s)
    try:
        for _, group in sorted(groups.items()):
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                new = max(len(s.answer_ids) for s in chunk) + 2
                prompts = torch.tensor([s.prompt_ids for s in chunk], dtype=torch.long, device=device)
                gen = greedy(model, prompts, new).cpu()
                forced = teacher_forced(model, chunk)
                for s, g, (acc, lp) in zip(chunk, gen, forced):
                    text = tokenizer.decode(g.tolist(), skip_special_tokens=True)
                    rows.append({"context_len": s.context_len, "depth": s.depth, "index": s.index, "key": s.key,
                                 "continuation": text, "correct": is_correct(text, s.key),
                                 "token_accuracy": acc, "answer_logprob": lp})
                if progress:
                    print(f"[niah] L={chunk[0].context_len}: {len(rows)}/{len(samples)}", flush=True)
    finally:
        model.train(was)
    return pd.DataFrame(rows)


def cell_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (context_len, depth) cell: accuracy, token_accuracy, answer_logprob, n."""
    g = per_sample.groupby(["context_len", "depth"], sort=True)
    return g.agg(accuracy=("correct", "mean"), token_accuracy=("token_accuracy", "mean"),
                 answer_logprob=("answer_logprob", "mean"), n=("correct", "size")).reset_index()


__all__ = ["Niah", "NEEDLE", "QUESTION", "NIAHSample", "cell_table", "check_grid", "evaluate",
           "filler_tokens", "greedy", "is_correct", "make_samples", "teacher_forced"]
