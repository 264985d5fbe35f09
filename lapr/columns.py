"""Column schemas of the per-checkpoint result tables: one list per result kind, imported by the
stage that writes the file and by lapr.report.results that reads it, so the two cannot drift.
(No torch or pandas here: the report reads results without importing any stage.)"""

# results/<p>/eval/<model>/<method>/<ratio>.csv (lapr.eval.stage)
EVAL = ["model", "method", "ratio", "task", "metric", "value", "stderr", "n_docs", "limit"]
# results/<p>/heads/<model>/<method>/<budget>.csv (lapr.heads.stage)
HEAD_PRUNING = ["model", "method", "budget", "task", "metric", "value", "state_bytes", "state_bytes_full",
                "state_saved_frac", "application", "context_len", "depth", "n", "heads_removed",
                "removed_low", "removed_high", "scope", "alpha",
                # paper B protocol (lapr.heads.stage): norm of eq. 14 ('frobenius' | 'nuclear'), 'ok' or
                # why a row measures nothing (disjoint arms unformable), random-arm draw, lm-eval stderr
                "norm", "status", "draw", "stderr"]
# results/<p>/mqar/eval/<family>.csv (lapr.probes.mqar_stage)
MQAR = ["model", "family", "kind", "method", "ratio", "d_k", "heads_removed", "removed_low", "removed_high",
        "noise", "metric", "value", "n", "state_bytes", "state_bytes_full", "state_saved_frac", "application"]
# results/<p>/eval/<model>/<method>/<ratio>.samples.csv (lapr.eval.stage): one row per evaluation
# unit (a document of an lm-eval task, a window of a `ppl/<corpus>` task) for every metric whose table
# value is a function of a weighted mean over units, so intervals can be bootstrapped over units and
# pruned vs unpruned paired by `unit` (same task, same unit = same text). With m = sum(value) /
# sum(weight) over a (task, metric)'s rows, the table's value is SAMPLE_TRANSFORM[metric](m):
# - accuracies (acc, acc_norm, ...): value 0/1, weight 1, unit = lm-eval doc_id -> m;
# - perplexities: value = negative log-likelihood in nats (>= 0, i.e. minus lm-eval's loglikelihood),
#   weight = what the perplexity is per: predicted tokens of a window (ppl/<corpus> `ppl`), words
#   (lm-eval `word_perplexity`), UTF-8 bytes (`byte_perplexity`, `bits_per_byte`), 1 (LAMBADA
#   `perplexity`, per document) -> exp(m), or m / ln 2 for bits_per_byte.
# The table's `nll` of a ppl/<corpus> task is m of its `ppl` rows (not written twice).
SAMPLES = ["task", "metric", "unit", "value", "weight"]
SAMPLE_TRANSFORM = {"ppl": "exp", "perplexity": "exp", "word_perplexity": "exp", "byte_perplexity": "exp",
                    "bits_per_byte": "bits"}  # exp(m), m / ln 2; any other metric: m itself
# Files the same stages write beside a result table, named <ratio or budget><suffix>: not result
# tables (the heads stage's one row per NIAH sample, the eval stage's per-unit samples, and every
# stage's provenance).
SAMPLES_SUFFIX = ".samples.csv"
SIDECARS = {"heads": (".niah.csv", ".provenance.json"), "eval": (".provenance.json", SAMPLES_SUFFIX)}

__all__ = ["EVAL", "HEAD_PRUNING", "MQAR", "SAMPLES", "SAMPLES_SUFFIX", "SAMPLE_TRANSFORM", "SIDECARS"]
