"""Report: tables, figures and the claims check of one profile, read from results/ only.

    from lapr.report import collect, build_report
    res = collect("results/embedded")                       # tidy frames (results.Results)
    build_report("results/embedded", "figures/embedded")    # everything + README.md index

Modules: results (files -> frames; `collect` here is its entry point), tables (CSV / Markdown /
LaTeX), figures (PNG + PDF), claims (claims check with documented thresholds), stage (the `figures`
CLI stage). Importing this package
is cheap (no pandas / matplotlib), so a Snakefile can use the names below.
"""

# Fixed outputs of every run (lapr.report.stage.fixed_outputs lists their files).
FIGURES = ("loss_curves", "ppl_vs_ratio", "utilisation_vs_ppl", "lm_eval_bars", "head_pruning")
TABLES = ("pretrain_summary", "ppl_table", "lm_eval_table", "lm_eval_grid", "pruning_state", "recovery_table",
          "throughput_ops", "throughput_models", "rank_summary", "profile_timing", "head_pruning_table", "claims")
CSV_ONLY = ("lm_eval_grid",)


def collect(results_dir):
    # the module is `results`, not `collect`: importing a submodule named like this function would
    # rebind the package attribute and turn `lapr.report.collect` into a module
    from lapr.report.results import collect as _collect
    return _collect(results_dir)


def build_report(results_dir, out_dir, settings=None, log=print) -> dict:
    from lapr.report.stage import build_report as _build
    return _build(results_dir, out_dir, settings, log)


__all__ = ["FIGURES", "TABLES", "CSV_ONLY", "collect", "build_report"]
