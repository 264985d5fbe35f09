"""Every local lm-eval task runs offline end to end on a tiny random model (a few documents each)."""
import math

import pytest

from lapr.eval import PAPER_A_TASKS, evaluate, task_names
from lapr.eval.harness import local_tasks, tidy

METRICS = {
    "lapr_wikitext": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
    "lapr_lambada_openai": {"perplexity", "acc"},
    "lapr_piqa": {"acc", "acc_norm"},
    "lapr_hellaswag": {"acc", "acc_norm"},
    "lapr_winogrande": {"acc"},
    "lapr_arc_easy": {"acc", "acc_norm"},
    "lapr_arc_challenge": {"acc", "acc_norm"},
}
# documents in the full shipped split (lm-eval's n-samples "original")
SIZES = {"lapr_wikitext": 62, "lapr_lambada_openai": 5153, "lapr_piqa": 1838, "lapr_hellaswag": 10042,
         "lapr_winogrande": 1267, "lapr_arc_easy": 2376, "lapr_arc_challenge": 1172}


def test_local_tasks_are_paper_a():
    assert local_tasks() == set(PAPER_A_TASKS) == set(METRICS)
    assert task_names("paper_a") == list(PAPER_A_TASKS)
    assert task_names("lapr_piqa, paper_a") == ["lapr_piqa"] + [t for t in PAPER_A_TASKS if t != "lapr_piqa"]
    with pytest.raises(ValueError):
        task_names([])


def test_all_local_tasks_run_offline(tiny_model, tokenizer):
    df = evaluate(tiny_model, tokenizer, "paper_a", limit=2, batch_size=8, max_length=64)
    assert list(df.columns) == ["task", "metric", "value", "stderr", "n_docs", "limit"]
    assert df.attrs["max_length"] == 64 and df.attrs["tasks"] == list(PAPER_A_TASKS)
    assert df.attrs["n_docs_total"] == SIZES
    for task, metrics in METRICS.items():
        rows = df[df.task == task]
        assert set(rows.metric) == metrics, task
        assert (rows.n_docs == 2).all() and (rows.limit == 2).all()
        assert all(math.isfinite(v) for v in rows.value), rows
    acc = df[df.metric.isin(["acc", "acc_norm"])]
    assert acc.value.between(0, 1).all()
    assert acc.stderr.notna().all()                                    # closed-form stderr of a mean
    ppl = df[(df.task == "lapr_lambada_openai") & (df.metric == "perplexity")]
    assert ppl.stderr.notna().all() and (ppl.value > 1).all()          # bootstrapped
    wt = df[df.task == "lapr_wikitext"].set_index("metric").value
    # a random 8k-vocab model: bits per byte ~ log2(8192) / bytes-per-token, well above 1
    assert 1 < wt["bits_per_byte"] < 13
    assert wt["byte_perplexity"] == pytest.approx(2 ** wt["bits_per_byte"], rel=1e-9)


def test_tidy_handles_missing_stderr_and_filters():
    results = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A",
                                 "exact,strict": 0.25, "exact_stderr,strict": 0.1}},
               "n-samples": {"t": {"original": 10, "effective": 4}}}
    df = tidy(results, limit=4).set_index("metric")
    assert df.loc["acc", "value"] == 0.5 and math.isnan(df.loc["acc", "stderr"])
    assert df.loc["exact,strict", "stderr"] == 0.1
    assert (df.n_docs == 4).all() and (df.limit == 4).all()
