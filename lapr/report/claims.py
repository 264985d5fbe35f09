"""Claims check: each headline claim of both papers, our measured number and a verdict.

    table = claims_table(collect("results/embedded"))       # a tables.Table named 'claims'

Paper A = "The Key to State Reduction in Linear Attention" (q/k channel pruning, rank utilisation);
paper B = "State Rank Dynamics in Linear Attention LLMs" (head stratification, head pruning).

One row per claim and model (per device / family for the throughput claim). Verdicts:
  supported     the measured number passes the claim's 'supported' threshold below;
  contradicted  it passes the 'contradicted' threshold;
  inconclusive  in between, or the measurement cannot decide (too few heads, probe too weak, ...);
  missing       the results needed are not there (the `reason` column names the stage / file).
Thresholds (THRESHOLDS; override any of them with the stage's settings.claims):

A1 "50% of q/k channels removed at a marginal perplexity increase", judged on paper A's method
   x = ppl(strong_rrqr at r=ratio) / ppl(unpruned) - 1 on the in-domain perplexity corpus: settings
   ppl_task if given, else gutenberg_valid for a self-trained model (one with models/MODEL/metrics.json),
   else (hub checkpoints) the primary corpus (WikiText-2 first). Never the best of all methods: on
   small models random pruning can "win" by noise (the per-method ppl table sits beside it, and
   `measured` names the best method too). strong_rrqr not evaluated at r: 'missing', naming it.
   supported: x <= marginal_ppl (5%); contradicted: x > large_ppl (20%); inconclusive otherwise.
A1r the same with recovery: x from strong_rrqr+lora (LoRA recovery, prune.recovery) at r=ratio, same
   corpus and thresholds; 'missing: not recovered in this profile' when strong_rrqr+lora was not run.
A2 "trained states are low-rank" (paper A's rank utilisation = stable rank / min(d_k, d_v))
   u = mean utilisation at the last profiled position over heads and natural-text samples (unpruned).
   supported: u <= low_utilisation (0.25); contradicted: u >= high_utilisation (0.5).
A3 "a smaller d_k makes the kernels faster (ideal: state-size ratio 2x at r=0.5)"
   s = median over op-level series (device, family, phase) of ms(d_k0) / ms(d_k0/2), d_k0 = the
   series' largest d_k. supported: s >= min_speedup (1.5 = 75% of ideal); contradicted: s < no_speedup (1.1).
A4 "low effective rank amplifies query noise in retrieval" (paper A's theory), from the MQAR probe
   (mqar/eval/FAMILY.csv, kind 'channel', metric recall; strong_rrqr, else the first of pivoted_qr,
   pca, taylor, wanda, l2, l1, random present, named in `measured`). Per d_k the relative recall loss
   L(d_k) = 1 - recall(noise s) / recall(noise 0), s = the largest query-noise level evaluated;
   the full d_k is the unpruned model's (kind 'none'). Relative, not absolute: a pruned model that
   recalls less without noise has less to lose, and a d_k-independent multiplicative effect of noise
   gives gap 0. gap = L(smallest pruned d_k) - L(full d_k).
   supported: gap >= noise_gap (0.05); contradicted: gap <= -noise_gap; inconclusive otherwise, or when
   the unpruned recall without noise is below mqar_floor (0.5: the probe model did not learn MQAR).
B1 "heads split into a low-rank and a high-rank group"
   per head x = final threshold rank / bound (heads.csv); low: x < group_low (0.25), high: x >= group_high
   (0.75). supported: both groups hold >= min_group (10%) of heads and the middle <= max_middle (25%);
   contradicted: one group is empty; inconclusive otherwise or with fewer than min_heads (8) heads.
B2 "head identity (rank / class) is stable across inputs"
   rho = mean Spearman of head final ranks over context pairs, a = mean class agreement (consistency.csv).
   supported: rho >= stable_spearman (0.7) and a >= stable_agreement (0.8); contradicted: rho <
   unstable_spearman (0.3) or a < unstable_agreement (0.6); inconclusive when every pair is constant.
B3 "38.9% state reduction with accuracy largely kept" (joint rank-norm pruning)
   the joint method's smallest budget saving >= state_target - state_tolerance (38.9% - 5 points) of
   the state memory; q = retained quality: mean accuracy of non-probe tasks pruned / unpruned if the
   head-pruning results hold accuracy rows, else ppl(unpruned) / ppl(pruned).
   supported: q >= kept_quality (0.95); contradicted: q < lost_quality (0.80); inconclusive otherwise,
   or when no budget reaches the target saving.
B4 "low-rank heads are indispensable (NIAH drops when they are removed, not when high-rank go)"
   at the largest budget both the low-rank-first and the high-rank-first method ran:
   gap = NIAH(high-rank removed) - NIAH(low-rank removed) (accuracy as a fraction).
   supported: gap >= niah_gap (0.20); contradicted: gap <= 0; inconclusive otherwise, or when the
   unpruned NIAH accuracy (if known) is below niah_floor (0.5): the probe is too weak to say.

Head-pruning method names are matched by substring: 'joint' (joint rank-norm), 'low' (low-rank first),
'high' (high-rank first); the unpruned reference is method 'none' or budget 0, else the eval stage's
unpruned rows.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lapr.report.results import UNPRUNED, Results, ratio_value
from lapr.report.tables import (MQAR_KEYS, NIAH_KEYS, Table, head_metric_rows, is_accuracy, ppl_rows,
                                primary_ppl_task, rank_stats, task_matches)

PAPER_METHOD = "strong_rrqr"  # paper A's channel selection (LAP: strong rank-revealing QR)
RECOVERED = f"{PAPER_METHOD}+lora"
IN_DOMAIN = "ppl/gutenberg_valid"  # held-out split of the corpus self-trained models are trained on
# A4's method when the probe lacks strong_rrqr: the nearest to it first
PROBE_FALLBACK = ("pivoted_qr", "pca", "taylor", "wanda", "l2", "l1", "random")

THRESHOLDS = {
    "ratio": 0.5, "marginal_ppl": 0.05, "large_ppl": 0.20,
    "low_utilisation": 0.25, "high_utilisation": 0.5,
    "min_speedup": 1.5, "no_speedup": 1.1,
    "group_low": 0.25, "group_high": 0.75, "min_group": 0.10, "max_middle": 0.25, "min_heads": 8,
    "stable_spearman": 0.7, "stable_agreement": 0.8, "unstable_spearman": 0.3, "unstable_agreement": 0.6,
    "state_target": 0.389, "state_tolerance": 0.05, "kept_quality": 0.95, "lost_quality": 0.80,
    "niah_gap": 0.20, "niah_floor": 0.5,
    "noise_gap": 0.05, "mqar_floor": 0.5,
}
VERDICTS = ("supported", "contradicted", "inconclusive", "missing")
COLUMNS = ["id", "paper", "claim", "model", "profile", "measured", "value", "criterion", "verdict", "reason"]

CLAIMS = {
    "A1": ("A", "50% of q/k channels removed at a marginal perplexity increase (strong RRQR, no recovery)"),
    "A1r": ("A", "50% of q/k channels removed at a marginal perplexity increase (strong RRQR + LoRA recovery)"),
    "A2": ("A", "trained states are low-rank (low rank utilisation)"),
    "A3": ("A", "a smaller d_k makes the kernels faster (ideal 2x at r=0.5)"),
    "A4": ("A", "low effective rank (smaller d_k) amplifies query noise in retrieval (MQAR)"),
    "B1": ("B", "heads split into low-rank and high-rank groups"),
    "B2": ("B", "head identity is stable across inputs"),
    "B3": ("B", "38.9% state reduction with accuracy largely kept"),
    "B4": ("B", "low-rank heads are indispensable (NIAH drops when they are removed)"),
}


def thresholds(overrides: dict | None = None) -> dict:
    t = dict(THRESHOLDS)
    if overrides:
        unknown = sorted(set(overrides) - set(t))
        if unknown:
            raise ValueError(f"settings.claims: unknown threshold(s) {unknown}; known: {sorted(t)}")
        t.update({k: float(v) for k, v in overrides.items()})
    return t


def _row(cid, model, profile, measured="", value=math.nan, criterion="", verdict="missing", reason=""):
    paper, claim = CLAIMS[cid]
    if verdict not in VERDICTS:
        raise ValueError(f"bad verdict {verdict!r}")
    return {"id": cid, "paper": paper, "claim": claim, "model": model, "profile": profile, "measured": measured,
            "value": float(value) if value is not None else math.nan, "criterion": criterion,
            "verdict": verdict, "reason": reason}


def _three_way(value, supported: bool, contradicted: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    return "supported" if supported else "contradicted" if contradicted else "inconclusive"


def _models(res: Results) -> list[str]:
    names = set()
    for df in (res.pretrain, res.ranks, res.heads, res.consistency, res.evals, res.pruning, res.head_pruning):
        if not df.empty and "model" in df:
            names |= set(df["model"].dropna().astype(str))
    return sorted(names)


# ----------------------------------------------------------------------------- paper A

def _no_better_than_unigram(res: Results, model: str, task: str, ppl: float) -> str:
    """A reason to withhold a verdict when the unpruned model's perplexity on `task` is no better than
    the unigram baseline of its tokenizer (the evaluate stage's `unigram_ppl` row): then pruning can
    only be compared with noise, and a pruned model 'improving' on it says nothing."""
    ev = res.evals
    if ev.empty:
        return ""
    uni = ev[(ev["model"] == model) & (ev["task"] == task) & (ev["metric"] == "unigram_ppl")]["value"].dropna()
    if uni.empty or ppl < float(uni.iloc[0]):
        return ""
    return (f"unpruned ppl {ppl:.4g} on {task[4:]} is not below the unigram baseline "
            f"{float(uni.iloc[0]):.4g}: the model has not learnt this corpus")


def a1_corpus(res: Results, model: str, tasks, ppl_task: str | None = None) -> str | None:
    """A1's perplexity task: ppl_task if given; gutenberg_valid for a self-trained model; else primary."""
    if ppl_task:
        return primary_ppl_task(tasks, ppl_task)
    trained = not res.pretrain.empty and model in set(res.pretrain["model"].astype(str))
    if trained and IN_DOMAIN in set(tasks):
        return IN_DOMAIN
    return primary_ppl_task(tasks)


def claim_a1(res: Results, model: str, t: dict, ppl_task: str | None = None, recovered: bool = False) -> dict:
    cid, method = ("A1r", RECOVERED) if recovered else ("A1", PAPER_METHOD)
    r = ratio_value(t["ratio"])
    crit = (f"{method}'s relative ppl increase at r={r:g} on the in-domain corpus"
            f"{'' if recovered else ' (no recovery)'}: supported <= {t['marginal_ppl']:.0%}, "
            f"contradicted > {t['large_ppl']:.0%}")
    prof = res.profile_name
    rows = ppl_rows(res.evals)
    rows = rows[rows["model"] == model] if not rows.empty else rows
    if rows.empty:
        return _row(cid, model, prof, criterion=crit, reason="evaluate stage: no perplexity rows for this model")
    task = a1_corpus(res, model, rows["task"], ppl_task)
    if task is None:
        return _row(cid, model, prof, criterion=crit, reason=f"no perplexity rows for corpus {ppl_task!r}")
    rows = rows[rows["task"] == task]
    base = rows[(rows["method"] == UNPRUNED) | (rows["ratio"] == 0)]
    if base.empty:
        return _row(cid, model, prof, criterion=crit, reason=f"no unpruned evaluation (eval/{model}/none/0.csv)")
    mine = rows[(rows["method"] == method) & rows["value"].notna()]
    at = mine[mine["ratio"] == r]
    if at.empty:
        elsewhere = sorted({float(x) for x in mine["ratio"]})
        where = f" (evaluated at r={', '.join(f'{x:g}' for x in elsewhere)})" if elsewhere else ""
        if recovered:
            others = sorted(m for m in set(rows["method"]) if "+" in str(m))
            return _row(cid, model, prof, criterion=crit,
                        reason=f"not recovered in this profile: no {method} evaluation at r={r:g}{where}; "
                               f"recovered: {', '.join(others) or 'none'} (prune.recovery.methods)")
        return _row(cid, model, prof, criterion=crit,
                    reason=f"{method} (paper A's method) not evaluated at r={r:g}{where}")
    b = float(base["value"].iloc[0])
    v = float(at["value"].iloc[0])
    x = v / b - 1
    measured = f"{method}: ppl {v:.4g} vs {b:.4g} unpruned ({x:+.2%}) on {task[4:]}"
    pruned = rows[(rows["method"] != UNPRUNED) & (rows["ratio"] == r) & rows["value"].notna()]
    if recovered:
        plain = pruned[pruned["method"] == PAPER_METHOD]
        if len(plain):
            measured += f"; without recovery {float(plain['value'].iloc[0]) / b - 1:+.2%}"
    else:
        plain = pruned[~pruned["method"].str.contains("+", regex=False)]
        best = plain.loc[plain["value"].idxmin()]
        measured += (f"; best of {plain['method'].nunique()} methods: {best['method']} "
                     f"{float(best['value']) / b - 1:+.2%}")
    if weak := _no_better_than_unigram(res, model, task, b):
        return _row(cid, model, prof, measured, x, crit, "inconclusive", weak)
    return _row(cid, model, prof, measured, x, crit,
                _three_way(x, x <= t["marginal_ppl"], x > t["large_ppl"]))


def claim_a2(res: Results, model: str, t: dict, stats: pd.DataFrame) -> dict:
    crit = f"mean utilisation: supported <= {t['low_utilisation']:g}, contradicted >= {t['high_utilisation']:g}"
    s = stats[(stats["model"] == model) & (stats["method"] == UNPRUNED)] if not stats.empty else stats
    if s.empty or math.isnan(s["mean utilisation"].iloc[0]):
        return _row("A2", model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no ranks.parquet / heads.csv for {model}")
    u = float(s["mean utilisation"].iloc[0])
    measured = f"mean utilisation {u:.3f} over {int(s['n_heads'].iloc[0])} heads ({s['utilisation source'].iloc[0]})"
    return _row("A2", model, res.profile_name, measured, u, crit,
                _three_way(u, u <= t["low_utilisation"], u >= t["high_utilisation"]))


def claims_a3(res: Results, t: dict) -> list[dict]:
    crit = (f"median over series of ms(d_k0)/ms(d_k0/2): supported >= {t['min_speedup']:g}x, "
            f"contradicted < {t['no_speedup']:g}x")
    bench = res.bench
    ok = bench[(bench["error"].fillna("").astype(str) == "") & bench["ms_median"].notna()
               & (bench["level"] == "op")] if not bench.empty else bench
    if ok.empty:
        return [_row("A3", "–", res.profile_name, criterion=crit, reason="bench stage: no op-level results")]
    rows = []
    series_cols = [c for c in ("impl", "dtype", "B", "T", "H", "d_v") if c in ok.columns]
    for (device, fam, phase), g in ok.groupby(["device", "family", "phase"], sort=True):
        speedups = []
        for _, s in g.groupby(series_cols, dropna=False):
            d_k0 = int(s["d_k"].max())
            half = s[s["d_k"] == d_k0 // 2]
            if d_k0 % 2 == 0 and len(half):
                speedups.append(float(s.loc[s["d_k"] == d_k0, "ms_median"].median() / half["ms_median"].median()))
        label = f"{fam} {phase} ({device})"
        if not speedups:
            rows.append(_row("A3", label, res.profile_name, criterion=crit,
                             reason="no series has both d_k0 and d_k0/2"))
            continue
        s = float(np.median(speedups))
        rows.append(_row("A3", label, res.profile_name,
                         f"speed-up {s:.2f}x at half d_k (ideal 2x; {len(speedups)} series)", s, crit,
                         _three_way(s, s >= t["min_speedup"], s < t["no_speedup"])))
    return rows


def _recall_by_noise(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("noise")["value"].mean().sort_index()


def _probe_method(methods) -> str | None:
    methods = set(methods)
    for m in (PAPER_METHOD,) + PROBE_FALLBACK:
        if m in methods:
            return m
    return sorted(methods)[0] if methods else None


def claims_a4(res: Results, t: dict) -> list[dict]:
    g_ = t["noise_gap"]
    crit = (f"L(d_k) = 1 - recall(max noise)/recall(no noise); gap = L(smallest d_k) - L(full d_k): "
            f"supported >= {g_:g}, contradicted <= {-g_:g}")
    prof = res.profile_name
    mq = res.mqar
    if mq.empty:
        return [_row("A4", "–", prof, criterion=crit,
                     reason="heads stage: no MQAR probe results (mqar/eval/FAMILY.csv of mqar-eval)")]
    out = []
    for model, g in mq.groupby("model", sort=True):
        label = f"MQAR {model}"
        rec = g[(g["metric"] == "recall") & g["value"].notna() & g["noise"].notna()]
        base = rec[rec["kind"] == "none"]
        channel = rec[rec["kind"] == "channel"]
        method = _probe_method(channel["method"])
        if base.empty or method is None:
            out.append(_row("A4", label, prof, criterion=crit,
                            reason="need recall rows of the unpruned model (kind 'none') and of channel pruning "
                                   "(kind 'channel')"))
            continue
        ch = channel[channel["method"] == method]
        full_dk = int(base["d_k"].max())
        curves = {full_dk: _recall_by_noise(base[base["d_k"] == full_dk])}
        for d_k, c in ch[ch["d_k"] < full_dk].groupby("d_k"):
            curves[int(d_k)] = _recall_by_noise(c)
        small_dk = min(curves)
        noise = sorted(set(curves[full_dk].index) & set(curves[small_dk].index))
        if small_dk == full_dk or 0 not in noise or max(noise) <= 0:
            out.append(_row("A4", label, prof, criterion=crit,
                            reason=f"{method}: need recall at noise 0 and > 0 for the full d_k and a pruned d_k "
                                   f"(d_k {sorted(curves)}, noise {noise})"))
            continue
        s = max(noise)

        def loss(c):
            return 1 - float(c[s]) / float(c[0]) if s in c.index and 0 in c.index and c[0] > 0 else math.nan

        losses = {d: loss(c) for d, c in sorted(curves.items(), reverse=True)}
        gap = losses[small_dk] - losses[full_dk]
        f, sm = curves[full_dk], curves[small_dk]
        via = "" if method == PAPER_METHOD else f" ({PAPER_METHOD} not in the probe)"
        measured = (f"{method}{via}, query noise 0 -> {s:g}: recall {f[0]:.3f} -> {f[s]:.3f} at full d_k={full_dk}, "
                    f"{sm[0]:.3f} -> {sm[s]:.3f} at d_k={small_dk}; relative loss by d_k: "
                    + ", ".join(f"{d} {v:.0%}" for d, v in losses.items()) + f" (gap {gap * 100:+.1f} points)")
        if float(f[0]) < t["mqar_floor"]:
            out.append(_row("A4", label, prof, measured, gap, crit, "inconclusive",
                            f"unpruned MQAR recall {float(f[0]):.1%} < {t['mqar_floor']:.0%}: probe model too weak"))
            continue
        if math.isnan(gap):
            out.append(_row("A4", label, prof, measured, gap, crit, "inconclusive",
                            f"recall 0 without noise at d_k={small_dk}: relative loss undefined"))
            continue
        out.append(_row("A4", label, prof, measured, gap, crit, _three_way(gap, gap >= g_, gap <= -g_)))
    return out


# ----------------------------------------------------------------------------- paper B

def claim_b1(res: Results, model: str, t: dict) -> dict:
    crit = (f"x=rank/bound; low x<{t['group_low']:g}, high x>={t['group_high']:g}: supported if both groups "
            f">= {t['min_group']:.0%} of heads and middle <= {t['max_middle']:.0%}; contradicted if a group is empty")
    h = res.heads[(res.heads["model"] == model) & (res.heads["method"] == UNPRUNED)] \
        if not res.heads.empty else res.heads
    if h.empty:
        return _row("B1", model, res.profile_name, criterion=crit, reason=f"profile stage: no heads.csv for {model}")
    x = h["final_rank"].astype(float) / h["bound"].astype(float)
    n = len(x)
    lo, hi = float((x < t["group_low"]).mean()), float((x >= t["group_high"]).mean())
    mid = 1 - lo - hi
    measured = f"{n} heads: low {lo:.0%}, high {hi:.0%}, middle {mid:.0%}"
    if n < t["min_heads"]:
        return _row("B1", model, res.profile_name, measured, min(lo, hi), crit, "inconclusive",
                    f"only {n} heads (< {t['min_heads']:g})")
    verdict = _three_way(min(lo, hi), lo >= t["min_group"] and hi >= t["min_group"] and mid <= t["max_middle"],
                         lo == 0 or hi == 0)
    return _row("B1", model, res.profile_name, measured, min(lo, hi), crit, verdict)


def claim_b2(res: Results, model: str, t: dict, stats: pd.DataFrame) -> dict:
    crit = (f"supported: Spearman >= {t['stable_spearman']:g} and agreement >= {t['stable_agreement']:g}; "
            f"contradicted: Spearman < {t['unstable_spearman']:g} or agreement < {t['unstable_agreement']:g}")
    s = stats[(stats["model"] == model) & (stats["method"] == UNPRUNED)] if not stats.empty else stats
    if s.empty or int(s["n context pairs"].iloc[0]) == 0:
        return _row("B2", model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no consistency.csv for {model}")
    s = s.iloc[0]
    rho, agree = float(s["spearman mean"]), float(s["class agreement mean"])
    measured = (f"Spearman mean {rho:.2f} (min {float(s['spearman min']):.2f}), class agreement mean {agree:.2f} "
                f"(min {float(s['class agreement min']):.2f}) over {int(s['n context pairs'])} context pairs")
    if math.isnan(rho):
        return _row("B2", model, res.profile_name, measured, agree, crit, "inconclusive",
                    "head ranks constant in every context pair (Spearman undefined)")
    verdict = _three_way(rho, rho >= t["stable_spearman"] and agree >= t["stable_agreement"],
                         rho < t["unstable_spearman"] or agree < t["unstable_agreement"])
    return _row("B2", model, res.profile_name, measured, rho, crit, verdict)


def _head_rows(res: Results, model: str, ppl_task: str | None):
    hp = res.head_pruning
    hp = hp[hp["model"] == model] if not hp.empty else hp
    if hp.empty:
        return hp, pd.DataFrame()
    return hp, head_metric_rows(hp, ppl_task)


def _is_base(df: pd.DataFrame) -> pd.Series:
    return (df["method"] == UNPRUNED) | (df["budget"] == 0)


def _task_quality(rows: pd.DataFrame) -> dict:
    """Mean accuracy over non-probe accuracy tasks (fraction) from tidy rows."""
    acc = rows[rows["metric"].map(is_accuracy) & ~rows["task"].map(lambda x: task_matches(x, NIAH_KEYS + MQAR_KEYS))
               & ~rows["task"].astype(str).str.startswith("ppl/")]
    return {(a, m): float(v) for a, m, v in acc.groupby(["task", "metric"])["value"].first().reset_index()
            .itertuples(index=False)}


def claim_b3(res: Results, model: str, t: dict, ppl_task: str | None = None) -> dict:
    target = t["state_target"] - t["state_tolerance"]
    crit = (f"joint method, smallest budget saving >= {target:.1%} of state; retained quality q: "
            f"supported >= {t['kept_quality']:g}, contradicted < {t['lost_quality']:g}")
    hp, rows = _head_rows(res, model, ppl_task)
    if rows.empty:
        return _row("B3", model, res.profile_name, criterion=crit, reason=f"heads stage: no results for {model}")
    joint = rows[rows["method"].str.contains("joint", case=False) & ~_is_base(rows)]
    if joint.empty:
        return _row("B3", model, res.profile_name, criterion=crit, reason="no head-pruning method named '*joint*'")
    reach = joint[joint["state_saved_frac"] >= target]
    if reach.empty:
        best = float(joint["state_saved_frac"].max())
        return _row("B3", model, res.profile_name, f"max state saved {best:.1%}", best, crit, "inconclusive",
                    f"no budget reaches {target:.1%} state saved")
    pick = reach.loc[reach["state_saved_frac"].idxmin()]
    sel = hp[(hp["method"] == pick["method"]) & (hp["budget"] == pick["budget"])]
    base_rows = hp[_is_base(hp)]
    if base_rows.empty and not res.evals.empty:  # fall back to the eval stage's unpruned rows
        ev = res.evals[(res.evals["model"] == model) & (res.evals["method"] == UNPRUNED)]
        base_rows = ev
    q_pruned, q_base = _task_quality(sel), _task_quality(base_rows) if len(base_rows) else {}
    common = sorted(set(q_pruned) & set(q_base))
    saved = float(pick["state_saved_frac"])
    where = f"{pick['method']} budget {pick['budget']:g}, state saved {saved:.1%}"
    if common:
        a_p = float(np.mean([q_pruned[k] for k in common]))
        a_b = float(np.mean([q_base[k] for k in common]))
        q = a_p / a_b if a_b else math.nan
        measured = f"{where}: mean acc {a_p:.3f} vs {a_b:.3f} unpruned over {len(common)} tasks (q={q:.3f})"
    else:
        task = primary_ppl_task(hp["task"], ppl_task)
        base_ppl = math.nan
        if task:
            b = base_rows[(base_rows["task"] == task) & (base_rows["metric"] == "ppl")] if len(base_rows) else base_rows
            base_ppl = float(b["value"].iloc[0]) if len(b) else math.nan
        p = float(pick["ppl"])
        if math.isnan(base_ppl) or math.isnan(p):
            return _row("B3", model, res.profile_name, where, math.nan, crit,
                        reason="no accuracy or perplexity of both the pruned and the unpruned model")
        q = base_ppl / p
        measured = f"{where}: ppl {p:.4g} vs {base_ppl:.4g} unpruned on {task[4:]} (q={q:.3f})"
        if weak := _no_better_than_unigram(res, model, task, base_ppl):
            return _row("B3", model, res.profile_name, measured, q, crit, "inconclusive", weak)
    return _row("B3", model, res.profile_name, measured, q, crit,
                _three_way(q, q >= t["kept_quality"], q < t["lost_quality"]))


def claim_b4(res: Results, model: str, t: dict) -> dict:
    crit = (f"gap = NIAH(high-rank removed) - NIAH(low-rank removed): supported >= {t['niah_gap']:g}, "
            f"contradicted <= 0")
    hp, rows = _head_rows(res, model, None)
    if rows.empty:
        return _row("B4", model, res.profile_name, criterion=crit, reason=f"heads stage: no results for {model}")
    rows = rows[rows["niah"].notna()]
    low = rows[rows["method"].str.contains("low", case=False) & ~_is_base(rows)]
    high = rows[rows["method"].str.contains("high", case=False) & ~_is_base(rows)]
    if low.empty or high.empty:
        return _row("B4", model, res.profile_name, criterion=crit,
                    reason="need NIAH results of a low-rank-first and a high-rank-first method")
    common = sorted(set(low["budget"]) & set(high["budget"]))
    if not common:
        return _row("B4", model, res.profile_name, criterion=crit, reason="low/high methods share no budget")
    b = common[-1]
    a_low = float(low.loc[low["budget"] == b, "niah"].iloc[0])
    a_high = float(high.loc[high["budget"] == b, "niah"].iloc[0])
    base = rows[_is_base(rows)]["niah"]
    a_base = float(base.iloc[0]) if len(base) else math.nan
    if math.isnan(a_base) and not res.evals.empty:  # the eval stage's unpruned NIAH rows, if any
        ev = res.evals[(res.evals["model"] == model) & (res.evals["method"] == UNPRUNED)]
        ev = ev[ev["task"].map(lambda x: task_matches(x, NIAH_KEYS)) & ev["metric"].map(is_accuracy)]["value"]
        if len(ev):
            a_base = float(ev.mean() / 100 if ev.max() > 1 else ev.mean())
    gap = a_high - a_low
    measured = (f"budget {b:g}: NIAH {a_base:.1%} unpruned -> {a_low:.1%} low-rank removed, "
                f"{a_high:.1%} high-rank removed (gap {gap * 100:+.1f} points)")
    if not math.isnan(a_base) and a_base < t["niah_floor"]:
        return _row("B4", model, res.profile_name, measured, gap, crit, "inconclusive",
                    f"unpruned NIAH accuracy {a_base:.1%} < {t['niah_floor']:.0%}: probe too weak")
    return _row("B4", model, res.profile_name, measured, gap, crit,
                _three_way(gap, gap >= t["niah_gap"], gap <= 0))


# ----------------------------------------------------------------------------- table

def claims_frame(res: Results, overrides: dict | None = None, ppl_task: str | None = None) -> pd.DataFrame:
    t = thresholds(overrides)
    stats = rank_stats(res)
    models = _models(res) or ["–"]
    rows = []
    for model in models:
        rows.append(claim_a1(res, model, t, ppl_task))
    for model in models:
        rows.append(claim_a1(res, model, t, ppl_task, recovered=True))
    for model in models:
        rows.append(claim_a2(res, model, t, stats))
    rows += claims_a3(res, t)
    rows += claims_a4(res, t)
    for fn in (claim_b1, claim_b2, claim_b3, claim_b4):
        for model in models:
            if fn is claim_b2:
                rows.append(fn(res, model, t, stats))
            elif fn is claim_b3:
                rows.append(fn(res, model, t, ppl_task))
            else:
                rows.append(fn(res, model, t))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["_k"] = df["id"].map(list(CLAIMS).index)
    return df.sort_values(["_k"], kind="stable").drop(columns="_k").reset_index(drop=True)


def claims_table(res: Results, overrides: dict | None = None, ppl_task: str | None = None) -> Table:
    df = claims_frame(res, overrides, ppl_task)
    criteria = df.drop_duplicates("id")[["id", "criterion"]]
    note = ("Verdict thresholds: lapr/report/claims.py (THRESHOLDS); 'missing' rows name the stage whose results "
            "are absent. Criteria:\n" + "\n".join(f"- {i}: {c}" for i, c in criteria.itertuples(index=False)))
    return Table("claims", f"Claims check of papers A and B on profile '{res.profile_name}'", df, note)


__all__ = ["THRESHOLDS", "CLAIMS", "VERDICTS", "PAPER_METHOD", "thresholds", "claims_frame", "claims_table",
           "a1_corpus"]
