"""lapr.eval: offline lm-eval tasks, an lm-eval runner and direct perplexity.

    from lapr.eval import evaluate, PAPER_A_TASKS
    df = evaluate(model, tokenizer, PAPER_A_TASKS, limit=100)   # tidy DataFrame
    df, per_doc = evaluate_units(model, tokenizer, PAPER_A_TASKS, limit=100)  # + one row per document
    from lapr.eval import token_perplexity, strided_perplexity, word_perplexity_direct

Task YAMLs live in `lapr/eval/tasks/` (names `lapr_*`, data via lapr.data);
differences from stock lm-eval are listed in `lapr/eval/tasks/README.md`.
"""
from lapr.eval.harness import PAPER_A_TASKS, TASKS_DIR, evaluate, evaluate_units, task_names, tidy, units
from lapr.eval.perplexity import (rolling_loglikelihood, strided_perplexity, token_perplexity, window_samples,
                                  word_perplexity_direct)

__all__ = ["PAPER_A_TASKS", "TASKS_DIR", "evaluate", "evaluate_units", "task_names", "tidy", "units",
           "rolling_loglikelihood", "strided_perplexity", "token_perplexity", "window_samples",
           "word_perplexity_direct"]
