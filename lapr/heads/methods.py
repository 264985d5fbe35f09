"""Which heads to remove: head-pruning methods (registry) and budgets.

A *head* is a value head of one attention layer: the unit that owns one d_k x d_v recurrent state
(`AttentionView.state_shape`), numbered like the `head` column of the profiling stage's heads.csv
(layer = index in `family(model).attention(model)`, head = value-head index 0..HV-1).

Scores, from heads.csv (one row per head; LAYOUT.md):

- normalised rank  r = final_rank / bound, clipped to [0, 1]. final_rank is the mean threshold
  rank (#{sigma_i > 1e-4 sigma_1}, paper B's eq. 6) of the head's state at the last position
  of the profiling contexts; bound = min(T, d_k, d_v), the largest rank that state can have.
  Paper B's eq. 14 divides by d; the SRA replication (Smaller25/SSM_Rank_Analysis,
  rank_metrics.matrix_cap) reads d as the cap min(d_k, d_v), which is `bound` whenever the
  profiling length T >= d_k, d_v (every shipped profile).
- normalised norm  n = nbar_h / max_j nbar_j (eq. 14: divided by the largest norm over the heads
  of the model, NOT min-max normalised; 0 for every head when all norms are 0). nbar_h is the
  head's mean state norm at the last position: `norm` = 'frobenius' (heads.csv state_norm, the
  default) or 'nuclear' (heads.csv state_nuclear = sum of singular values, the norm SRA uses for
  paper B's norm axis, stage1 rank_metrics.nuclear_norm).

Every method maps the table to a removal *priority* per head; heads are removed in decreasing
priority, ties broken by a seeded random permutation (so ties, e.g. many heads at the rank bound,
do not always hit layer 0 first):

- joint_rank_norm: paper B's Joint Rank-Norm Pruning saturation score, eq. 14 (Sun et al. 2026,
  "State Rank Dynamics in Linear Attention LLMs", arXiv 2602.02195, sec. 5.2):
      S_h = alpha * (rbar_h / d) + (1 - alpha) * (nbar_h / max_j nbar_j)
  and the most saturated heads (highest S_h) go first: the paper's chain is "full rank =>
  oversaturated => prunable" (as quoted by SRA, 260727_stage3_rank_mechanism/PREREGISTRATION.md),
  and its Table 1 contrasts pruning high-rank heads (NIAH kept) with low-rank heads (NIAH lost).
  alpha is not published (SRA: "alpha is UNPUBLISHED"), so it is a setting, swept by the stage.
  (lapr's earlier reading min-max normalised the norm, `minmax_norm`; it is not registered as a
  method: another method would add a job per model and an MQAR evaluation per budget, and the unit
  tests show where the two readings part.)
- high_rank_first: priority = r (= joint_rank_norm with alpha = 1).
- low_rank_first: priority = -r (the ablation that paper B says hurts retrieval).
- norm_only: priority = n (joint_rank_norm with alpha = 0; min-max gives the same order).
- random: priority = 0 for every head, i.e. the seeded permutation alone.

Disjoint arms (`disjoint_arms`, paper B's low- vs high-rank ablation as SRA runs it,
260726_stage2_pruning_asymmetry/head_classifier.py): low class r < group_low, high class
r >= group_high (the B1 thresholds 0.25 / 0.75); k = min(#low class, #high class), the largest
count at which the two sets cannot overlap; the low arm is the k lowest-r heads, the high arm the
k highest-r heads, and each random arm k heads drawn from ALL heads (SRA's draw_random_heads over
all_heads; its stage 3 prereg: "random group draws ... from the WHOLE head pool"), one seeded
draw per `draws`. Either class empty -> no arm (k = 0, status says which).

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
# settings.norm -> the heads.csv column holding nbar_h (lapr.profiling.stage.head_table)
NORM_COLUMNS = {"frobenius": "state_norm", "nuclear": "state_nuclear"}
DEFAULT_NORM = "frobenius"


def register(name: str):
    def add(fn: Priority) -> Priority:
        if name in METHODS:
            raise ValueError(f"head method {name!r} is already registered")
        METHODS[name] = fn
        return fn
    return add


def normalised_rank(table: pd.DataFrame) -> np.ndarray:
    """rbar_h / d of eq. 14, d = bound (= min(d_k, d_v) when T >= d_k, d_v), clipped to [0, 1]."""
    bound = table["bound"].to_numpy(dtype=np.float64)
    rank = table["final_rank"].to_numpy(dtype=np.float64)
    return np.clip(np.divide(rank, bound, out=np.zeros_like(rank), where=bound > 0), 0.0, 1.0)


def check_norm(norm) -> str:
    if norm not in NORM_COLUMNS:
        raise ValueError(f"norm must be one of {sorted(NORM_COLUMNS)}; got {norm!r}")
    return norm


def norm_values(table: pd.DataFrame, norm: str = DEFAULT_NORM) -> np.ndarray:
    col = NORM_COLUMNS[check_norm(norm)]
    if col not in table.columns:
        raise ValueError(f"heads table has no {col} column, needed by norm={norm!r}: re-run the profiling "
                         f"stage (heads.csv gained state_nuclear) or use norm 'frobenius'")
    v = table[col].to_numpy(dtype=np.float64)
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"heads table: {col} must be finite and >= 0")
    return v


def normalised_norm(table: pd.DataFrame, norm: str = DEFAULT_NORM) -> np.ndarray:
    """nbar_h / max_j nbar_j of eq. 14 (0 for every head when every norm is 0)."""
    v = norm_values(table, norm)
    hi = float(v.max())
    return np.zeros_like(v) if hi <= 0 else v / hi


def minmax_norm(table: pd.DataFrame, norm: str = DEFAULT_NORM) -> np.ndarray:
    """(nbar_h - min) / (max - min) over the model's heads: NOT eq. 14 (lapr's earlier reading)."""
    v = norm_values(table, norm)
    lo, hi = float(v.min()), float(v.max())
    return np.zeros_like(v) if hi <= lo else (v - lo) / (hi - lo)


def saturation_score(table: pd.DataFrame, alpha: float, norm: str = DEFAULT_NORM) -> np.ndarray:
    """Paper B eq. 14: S_h = alpha * rbar_h / d + (1 - alpha) * nbar_h / max_j nbar_j."""
    return alpha * normalised_rank(table) + (1 - alpha) * normalised_norm(table, norm)


@register("joint_rank_norm")
def joint_rank_norm(table, ctx):
    return saturation_score(table, ctx.get("alpha", DEFAULT_ALPHA), ctx.get("norm", DEFAULT_NORM))


@register("high_rank_first")
def high_rank_first(table, ctx):
    return normalised_rank(table)


@register("low_rank_first")
def low_rank_first(table, ctx):
    return -normalised_rank(table)


@register("norm_only")
def norm_only(table, ctx):
    return normalised_norm(table, ctx.get("norm", DEFAULT_NORM))


@register("random")
def random_order(table, ctx):
    return np.zeros(len(table))


# methods whose priority depends on alpha: the stage sweeps settings.alphas for them at b3_budget
ALPHA_METHODS = ("joint_rank_norm",)


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


def priorities(table: pd.DataFrame, method: str, alpha: float = DEFAULT_ALPHA,
               norm: str = DEFAULT_NORM) -> np.ndarray:
    table = check_table(table)
    p = np.asarray(METHODS[check_method(method)](table, {"alpha": check_alpha(alpha), "norm": check_norm(norm)}),
                   dtype=np.float64)
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
    norm: str = DEFAULT_NORM

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
               "norm": self.norm, "seed": self.seed, "n_heads": self.n_heads, "n_removed": len(self.removed),
               "removed_frac": len(self.removed) / self.n_heads,
               "removed": [list(x) for x in self.removed],
               "removed_per_layer": {str(k): v for k, v in self.removed_per_layer.items()}}
        if "class" in s.columns:
            gone = s[s["removed"]]
            out["removed_low"] = int((gone["class"] == "low").sum())
            out["removed_high"] = int((gone["class"] == "high").sum())
        return out


def select_heads(table: pd.DataFrame, method: str, budget, scope: str = "global",
                 alpha: float = DEFAULT_ALPHA, seed: int = 0, min_keep: int = 0,
                 norm: str = DEFAULT_NORM) -> HeadPlan:
    """The heads `method` removes at `budget` (see module doc)."""
    table = check_table(table)
    b, scope, alpha, norm = check_budget(budget), check_scope(scope), check_alpha(alpha), check_norm(norm)
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 0:
        raise ValueError(f"min_keep must be an integer >= 0; got {min_keep!r}")
    p = priorities(table, method, alpha, norm)
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
    # the placeholder table of 'random' (lapr.heads.stage.model_heads) has no nuclear norms
    scores["norm_norm"] = normalised_norm(table, norm) if NORM_COLUMNS[norm] in table.columns else np.nan
    scores["priority"] = p
    scores["order"] = rank_of
    scores["removed"] = False
    scores.loc[removed_idx, "removed"] = True
    if "class" in table.columns:
        scores["class"] = table["class"].to_numpy()
    removed = sorted((int(table.at[i, "layer"]), int(table.at[i, "head"])) for i in removed_idx)
    return HeadPlan(method, b, scope, alpha, int(seed), removed, per_layer, scores, norm)


@dataclass
class Arms:
    """Paper B's count-matched, disjoint low- vs high-rank ablation sets (see module doc)."""

    k: int
    low: list[tuple[int, int]]                 # the k lowest-rank heads, sorted
    high: list[tuple[int, int]]                # the k highest-rank heads, sorted
    random: list[list[tuple[int, int]]]        # one k-subset of all heads per draw, sorted
    n_heads: int
    n_low_class: int
    n_high_class: int
    group_low: float
    group_high: float
    seed: int
    status: str                                # 'ok' or why the arms cannot be formed
    low_class: list[tuple[int, int]] = field(default_factory=list)   # rank/bound < group_low
    high_class: list[tuple[int, int]] = field(default_factory=list)  # rank/bound >= group_high

    def summary(self) -> dict:
        return {"k": self.k, "n_heads": self.n_heads, "n_low_class": self.n_low_class,
                "n_high_class": self.n_high_class, "group_low": self.group_low, "group_high": self.group_high,
                "seed": self.seed, "status": self.status, "low": [list(x) for x in self.low],
                "high": [list(x) for x in self.high], "random": [[list(x) for x in r] for r in self.random]}


