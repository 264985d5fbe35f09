"""Query/key channel pruning of DeltaNet / Gated DeltaNet (paper A).

Modules (import them directly; this package only re-exports the light-weight validation so that
`import lapr.pruning` does not pull in fla / transformers):
- channels   method registry: 7 selections (random, l1, l2, wanda, taylor, pivoted_qr,
             strong_rrqr) + the pca and pca_qk rotations; ALL_METHODS, REQUIRES (calib fields)
- ratio      kept_dim(d_k, ratio, multiple), validate(methods, ratios, d_k, multiple)
- select     load_calib / contexts / choose(model, method, kept, calib, seed) -> keep per layer
- surgery    prune_channels(model, keep) -> new model; zero_channels (the reference);
             conv_mismatch (PCA); state_bytes
- recovery   LoRA (+ KL distillation) fine-tuning, merged back into a plain model
- stage      the `prune` CLI stage (add_arguments / run)
"""

from lapr.pruning.channels import ALL_METHODS, REQUIRES
from lapr.pruning.ratio import check_method, check_ratio, kept_dim, validate

__all__ = ["ALL_METHODS", "REQUIRES", "check_method", "check_ratio", "kept_dim", "validate"]
