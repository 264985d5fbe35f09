"""Direct perplexity of a causal LM, without lm-eval.

`strided_perplexity` is sliding-window perplexity of one token stream (as in
Hugging Face's "Perplexity of fixed-length models", except that every token is
scored exactly once and never without its window's context). `word_perplexity_direct`
recomputes what lm-eval's `loglikelihood_rolling` + wikitext `word_perplexity`
report, with its own windowing code, so the two can be checked against each other:

* each document is detokenized (stock wikitext_detokenizer) and encoded with the
  tokenizer's defaults, as `HFLM.tok_encode` does;
* it is cut into windows of `max_length` predicted tokens; the first window is
  preceded by the prefix token (BOS, else EOS), every later full window is
  conditioned on the one token before it, and the last partial window is
  right-aligned so it sees up to `max_length` tokens of context
  (lm_eval.utils.get_rolling_token_windows + make_disjoint_window, context_len=1);
* word perplexity = exp(-sum loglik / sum words), words counted as
  len(re.split(r"\\s+", page)) on the page before detokenization; byte perplexity
  and bits per byte likewise per UTF-8 byte.

`token_perplexity` is the fast metric for pruning curves: a token stream (e.g.
`lapr.data.encode_corpus`) cut into non-overlapping windows of `seq_len`, each
scored independently and batched (the first token of a window is context only),
i.e. the `eval_windows` + mean-NLL recipe of lapr.train.pretrain, so the numbers
are comparable with a checkpoint's metrics.json.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch

from lapr.eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def _window_logprobs(model, inputs: Sequence[int], targets: Sequence[int]) -> float:
    """Sum of log p(targets) for the last len(targets) positions of one forward pass on `inputs`.

    `targets[i]` is predicted at input position len(inputs) - len(targets) + i.
    """
    ids = torch.tensor([list(inputs)], dtype=torch.long, device=_device(model))
    logits = model(ids).logits[0, -len(targets):].double()
    logp = torch.log_softmax(logits, dim=-1)
    tgt = torch.tensor(list(targets), dtype=torch.long, device=logp.device)
    return float(logp.gather(1, tgt[:, None]).sum())


def strided_perplexity(model, token_ids: Sequence[int] | torch.Tensor, max_length: int,
                       stride: int | None = None, prefix_token: int | None = None) -> dict:
    """Sliding-window perplexity of one token stream.

    Every forward pass sees at most `max_length` tokens. The first window scores
    all the tokens it predicts; each later window is slid `stride` tokens further
    (default `max_length`: disjoint windows) and scores only its last `stride`
    new tokens, conditioned on the up-to-`max_length` tokens before them; the
    last window scores the remainder with full context. So every token is scored
    exactly once, with at least `max_length - stride` tokens of context (except
    in the first window). Without `prefix_token` the first token is context
    only; with it, it is prepended so every token of `token_ids` is scored. With
    `stride == max_length` and prefix_token = BOS (else EOS) this is exactly
    lm-eval's `loglikelihood_rolling` windowing.

    Returns {"nll": mean negative log-likelihood per scored token (nats),
    "ppl": exp(nll), "tokens": tokens scored, "nll_sum": total}.
    """
    ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
    if prefix_token is not None:
        ids = [prefix_token] + ids
    stride = max_length if stride is None else stride
    if not 0 < stride <= max_length:
        raise ValueError(f"need 0 < stride <= max_length, got stride={stride}, max_length={max_length}")
    if len(ids) < 2:
        raise ValueError("need at least two tokens (or one plus prefix_token)")
    total, done = 0.0, 1  # ids[:done] are scored or pure context; ids[0] is never a target
    end = min(max_length + 1, len(ids))
    while True:
        # targets ids[done:end], predicted from the max_length (or fewer) tokens before `end`
        total += _window_logprobs(model, ids[max(0, end - 1 - max_length):end - 1], ids[done:end])
        done = end
        if done == len(ids):
            break
        end = min(done + stride, len(ids))
    scored = len(ids) - 1
    nll = -total / scored
    return {"nll": nll, "ppl": math.exp(nll), "tokens": scored, "nll_sum": -total}


def rolling_loglikelihood(model, token_ids: Sequence[int], max_length: int, prefix_token: int) -> float:
    """log p(token_ids) scored the way lm-eval's HFLM.loglikelihood_rolling windows it."""
    ids, n = list(token_ids), len(token_ids)
    if n == 0:
        return 0.0
    first = min(max_length, n)
    total = _window_logprobs(model, [prefix_token] + ids[:first - 1], ids[:first])
    done = first
    while done < n:
        end = min(done + max_length, n)
        # Right-aligned window of max_length inputs ending just before `end`; a full window
        # thus starts one token before `done`, a short last one reaches further back.
        total += _window_logprobs(model, ids[end - max_length - 1:end - 1], ids[done:end])
        done = end
    return total


