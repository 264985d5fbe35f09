"""Which heads to remove: head-pruning methods (registry) and budgets.

A *head* is a value head of one attention layer: the unit that owns one d_k x d_v recurrent state
(`AttentionView.state_shape`), numbered like the `head` column of the profiling stage's heads.csv
(layer = index in `family(model).attention(model)`, head = value-head index 0..HV-1).

Scores, from heads.csv (one row per head; LAYOUT.md):

- normalised rank  r = final_rank / bound, clipped to [0, 1]. final_rank is the mean threshold
  rank (#{sigma_i > 1e-4 sigma_1}, paper B's definition) of the head's state at the last position
  of the profiling contexts; bound = min(T, d_k, d_v), the largest rank that state can have.
- normalised norm  n = (state_norm - min) / (max - min), min and max over all heads of the model
  (min-max per model; 0 for every head when all norms are equal). state_norm is the mean
  Frobenius norm of the last state.

Every method maps the table to a removal *priority* per head; heads are removed in decreasing
priority, ties broken by a seeded random permutation (so ties, e.g. many heads at the rank bound,
do not always hit layer 0 first):

- joint_rank_norm: priority = alpha * r + (1 - alpha) * n (alpha = 0.5 by default). This is OUR
  READING of paper B's Joint Rank-Norm Pruning (Sun et al. 2026, "State Rank Dynamics in Linear
  Attention LLMs"): it scores a head's *saturation* from its state rank and norm and prunes the
  most saturated heads, consistent with its finding that high-rank heads are redundant and
  low-rank heads indispensable. The paper's exact normalisation and sign of the norm term are not
  reproduced from its code; alpha and both normalisations are recorded with every result.
- high_rank_first: priority = r (= joint_rank_norm with alpha = 1).
- low_rank_first: priority = -r (the ablation that paper B says hurts retrieval).
- norm_only: priority = n (joint_rank_norm with alpha = 0).
- random: priority = 0 for every head, i.e. the seeded permutation alone.

Budget = fraction of heads removed, `scope`:
- 'global': round(budget * total heads) heads, taken in priority order over the whole model;
- 'layer': round(budget * H_l) heads of each layer l, in priority order within the layer.
round() is half-up. At least `min_keep` heads (default 0) stay in every layer, so a layer may lose
all its heads, but the model may not: a removed count of zero, of every head of the model (e.g.
0.9 of 4 heads rounds to 4), or of more than the layers can give is a ValueError naming the budget.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lapr.grid import heads_removed

Priority = Callable[[pd.DataFrame, dict], np.ndarray]
METHODS: dict[str, Priority] = {}
SCOPES = ("global", "layer")
HEAD_COLUMNS = ["layer", "head", "final_rank", "bound", "state_norm"]
DEFAULT_ALPHA = 0.5


def register(name: str):
    def add(fn: Priority) -> Priority:
        if name in METHODS:
            raise ValueError(f"head method {name!r} is already registered")
        METHODS[name] = fn
        return fn
    return add


def normalised_rank(table: pd.DataFrame) -> np.ndarray:
    bound = table["bound"].to_numpy(dtype=np.float64)
    rank = table["final_rank"].to_numpy(dtype=np.float64)
    return np.clip(np.divide(rank, bound, out=np.zeros_like(rank), where=bound > 0), 0.0, 1.0)


def normalised_norm(table: pd.DataFrame) -> np.ndarray:
    norm = table["state_norm"].to_numpy(dtype=np.float64)
    lo, hi = float(norm.min()), float(norm.max())
    return np.zeros_like(norm) if hi <= lo else (norm - lo) / (hi - lo)


@register("joint_rank_norm")
def joint_rank_norm(table, ctx):
    a = ctx.get("alpha", DEFAULT_ALPHA)
    return a * normalised_rank(table) + (1 - a) * normalised_norm(table)


@register("high_rank_first")
def high_rank_first(table, ctx):
    return normalised_rank(table)


@register("low_rank_first")
def low_rank_first(table, ctx):
    return -normalised_rank(table)


@register("norm_only")
def norm_only(table, ctx):
    return normalised_norm(table)


@register("random")
def random_order(table, ctx):
    return np.zeros(len(table))


def check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown head-pruning method {method!r}; known: {', '.join(METHODS)}")
    return method


def check_budget(budget) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating, np.integer)):
        raise ValueError(f"head budget must be a number in (0, 1) (fraction of heads removed); got {budget!r}")
    b = float(budget)
    if not 0.0 < b < 1.0:
        raise ValueError(f"head budget must lie strictly between 0 and 1 (fraction of heads removed); got {budget!r}")
    return b


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (weight of the rank term); got {alpha!r}")
    return float(alpha)


def check_scope(scope) -> str:
    if scope not in SCOPES:
        raise ValueError(f"head budget scope must be one of {SCOPES}; got {scope!r}")
    return scope


def check_table(table: pd.DataFrame, where: str = "heads table") -> pd.DataFrame:
    missing = [c for c in HEAD_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; need {HEAD_COLUMNS} (profiling heads.csv)")
    if table.empty:
        raise ValueError(f"{where}: no heads")
    if table.duplicated(["layer", "head"]).any():
        raise ValueError(f"{where}: duplicate (layer, head) rows")
    bad = [c for c in ("final_rank", "bound", "state_norm") if not np.isfinite(table[c].to_numpy(float)).all()]
    if bad:
        raise ValueError(f"{where}: non-finite values in {bad}")
    if (table["bound"] <= 0).any():
        raise ValueError(f"{where}: bound must be > 0")
    return table.sort_values(["layer", "head"], ignore_index=True)


def load_heads(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"heads table {path} not found (written by the profiling stage as heads.csv)")
    return check_table(pd.read_csv(path), str(path))


def priorities(table: pd.DataFrame, method: str, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    table = check_table(table)
    p = np.asarray(METHODS[check_method(method)](table, {"alpha": check_alpha(alpha)}), dtype=np.float64)
    if p.shape != (len(table),):
        raise RuntimeError(f"head method {method} returned shape {p.shape}, expected ({len(table)},)")
    return p


@dataclass
class HeadPlan:
    """The heads a method removes at a budget, with everything needed to reproduce the choice."""

    method: str
    budget: float
    scope: str
    alpha: float
    seed: int
    removed: list[tuple[int, int]]             # (layer, head), sorted
    heads_per_layer: dict[int, int]
    scores: pd.DataFrame = field(repr=False)   # layer, head, rank_norm, norm_norm, priority, order, removed, class

    @property
    def n_heads(self) -> int:
        return sum(self.heads_per_layer.values())

    @property
    def removed_per_layer(self) -> dict[int, int]:
        out = {layer: 0 for layer in self.heads_per_layer}
        for layer, _ in self.removed:
            out[layer] += 1
        return out

    def summary(self) -> dict:
        s = self.scores
        out = {"method": self.method, "budget": self.budget, "scope": self.scope, "alpha": self.alpha,
               "seed": self.seed, "n_heads": self.n_heads, "n_removed": len(self.removed),
               "removed_frac": len(self.removed) / self.n_heads,
               "removed": [list(x) for x in self.removed],
               "removed_per_layer": {str(k): v for k, v in self.removed_per_layer.items()}}
        if "class" in s.columns:
            gone = s[s["removed"]]
            out["removed_low"] = int((gone["class"] == "low").sum())
            out["removed_high"] = int((gone["class"] == "high").sum())
        return out


def select_heads(table: pd.DataFrame, method: str, budget, scope: str = "global",
                 alpha: float = DEFAULT_ALPHA, seed: int = 0, min_keep: int = 0) -> HeadPlan:
    """The heads `method` removes at `budget` (see module doc)."""
    table = check_table(table)
    b, scope, alpha = check_budget(budget), check_scope(scope), check_alpha(alpha)
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 0:
        raise ValueError(f"min_keep must be an integer >= 0; got {min_keep!r}")
    p = priorities(table, method, alpha)
    tie = np.random.default_rng(seed).permutation(len(table))
    order = np.lexsort((tie, -p))              # priority descending, then the seeded permutation
    layers = table["layer"].to_numpy()
    per_layer = {int(k): int(v) for k, v in table.groupby("layer").size().items()}
    removed_idx: list[int] = []
    if scope == "global":
        want = heads_removed(b, len(table))
        room = sum(max(0, n - min_keep) for n in per_layer.values())
        if want < 1:
            raise ValueError(f"head budget {budget} removes no head of {len(table)} "
                             f"(round({b} * {len(table)}) = 0)")
        if want == len(table):
            raise ValueError(f"head budget {budget} removes all {len(table)} heads of the model "
                             f"(round({b} * {len(table)}) = {want}): lower the budget")
        if want > room:
            raise ValueError(f"head budget {budget} asks for {want} of {len(table)} heads but only {room} can go "
                             f"while keeping min_keep={min_keep} per layer")
        left = {k: n - min_keep for k, n in per_layer.items()}
        for i in order:
            if len(removed_idx) == want:
                break
            if left[int(layers[i])] > 0:
                removed_idx.append(int(i))
                left[int(layers[i])] -= 1
    else:
        counts = {k: heads_removed(b, n) for k, n in per_layer.items()}
        if sum(counts.values()) < 1:
            raise ValueError(f"head budget {budget} with scope 'layer' removes no head "
                             f"(layers have {sorted(set(per_layer.values()))} heads)")
        if counts == per_layer:
            raise ValueError(f"head budget {budget} with scope 'layer' removes all {len(table)} heads of "
                             f"the model (every head of layers with {sorted(set(per_layer.values()))} "
                             f"heads): lower the budget")
        for k, c in counts.items():
            if c > per_layer[k] - min_keep:
                raise ValueError(f"head budget {budget} removes {c} of layer {k}'s {per_layer[k]} heads, "
                                 f"leaving fewer than min_keep={min_keep}")
        for i in order:
            k = int(layers[i])
            if counts[k] > 0:
                removed_idx.append(int(i))
                counts[k] -= 1
    rank_of = np.empty(len(table), dtype=np.int64)
    rank_of[order] = np.arange(len(table))
    scores = table[["layer", "head"]].copy()
    scores["rank_norm"] = normalised_rank(table)
    scores["norm_norm"] = normalised_norm(table)
    scores["priority"] = p
    scores["order"] = rank_of
    scores["removed"] = False
    scores.loc[removed_idx, "removed"] = True
    if "class" in table.columns:
        scores["class"] = table["class"].to_numpy()
    removed = sorted((int(table.at[i, "layer"]), int(table.at[i, "head"])) for i in removed_idx)
    return HeadPlan(method, b, scope, alpha, int(seed), removed, per_layer, scores)


__all__ = ["DEFAULT_ALPHA", "HEAD_COLUMNS", "METHODS", "SCOPES", "HeadPlan", "check_alpha", "check_budget",
           "check_method", "check_scope", "check_table", "load_heads", "normalised_norm", "normalised_rank",
           "priorities", "register", "select_heads"]
