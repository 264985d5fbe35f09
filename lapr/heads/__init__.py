"""Head pruning by state rank (paper B, Sun et al. 2026): which heads, how, and what it saves.

Modules (import them directly; this package imports nothing heavy):
- methods  registry METHODS (joint_rank_norm, low_rank_first, high_rank_first, norm_only,
           random): priorities from heads.csv; select_heads(table, method, budget, scope, alpha,
           seed, min_keep) -> HeadPlan; load_heads(path); the exact score definitions.
- apply    state_accounting(model, removed); mask_heads / masked (exact masking by o_proj
           pre-hooks); zero_heads (the q/k/v-zeroed reference); remove_heads (structural, fla
           config with fewer heads); plan_application(model, removed, 'auto'|'masked'|'structural').
- table    head_table(model, inputs): a heads.csv-style table without the profiling stage.
- stage    the `heads` CLI stage (add_arguments / run).
- plots    make_figures(results_dir, fig_dir).
"""