def check_groups(group_low, group_high) -> tuple[float, float]:
    for name, v in (("group_low", group_low), ("group_high", group_high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0:
            raise ValueError(f"arms.{name} must be a number in (0, 1] (a normalised rank); got {v!r}")
    if group_low > group_high:  # the classes would overlap, and the arms with them
        raise ValueError(f"arms.group_low ({group_low}) must be <= arms.group_high ({group_high})")
    return float(group_low), float(group_high)


def disjoint_arms(table: pd.DataFrame, group_low: float = 0.25, group_high: float = 0.75, draws: int = 3,
                  seed: int = 0) -> Arms:
    """Low / high / random arms of k = min(#low class, #high class) heads each (see module doc)."""
    table = check_table(table)
    group_low, group_high = check_groups(group_low, group_high)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"arms.draws must be an integer >= 1; got {draws!r}")
    r = normalised_rank(table)
    heads = [(int(a), int(b)) for a, b in table[["layer", "head"]].to_numpy()]
    low_class = [h for h, x in zip(heads, r) if x < group_low]
    high_class = [h for h, x in zip(heads, r) if x >= group_high]
    n_low, n_high = len(low_class), len(high_class)
    k = min(n_low, n_high)
    if k == 0:
        missing = [f"no low-rank head (rank/bound < {group_low:g})"] if n_low == 0 else []
        missing += [f"no high-rank head (rank/bound >= {group_high:g})"] if n_high == 0 else []
        return Arms(0, [], [], [], len(heads), n_low, n_high, group_low, group_high, int(seed),
                    "unformable: " + " and ".join(missing), low_class, high_class)
    # ascending rank, ties by a seeded permutation (as select_heads); k <= both class sizes, so the
    # k lowest lie in the low class and the k highest in the high class: disjoint, as SRA asserts
    tie = np.random.default_rng(seed).permutation(len(heads))
    order = np.lexsort((tie, r))
    low = sorted(heads[i] for i in order[:k])
    high = sorted(heads[i] for i in order[len(heads) - k:])
    rand = [sorted(heads[i] for i in np.random.default_rng([seed, d]).choice(len(heads), size=k, replace=False))
            for d in range(draws)]
    return Arms(k, low, high, rand, len(heads), n_low, n_high, group_low, group_high, int(seed), "ok",
                low_class, high_class)


__all__ = ["ALPHA_METHODS", "DEFAULT_ALPHA", "DEFAULT_NORM", "HEAD_COLUMNS", "METHODS", "NORM_COLUMNS", "SCOPES",
           "Arms", "HeadPlan", "check_alpha", "check_budget", "check_groups", "check_method", "check_norm",
           "check_scope", "check_table", "disjoint_arms", "load_heads", "minmax_norm", "norm_values",
           "normalised_norm", "normalised_rank", "priorities", "register", "saturation_score", "select_heads"]