@torch.no_grad()
def token_perplexity(model, tokens, seq_len: int, batch_size: int = 8,
                     max_windows: int | None = None) -> dict:
    """Perplexity of a token stream in independent, non-overlapping windows of `seq_len`.

    tokens: 1-D ids (numpy, list or tensor); the tail that does not fill a window is
        dropped (`lapr.data.eval_windows`). Every window predicts its last seq_len - 1
        tokens from the ones before them inside the window.
    Returns {"nll": mean NLL per predicted token (nats), "ppl": exp(nll),
    "nll_stderr": standard error of the mean over windows, "ppl_stderr": ppl *
    nll_stderr (delta method), "tokens": tokens predicted, "windows": windows,
    "window_nll": summed NLL (nats) of each window, in stream order, "window_tokens":
    tokens each window predicts (seq_len - 1)}. nll == sum(window_nll) / tokens: the
    per-window sums are the units an interval is bootstrapped over (`window_samples`),
    and window i of two models on the same stream is the same text (paired units).
    """
    from lapr.data import eval_windows

    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (one context + one predicted token), got {seq_len}")
    windows = eval_windows(tokens, seq_len, max_windows=max_windows)
    device = _device(model)
    per_window = []
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size].to(device)
        logits = model(x).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                x[:, 1:].reshape(-1), reduction="none")
        per_window.append(nll.view(len(x), -1).double().sum(1).cpu())
    sums = torch.cat(per_window)
    per_token = seq_len - 1
    n_tokens = len(sums) * per_token
    # every window predicts the same number of tokens, so this token mean is also the mean of the
    # window means (the stderr's units); computed from the sums so the samples sidecar reproduces it
    nll = float(sums.sum()) / n_tokens
    w = sums / per_token
    stderr = float(w.std(unbiased=True) / math.sqrt(len(w))) if len(w) > 1 else math.nan
    ppl = math.exp(nll)
    return {"nll": nll, "ppl": ppl, "nll_stderr": stderr, "ppl_stderr": ppl * stderr,
            "tokens": int(n_tokens), "windows": int(len(w)), "window_nll": sums.tolist(),
            "window_tokens": per_token}


def window_samples(task: str, result: dict) -> list[dict]:
    """Rows of the per-unit samples sidecar (lapr.columns.SAMPLES) for one `token_perplexity` result:
    one per window, metric "ppl", value = the window's summed NLL (nats), weight = tokens it predicts,
    so exp(sum(value) / sum(weight)) == result["ppl"] (and the ratio itself == result["nll"])."""
    return [{"task": task, "metric": "ppl", "unit": i, "value": float(v), "weight": result["window_tokens"]}
            for i, v in enumerate(result["window_nll"])]


def _prefix_token(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def word_perplexity_direct(model, tokenizer, docs: Iterable[str], max_length: int) -> dict:
    """lm-eval wikitext metrics for `docs` (raw WikiText pages), computed directly.

    Returns word_perplexity, byte_perplexity, bits_per_byte (as lm-eval reports
    them) plus the totals: loglikelihood, words, bytes, tokens, docs.
    """
    prefix = _prefix_token(tokenizer)
    loglik, words, n_bytes, tokens, n_docs = 0.0, 0, 0, 0, 0
    for page in docs:
        ids = tokenizer.encode(wikitext_detokenizer({"page": page}))
        loglik += rolling_loglikelihood(model, ids, max_length, prefix)
        words += len(re.split(r"\s+", page))
        n_bytes += len(page.encode("utf-8"))
        tokens += len(ids)
        n_docs += 1
    return {"word_perplexity": math.exp(-loglik / words),
            "byte_perplexity": math.exp(-loglik / n_bytes),
            "bits_per_byte": -loglik / n_bytes / math.log(2),
            "loglikelihood": loglik, "words": words, "bytes": n_bytes, "tokens": tokens,
            "docs": n_docs}
