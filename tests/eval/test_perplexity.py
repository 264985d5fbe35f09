"""lm-eval's wikitext perplexities equal a direct strided computation; the direct helpers agree with each other."""
import math

import numpy as np
import pytest
import torch

from lapr.eval import (evaluate, rolling_loglikelihood, strided_perplexity, token_perplexity,
                       word_perplexity_direct)
from lapr.eval.baselines import continuation_tokens, lambada_pair, lambada_unigram, unigram_logprobs
from lapr.eval.docs import lambada_docs, wikitext_docs

MAX_LENGTH = 64


@torch.no_grad()
def full_logprob(model, ids, prefix):
    """log p(ids | prefix) from one forward pass over the whole sequence (no windowing)."""
    x = torch.tensor([[prefix] + list(ids)])
    logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
    return float(logp.gather(1, x[0, 1:, None]).sum())


def test_lm_eval_wikitext_equals_direct(tiny_model, tokenizer):
    # The first page (1,093 words, ~1,500 tokens) spans ~24 windows of 64 tokens with a short last one.
    df = evaluate(tiny_model, tokenizer, ["lapr_wikitext"], limit=1, batch_size=8, max_length=MAX_LENGTH,
                  bootstrap_iters=0)
    got = df.set_index("metric").value
    page = wikitext_docs()["test"]["page"][0]
    direct = word_perplexity_direct(tiny_model, tokenizer, [page], MAX_LENGTH)
    assert direct["tokens"] > 10 * MAX_LENGTH and direct["tokens"] % MAX_LENGTH != 0
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert got[metric] == pytest.approx(direct[metric], rel=1e-5), metric
    assert direct["words"] == 1093


def test_rolling_equals_strided_and_full_context(tiny_model, tokenizer):
    ids = tokenizer.encode(wikitext_docs()["test"]["page"][28])      # a 28-word page, < 64 tokens
    bos = tokenizer.bos_token_id
    assert len(ids) < MAX_LENGTH
    # shorter than one window: windowing changes nothing
    assert rolling_loglikelihood(tiny_model, ids, MAX_LENGTH, bos) == pytest.approx(
        full_logprob(tiny_model, ids, bos), rel=1e-6)
    long_ids = tokenizer.encode(wikitext_docs()["test"]["page"][29])  # 249 words: several windows
    for L in (16, 64):
        rolled = rolling_loglikelihood(tiny_model, long_ids, L, bos)
        strided = strided_perplexity(tiny_model, long_ids, L, prefix_token=bos)
        assert strided["tokens"] == len(long_ids)
        assert -strided["nll_sum"] == pytest.approx(rolled, rel=1e-6)
    # overlapping windows (stride < max_length) see more context: still every token scored once
    s = strided_perplexity(tiny_model, long_ids, 64, stride=16, prefix_token=bos)
    assert s["tokens"] == len(long_ids) and math.isfinite(s["ppl"])
    with pytest.raises(ValueError):
        strided_perplexity(tiny_model, long_ids, 16, stride=32)


def test_token_perplexity_matches_manual(tiny_model, tokenizer):
    tokens = np.asarray(tokenizer.encode(wikitext_docs()["test"]["page"][29]), dtype=np.int32)
    res = token_perplexity(tiny_model, tokens, seq_len=32, batch_size=3)
    n = len(tokens) // 32
    with torch.no_grad():
        x = torch.from_numpy(tokens[: n * 32].astype(np.int64)).view(n, 32)
        logits = tiny_model(x).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    assert res["windows"] == n and res["tokens"] == n * 31
    assert res["nll"] == pytest.approx(float(nll), rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(res["nll"]))
    assert 0 < res["nll_stderr"] < res["nll"]
    # a random model is near-uniform over the 8k vocabulary
    assert abs(res["nll"] - math.log(len(tokenizer))) < 1.0


def test_lambada_unigram_uses_lm_eval_target_tokens(tiny_model, tokenizer):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=tiny_model, tokenizer=tokenizer, backend="causal", batch_size=1, max_length=64)
    texts = lambada_docs()["test"]["text"][:20]
    for text in texts:
        ctx, cont = lambada_pair(text)
        assert lm._encode_pair(ctx, cont)[1] == continuation_tokens(tokenizer, ctx, cont)
    # an unseen token has p = 1/(N+V); with no training tokens at all every token has p = 1/V
    logp = unigram_logprobs(np.zeros(0, dtype=np.int64), len(tokenizer))
    res = lambada_unigram(tokenizer, logp, texts)
    n_tok = sum(len(continuation_tokens(tokenizer, *lambada_pair(t))) for t in texts)
    assert res["tokens"] == n_tok and res["docs"] == 20
    assert res["nll"] == pytest.approx(n_tok / 20 * math.log(len(tokenizer)))


def test_float_logits_is_a_no_op_in_float32(tiny_model, tokenizer):
    kw = dict(limit=3, batch_size=4, max_length=MAX_LENGTH, bootstrap_iters=0)
    a = evaluate(tiny_model, tokenizer, ["lapr_lambada_openai"], float_logits=True, **kw)
    b = evaluate(tiny_model, tokenizer, ["lapr_lambada_openai"], float_logits=False, **kw)
    assert a.value.tolist() == b.value.tolist() and a.attrs["float_logits"] and not b.attrs["float_logits"]
