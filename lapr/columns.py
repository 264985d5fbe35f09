"""Column schemas of the per-checkpoint result tables: one list per result kind, imported by the
stage that writes the file and by lapr.report.results that reads it, so the two cannot drift.
(No torch or pandas here: the report reads results without importing any stage.)"""

# results/<p>/eval/<model>/<method>/<ratio>.csv (lapr.eval.stage)
EVAL = ["model", "method", "ratio", "task", "metric", "value", "stderr", "n_docs", "limit"]
# results/<p>/heads/<model>/<method>/<budget>.csv (lapr.heads.stage)
HEAD_PRUNING = ["model", "method", "budget", "task", "metric", "value", "state_bytes", "state_bytes_full",
                "state_saved_frac", "application", "context_len", "depth", "n", "heads_removed",
                "removed_low", "removed_high", "scope", "alpha"]
# results/<p>/mqar/eval/<family>.csv (lapr.probes.mqar_stage)
MQAR = ["model", "family", "kind", "method", "ratio", "d_k", "heads_removed", "removed_low", "removed_high",
        "noise", "metric", "value", "n", "state_bytes", "state_bytes_full", "state_saved_frac", "application"]
# Files the same stages write beside a result table, named <ratio or budget><suffix>: not result
# tables (the heads stage's one row per NIAH sample, and every stage's provenance).
SIDECARS = {"heads": (".niah.csv", ".provenance.json"), "eval": (".provenance.json",)}

__all__ = ["EVAL", "HEAD_PRUNING", "MQAR", "SIDECARS"]
