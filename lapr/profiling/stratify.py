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


# ----------------------------------------------------------------------------- paper B's protocol

BIMODAL_THRESHOLD = 5 / 9  # Sarle's b of a uniform distribution; b > 5/9 suggests bimodality


def bimodality_coefficient(x) -> float:
    """Sarle's bimodality coefficient b = (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3))).

    g: sample skewness, k: sample excess kurtosis, both with the usual small-sample corrections
    (scipy's skew / kurtosis with bias=False: G1 and G2 of Joanes & Gill 1998), as in SAS/STAT's
    PROC CLUSTER (SAS Institute 1990) where b was introduced, and Pfister et al. 2013 ("Good things
    peak in pairs", Front. Psychol. 4:700). b lies in (0, 1]; a uniform distribution gives 5/9, a
    split into two point masses approaches 1; b > 5/9 suggests bimodality. The replication SRA
    (Smaller25/SSM_Rank_Analysis, stage1_repro.py `_bimodality_coefficient`) computes the same b on
    the heads' normalised threshold ranks (rank / min(d_k, d_v)), paper B's Fig. 1 groups.
    NaN with fewer than 4 finite values or no spread (skewness undefined)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 4 or np.ptp(x) == 0:
        return float("nan")
    g = stats.skew(x, bias=False)
    k = stats.kurtosis(x, fisher=True, bias=False)
    return float((g ** 2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def linear_r2(x, y) -> tuple[float, float, float]:
    """(R^2, slope, intercept) of the ordinary least-squares line y ~ a x + b over finite pairs.

    The regression SRA runs for "decay explains rank" (stage1_repro.py `_r2`: OLS threshold_rank ~
    r_bar, r_bar = exp(E_t log alpha_t) per head; R^2 0.897 +- 0.006 on GDN-2 1.3B, STAGE1_RESULTS.md
    gate G1b). NaN when fewer than 3 pairs, x is constant or y is constant (R^2 undefined)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nan = float("nan")
    if len(x) < 3 or np.ptp(x) == 0:
        return nan, nan, nan
    slope, intercept = np.polyfit(x, y, 1)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return nan, float(slope), float(intercept)
    ss_res = float(((y - (slope * x + intercept)) ** 2).sum())
    return 1 - ss_res / ss_tot, float(slope), float(intercept)


def cosine(a, b) -> float:
    """Cosine similarity of two vectors; NaN when either is all zero."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den > 0 else float("nan")


TIME_COLUMNS = ["layer", "context", "natural", "t_early", "t_late", "n_heads", "spearman", "constant",
                "cosine_rank", "cosine_norm", "cosine_frobenius"]
MEAN_CONTEXT = "mean"  # the per-layer rows averaged over the natural contexts


def time_consistency(per_head: pd.DataFrame, t_early: int, t_late: int, natural=()) -> pd.DataFrame:
    """Paper B's consistency over time (its Sec. 3.2 / appendix: per layer, Spearman rho > 0.90 and
    cosine > 0.97 between the head threshold-rank vectors at t = 128 and t = 2048; cosine > 0.98
    between the head state-norm vectors).

    per_head: one row per (context, layer, head, position) with `rank` (threshold rank, mean over
    samples), `nuclear` and `frobenius` (state norms, means over samples); must hold both positions.
    One row per (layer, context): n_heads, spearman (Spearman of the layer's rank vectors at t_early
    and t_late; NaN with constant=True when either vector is constant or n_heads < 2, as in
    `consistency`), cosine_rank (cosine of the rank vectors), cosine_norm (cosine of the nuclear-norm
    vectors: SRA reads paper B's norm consistency, its Thm 4.4 / eq. 13, on the nuclear norm, stage1_
    repro.py `_norm_cosine`), cosine_frobenius (the same on Frobenius norms). Then, per layer, a row
    with context MEAN_CONTEXT ('mean'): the nanmean of those statistics over the contexts in
    `natural` (all contexts if none is natural), constant = all of them constant. Column `natural`
    flags the per-context rows of natural contexts (False on 'mean' rows).
    """
    need = {"context", "layer", "head", "position", "rank", "nuclear", "frobenius"}
    if missing := need - set(per_head.columns):
        raise ValueError(f"missing columns {sorted(missing)}")
    rows = []
    for (layer, context), g in per_head.groupby(["layer", "context"], sort=False):
        a = g[g["position"] == t_early].set_index("head").sort_index()
        b = g[g["position"] == t_late].set_index("head").sort_index()
        if a.empty or b.empty:
            raise ValueError(f"layer {layer}, context {context}: positions {t_early} and {t_late} both needed")
        a, b = a.align(b, join="inner", axis=0)
        rho, _, constant = _spearman(a["rank"].to_numpy(float), b["rank"].to_numpy(float))
        rows.append({"layer": layer, "context": context, "natural": context in natural, "t_early": t_early,
                     "t_late": t_late, "n_heads": len(a), "spearman": rho, "constant": constant,
                     "cosine_rank": cosine(a["rank"], b["rank"]), "cosine_norm": cosine(a["nuclear"], b["nuclear"]),
                     "cosine_frobenius": cosine(a["frobenius"], b["frobenius"])})
    table = pd.DataFrame(rows, columns=TIME_COLUMNS)
    pool = table[table["natural"]] if table["natural"].any() else table
    means = []
    for layer, g in pool.groupby("layer", sort=False):
        stat = {c: float(g[c].mean()) if g[c].notna().any() else float("nan")
                for c in ("spearman", "cosine_rank", "cosine_norm", "cosine_frobenius")}
        means.append({"layer": layer, "context": MEAN_CONTEXT, "natural": False, "t_early": t_early,
                      "t_late": t_late, "n_heads": int(g["n_heads"].max()), **stat,
                      "constant": bool(g["constant"].all())})
    return pd.concat([table, pd.DataFrame(means, columns=TIME_COLUMNS)], ignore_index=True)
