"""A heads.csv-style table straight from a model and a batch of inputs.

The profiling stage writes heads.csv for the language models; models that are not profiled
(the MQAR probes) get the same table here, with the same definitions: per (layer, value head),
final_rank = mean over sequences of the threshold rank (eps 1e-4, lapr.profiling.metrics) of
the state after the whole sequence, bound = min(T, d_k, d_v), state_norm = mean Frobenius norm
of that state, state_nuclear = mean nuclear norm (sum of singular values), class = 'low' / 'high' by stratify.classify_heads (default: high iff
final_rank >= 0.5 * bound).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lapr import backends
from lapr.models import family
from lapr.profiling import metrics, stratify

CLASS_NAMES = {stratify.LOW: "low", stratify.HIGH: "high"}


@torch.no_grad()
def head_table(model, inputs: torch.Tensor, batch_size: int = 64, eps: float = metrics.DEFAULT_EPS,
               fraction: float = 0.5) -> pd.DataFrame:
    """heads.csv columns (layer, head, final_rank, bound, state_norm, class, state_nuclear) for `inputs` [B, T]."""
    from fla.models.utils import Cache

    if inputs.dim() != 2 or inputs.shape[1] < 1:
        raise ValueError(f"inputs must be [B, T] token ids, got {tuple(inputs.shape)}")
    fam = family(model)
    views = fam.attention(model)
    device = next(model.parameters()).device
    if device.type == "cpu":
        backends.auto()
    rank_sum = [torch.zeros(v.num_v_heads, dtype=torch.float64) for v in views]
    norm_sum = [torch.zeros(v.num_v_heads, dtype=torch.float64) for v in views]
    nuc_sum = [torch.zeros(v.num_v_heads, dtype=torch.float64) for v in views]
    was = model.training
    model.eval()
    try:
        for i in range(0, len(inputs), batch_size):
            cache = Cache()
            model(input_ids=inputs[i:i + batch_size].to(device), use_cache=True, past_key_values=cache)
            for j, v in enumerate(views):
                state = fam.state_from_cache(cache[getattr(v.module, "layer_idx", v.index)]).float()
                sv = metrics.singular_values(state)
                rank_sum[j] += metrics.threshold_rank(sv, eps).double().sum(0).cpu()
                norm_sum[j] += metrics.state_norm(sv).double().sum(0).cpu()
                nuc_sum[j] += sv.double().sum(-1).sum(0).cpu()
    finally:
        model.train(was)
    n, T = inputs.shape
    rows = []
    for j, v in enumerate(views):
        for h in range(v.num_v_heads):
            rows.append({"layer": v.index, "head": h, "final_rank": float(rank_sum[j][h] / n),
                         "bound": int(min(T, v.head_k_dim, v.head_v_dim)),
                         "state_norm": float(norm_sum[j][h] / n), "state_nuclear": float(nuc_sum[j][h] / n)})
    table = pd.DataFrame(rows)
    labels = stratify.classify_heads(table["final_rank"], table["bound"], rule="fraction", fraction=fraction)
    table["class"] = [CLASS_NAMES[x] for x in np.asarray(labels)]
    return table[["layer", "head", "final_rank", "bound", "state_norm", "class", "state_nuclear"]]


__all__ = ["head_table"]
