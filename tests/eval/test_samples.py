"""Per-unit samples (lapr.columns.SAMPLES): they reproduce every table value in closed form, acc_norm is
kept wherever stock lm-eval reports it, and token-perplexity windows pair up across models."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from lapr import columns
from lapr.eval import evaluate_units, token_perplexity, window_samples
from lapr.eval.docs import wikitext_docs
from lapr.report.results import aggregate_samples, sample_metric

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def lm_eval_run(tiny_model, tokenizer):
    # 2 wikitext pages (the first spans ~28 windows of 64 tokens), 3 docs of the others
    frames = [evaluate_units(tiny_model, tokenizer, [task], limit=limit, batch_size=8, max_length=MAX_LENGTH,
                             bootstrap_iters=0)
              for task, limit in (("lapr_wikitext", 2), ("lapr_lambada_openai", 3), ("lapr_piqa", 3),
                                  ("lapr_hellaswag", 3), ("lapr_winogrande", 3), ("lapr_arc_easy", 3))]
    return (pd.concat([f[0] for f in frames], ignore_index=True),
            pd.concat([f[1] for f in frames], ignore_index=True))


def test_lm_eval_samples_reproduce_every_table_value(lm_eval_run):
    table, samples = lm_eval_run
    assert list(samples.columns) == columns.SAMPLES
    got = aggregate_samples(samples, by=("task", "metric")).set_index(["task", "metric"])
    want = table.set_index(["task", "metric"])["value"]
    assert set(got.index) == set(want.index)          # every metric of every task has units
    for key, value in want.items():
        assert got.loc[key, "value"] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        assert got.loc[key, "units"] == table.set_index(["task", "metric"]).loc[key, "n_docs"], key
    # units are lm-eval doc ids 0..n-1, once per metric
    for (task, metric), g in samples.groupby(["task", "metric"]):
        assert sorted(g["unit"]) == list(range(len(g))), (task, metric)


def test_acc_norm_where_stock_reports_it(lm_eval_run):
    table, samples = lm_eval_run
    metrics = table.groupby("task")["metric"].apply(set).to_dict()
    for task in ("lapr_piqa", "lapr_hellaswag", "lapr_arc_easy"):
        assert {"acc", "acc_norm"} <= metrics[task], task
        s = samples[samples.task == task]
        assert set(s.metric) == {"acc", "acc_norm"} and set(s.value) <= {0.0, 1.0} and (s.weight == 1).all()
    # stock lm-eval's winogrande (partial evaluation) defines acc only; lapr_winogrande matches it
    assert metrics["lapr_winogrande"] == {"acc"}


def test_word_perplexity_units_are_page_nll_and_word_counts(lm_eval_run):
    table, samples = lm_eval_run
    s = samples[(samples.task == "lapr_wikitext")].set_index(["metric", "unit"])
    pages = wikitext_docs()["test"]["page"][:2]
    words = [len(re.split(r"\s+", p)) for p in pages]   # lm-eval's count (preprocess_wikitext.process_results)
    assert [s.loc[("word_perplexity", i), "weight"] for i in range(2)] == words and words[0] == 1093
    assert [s.loc[("byte_perplexity", i), "weight"] for i in range(2)] == [len(p.encode()) for p in pages]
    nll = np.array([s.loc[("word_perplexity", i), "value"] for i in range(2)])
    assert (nll > 0).all()                            # NLL in nats, not lm-eval's (negative) loglikelihood
    word = table.set_index(["task", "metric"]).loc[("lapr_wikitext", "word_perplexity"), "value"]
    assert word == pytest.approx(math.exp(nll.sum() / sum(words)), rel=1e-12)
    bpb = table.set_index(["task", "metric"]).loc[("lapr_wikitext", "bits_per_byte"), "value"]
    assert bpb == pytest.approx(nll.sum() / sum(len(p.encode()) for p in pages) / math.log(2), rel=1e-12)


def test_token_perplexity_windows_reproduce_and_pair(tiny_model, tokenizer):
    tokens = np.asarray(tokenizer.encode(wikitext_docs()["test"]["page"][29]), dtype=np.int32)
    res = token_perplexity(tiny_model, tokens, seq_len=32, batch_size=3)
    rows = pd.DataFrame(window_samples("ppl/x", res), columns=columns.SAMPLES)
    assert len(rows) == res["windows"] > 3 and (rows.weight == 31).all() and list(rows.unit) == list(range(len(rows)))
    assert sample_metric(rows.value.sum(), rows.weight.sum(), "ppl") == pytest.approx(res["ppl"], rel=1e-12)
    assert rows.value.sum() / rows.weight.sum() == pytest.approx(res["nll"], rel=1e-12)
    # window i is the same text whatever the batching: units pair up across runs / models
    again = token_perplexity(tiny_model, tokens, seq_len=32, batch_size=5)
    assert np.allclose(again["window_nll"], res["window_nll"], rtol=1e-5)
    # a window's value is its own NLL: recompute window 2 alone
    import torch
    x = torch.from_numpy(tokens[64:96].astype(np.int64))[None]
    with torch.no_grad():
        logits = tiny_model(x).logits[0, :-1]
    one = float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
    assert rows.value[2] == pytest.approx(one, rel=1e-5)


def test_sample_metric_transforms():
    assert sample_metric(3.0, 4.0, "acc") == 0.75
    assert sample_metric(3.0, 4.0, "word_perplexity") == pytest.approx(math.exp(0.75))
    assert sample_metric(3.0, 4.0, "bits_per_byte") == pytest.approx(0.75 / math.log(2))
    assert sample_metric(3.0, 4.0, "acc,strict-match") == 0.75
