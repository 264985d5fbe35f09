"""Split heads into low-rank and high-rank groups, and check that the split holds across inputs.

Paper B (Sun et al. 2026) finds two groups of linear-attention heads whose state rank either
stays near zero or rises fast to the bound min(t, d_k, d_v), and that a head's group does not
depend on the input. `classify_heads` labels heads from their final threshold rank;
`consistency` measures how well head ranks and labels agree between contexts.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

LOW = "low-rank"
HIGH = "high-rank"


def classify_heads(final_rank, bound, rule: str = "fraction", fraction: float = 0.5) -> np.ndarray:
    """Label each head LOW ("low-rank") or HIGH ("high-rank").

    final_rank: per-head threshold rank of the last state (array-like, any shape);
    bound: its rank bound min(t, d_k, d_v), a scalar or broadcastable to final_rank, > 0.
    The normalised rank is r = final_rank / bound in [0, 1].

    rule="fraction" (default): HIGH when final_rank >= fraction * bound (fraction 0.5 by
      default), else LOW. Needs no other heads, so labels are comparable across models.
    rule="gap": a 1-D two-cluster split. Sort the heads' normalised ranks, find the largest gap
      between neighbours, and call HIGH every head above its midpoint. Adapts to where the two
      groups actually sit, but always splits: heads that form one tight group are still cut at
      their largest (maybe small) gap. With fewer than two heads, or all r equal (no gap), it
      falls back to the fraction rule.
    Returns a numpy array of str labels shaped like the broadcast of final_rank and bound.
    """
    rank = np.asarray(final_rank, dtype=np.float64)
    bound = np.asarray(bound, dtype=np.float64)
    if np.any(bound <= 0):
        raise ValueError("bound must be > 0 (a state at position 0 has no rank to classify)")
    rank, bound = np.broadcast_arrays(rank, bound)
    if rule == "fraction":
        high = rank >= fraction * bound
    elif rule == "gap":
        r = rank / bound
        ordered = np.sort(r, axis=None)
        gaps = np.diff(ordered)
        if gaps.size == 0 or gaps.max() <= 0:
            high = rank >= fraction * bound
        else:
            i = int(gaps.argmax())
            high = r > (ordered[i] + ordered[i + 1]) / 2
    else:
        raise ValueError(f"unknown rule {rule!r}; use 'fraction' or 'gap'")
    return np.where(high, HIGH, LOW)


@dataclass
class Consistency:
    """pairs: one row per context pair; summary: aggregates over pairs and heads."""

    pairs: pd.DataFrame
    summary: dict = field(default_factory=dict)


PAIR_COLUMNS = ["context_a", "context_b", "n_heads", "spearman", "spearman_p", "constant", "keep_fraction"]


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float, bool]:
    """(rho, p, constant). Spearman is undefined when either side is constant or n < 2:
    report NaN with constant=True instead of scipy's warning."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan"), True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # p-value warnings for tiny n
        res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue), False


def consistency(rank_by_context: pd.DataFrame) -> Consistency:
    """Agreement of head ranks and labels between every pair of contexts.

    rank_by_context: tidy rows (context, layer, head, rank, label), one per head per context.
    Each pair of contexts is compared on the heads both contain:
      spearman / spearman_p: Spearman correlation of the heads' ranks (ties get average ranks);
        NaN with constant=True when either side's ranks are all equal (or < 2 heads);
      keep_fraction: fraction of heads with the same label in both contexts.
    summary: n_contexts, n_pairs, n_constant_pairs, spearman_mean / spearman_min (over non-NaN
      pairs), keep_fraction_mean / keep_fraction_min, n_heads_all (heads present in every
      context) and stable_fraction (of those, the fraction with one label in every context).
    """
    need = {"context", "layer", "head", "rank", "label"}
    if missing := need - set(rank_by_context.columns):
        raise ValueError(f"missing columns {sorted(missing)}")
    df = rank_by_context[["context", "layer", "head", "rank", "label"]]
    if df.duplicated(["context", "layer", "head"]).any():
        raise ValueError("duplicate (context, layer, head) rows")

    contexts = list(pd.unique(df["context"]))
    by_context = {c: g.drop(columns="context") for c, g in df.groupby("context", sort=False)}
    rows = []
    for a, b in itertools.combinations(contexts, 2):
        both = by_context[a].merge(by_context[b], on=["layer", "head"], how="inner", suffixes=("_a", "_b"))
        rho, p, constant = _spearman(both["rank_a"].to_numpy(float), both["rank_b"].to_numpy(float))
        keep = float((both["label_a"] == both["label_b"]).mean()) if len(both) else float("nan")
        rows.append((a, b, len(both), rho, p, constant, keep))
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS)

    labels = df.pivot(index=["layer", "head"], columns="context", values="label").dropna()
    stable = float((labels.nunique(axis=1) == 1).mean()) if len(labels) else float("nan")
    rho = pairs["spearman"].dropna()
    nan = float("nan")
    summary = {
        "n_contexts": len(contexts),
        "n_pairs": len(pairs),
        "n_constant_pairs": int(pairs["constant"].sum()),
        "spearman_mean": float(rho.mean()) if len(rho) else nan,
        "spearman_min": float(rho.min()) if len(rho) else nan,
        "keep_fraction_mean": float(pairs["keep_fraction"].mean()) if len(pairs) else nan,
        "keep_fraction_min": float(pairs["keep_fraction"].min()) if len(pairs) else nan,
        "n_heads_all": len(labels),
        "stable_fraction": stable,
    }
    return Consistency(pairs=pairs, summary=summary)
