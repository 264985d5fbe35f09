"""Claims check: each headline claim of both papers, our measured number and a verdict.

    table = claims_table(collect("results/embedded"))       # a tables.Table named 'claims'

Paper A = "The Key to State Reduction in Linear Attention" (q/k channel pruning, rank utilisation);
paper B = "State Rank Dynamics in Linear Attention LLMs" (head stratification, head pruning).

One row per claim and model (per device / family for the throughput claim). Every row carries the
measured `value`, its 95% interval [`lo`, `hi`] (lapr.report.intervals: bootstrap over the units the
value is made of -- evaluation windows, documents, NIAH trials, MQAR queries, heads, context pairs,
benchmark series -- named in `interval`) and a verdict:
  supported     the WHOLE interval passes the claim's 'supported' threshold below;
  contradicted  the whole interval passes the 'contradicted' threshold;
  inconclusive  the interval straddles a threshold, the results hold nothing to resample ('no interval:
                ...'), or the measurement cannot decide (too few heads, probe too weak, ...);
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
   The interval carries each series' timing noise (its median's standard error from the recorded IQR
   and repeat count, intervals.median_time) and the spread between series (bootstrap over series).
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
B1-eps the same at every other threshold eps of profiling.eps_sensitivity (heads.csv final_rank_<eps>):
   1e-4 lies below bf16's input resolution, so a split that exists only there is suspect.
B2 "head ranks are stable over time" (paper B: per layer, Spearman rho > 0.90 and cosine > 0.97 of the
   head rank vectors between t = 128 and t = 2048; cosine > 0.98 of the norm vectors), from the profile
   stage's consistency_time.csv: rho = mean over layers (and contexts) of the Spearman of head threshold
   ranks between the early and the last profiled position, c = mean cosine of the rank vectors.
   supported: rho >= time_spearman (0.9) and c >= time_cosine (0.97); contradicted: rho < unstable_spearman
   (0.3); bootstrap over (layer, context) rows.
B2-inputs "head identity (rank / class) is stable across inputs"
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
   on the heads stage's disjoint, count-matched arms (methods arm_low / arm_high / arm_random: k heads of
   the low class vs k of the high class vs k random), else at the largest budget both a low-rank-first
   and a high-rank-first order ran: gap = NIAH(high-rank removed) - NIAH(low-rank removed) (fractions).
   supported: gap >= niah_gap (0.15) and the high-removed model keeps >= high_kept (0.6) of the unpruned
   accuracy; contradicted: gap <= 0 (the replication SRA's finding); inconclusive otherwise, or when the
   unpruned NIAH accuracy is below niah_floor (0.5). `b4_verdict` classifies paper B's own Table 1 rows
   (Instruct 93.8 / 90.6 / 46.9, Thinking 90.6 / 62.5 / 43.8) as supported (tested). Arms the heads
   stage could not form (an empty class) make the row inconclusive, naming why.
B3's joint method is judged at alpha = b3_alpha (0.5; paper B does not publish alpha): the heads stage
   sweeps alpha at the B3 budget and `measured` is read from the rows of that alpha.
B-decay (reported, no verdict) R^2 of an ordinary least-squares fit of each head's final rank / bound on
   its mean gate decay (stratification.csv of the profile stage; the replication SRA reports 0.897 on a
   1.3B Gated DeltaNet), beside the bimodality coefficient of the rank distribution.

Head-pruning method names are matched by substring: 'joint' (joint rank-norm), 'low' (low-rank first),
'high' (high-rank first); the unpruned reference is method 'none' or budget 0, else the eval stage's
unpruned rows.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lapr.report import intervals as iv
from lapr.report.results import UNPRUNED, Results, ratio_value
from lapr.report.tables import (MQAR_KEYS, NIAH_KEYS, Table, head_metric_rows, is_accuracy, ppl_rows,
                                primary_ppl_task, rank_stats, task_matches)

PAPER_METHOD = "strong_rrqr"  # paper A's channel selection (LAP: strong rank-revealing QR)
RECOVERED = f"{PAPER_METHOD}+lora"
IN_DOMAIN = "ppl/gutenberg_valid"  # held-out split of the corpus self-trained models are trained on
# A4's method when the probe lacks strong_rrqr: the nearest to it first
PROBE_FALLBACK = ("pivoted_qr", "pca", "pca_qk", "taylor", "wanda", "l2", "l1", "random")

THRESHOLDS = {
    "ratio": 0.5, "marginal_ppl": 0.05, "large_ppl": 0.20,
    "low_utilisation": 0.25, "high_utilisation": 0.5,
    "min_speedup": 1.5, "no_speedup": 1.1,
    "group_low": 0.25, "group_high": 0.75, "min_group": 0.10, "max_middle": 0.25, "min_heads": 8,
    "stable_spearman": 0.7, "stable_agreement": 0.8, "time_spearman": 0.9, "time_cosine": 0.97, "unstable_spearman": 0.3, "unstable_agreement": 0.6,
    "state_target": 0.389, "state_tolerance": 0.05, "kept_quality": 0.95, "lost_quality": 0.80,
    "niah_gap": 0.15, "high_kept": 0.6, "niah_floor": 0.5, "b3_alpha": 0.5,
    "noise_gap": 0.05, "mqar_floor": 0.5,
}
VERDICTS = ("supported", "contradicted", "inconclusive", "missing", "reported")  # reported: a measured row, not a claim
COLUMNS = ["id", "paper", "claim", "model", "profile", "measured", "value", "lo", "hi", "interval", "criterion",
           "verdict", "reason"]

CLAIMS = {
    "A1": ("A", "50% of q/k channels removed at a marginal perplexity increase (strong RRQR, no recovery)"),
    "A1r": ("A", "50% of q/k channels removed at a marginal perplexity increase (strong RRQR + LoRA recovery)"),
    "A2": ("A", "trained states are low-rank (low rank utilisation)"),
    "A3": ("A", "a smaller d_k makes the kernels faster (ideal 2x at r=0.5)"),
    "A4": ("A", "low effective rank (smaller d_k) amplifies query noise in retrieval (MQAR)"),
    "B1": ("B", "heads split into low-rank and high-rank groups"),
    "B1-eps": ("B", "heads split into low-rank and high-rank groups, at larger rank thresholds eps"),
    "B2": ("B", "head ranks are stable over time (t=128 vs the last position)"),
    "B2-inputs": ("B", "head identity is stable across inputs"),
    "B3": ("B", "38.9% state reduction with accuracy largely kept"),
    "B4": ("B", "low-rank heads are indispensable (NIAH drops when they are removed)"),
    "B-decay": ("B", "a head's gate decay explains its rank (GDN; the replication's R^2 0.897; not a claim of paper B)"),
}


def thresholds(overrides: dict | None = None) -> dict:
    """THRESHOLDS with `overrides` (the figures stage's settings.claims, checked by its model)."""
    from lapr.report.stage import Figures

    t = dict(THRESHOLDS)
    if overrides:
        overrides = Figures.parse({"claims": overrides}).claims
        t.update({k: float(v) for k, v in overrides.items()})
    return t


def _row(cid, model, profile, measured="", value=math.nan, criterion="", verdict="missing", reason="",
         lo=math.nan, hi=math.nan, how=""):
    paper, claim = CLAIMS[cid]
    if verdict not in VERDICTS:
        raise ValueError(f"bad verdict {verdict!r}")
    value = float(value) if value is not None else math.nan
    shown = iv.describe(lo, hi, how=how) if not math.isnan(value) else ""
    return {"id": cid, "paper": paper, "claim": claim, "model": model, "profile": profile, "measured": measured,
            "value": value, "lo": float(lo), "hi": float(hi), "interval": shown, "criterion": criterion,
            "verdict": verdict, "reason": reason}


def _judged(cid, model, profile, measured, value, criterion, reps, supported, contradicted, how,
            reason: str = "") -> dict:
    """A row whose verdict needs the whole 95% interval of `reps` (bootstrap replicates of the value)
    on one side: supported(x) / contradicted(x) test one end. No replicates: inconclusive, saying so."""
    lo, hi = iv.interval(reps) if reps is not None else (math.nan, math.nan)
    if math.isnan(lo):
        return _row(cid, model, profile, measured, value, criterion, "inconclusive",
                    reason or f"no interval: {how or 'the results hold no units to resample'}")
    verdict = iv.decide(lo, hi, supported, contradicted)
    if verdict == "inconclusive" and not reason:
        reason = "the 95% interval straddles a threshold"
    return _row(cid, model, profile, measured, value, criterion, verdict, reason, lo, hi, how)


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
    reps, how = ppl_ratio_replicates(res, model, task, (method, r), (UNPRUNED, 0.0))
    if weak := _no_better_than_unigram(res, model, task, b):
        lo, hi = iv.interval(reps) if reps is not None else (math.nan, math.nan)
        return _row(cid, model, prof, measured, x, crit, "inconclusive", weak, lo, hi, how)
    return _judged(cid, model, prof, measured, x, crit, reps, lambda y: y <= t["marginal_ppl"],
                   lambda y: y > t["large_ppl"], how)


def _units(res: Results, model: str, method: str, ratio: float, task: str) -> pd.DataFrame | None:
    """Per-unit samples (evaluation windows / documents) of one evaluation, from the evaluate stage's
    `<ratio>.samples.csv` sidecars (Results.samples): columns unit, value (summed NLL), weight."""
    sm = getattr(res, "samples", None)
    if sm is None or sm.empty:
        return None
    rows = sm[(sm["model"] == model) & (sm["method"] == method) & (sm["task"] == task)
              & (sm["ratio"].astype(float) == float(ratio)) & (sm["metric"] == "ppl")]
    return rows[["unit", "value", "weight"]] if len(rows) else None


def _nll_row(res: Results, model: str, method: str, ratio: float, task: str):
    ev = res.evals
    r = ev[(ev["model"] == model) & (ev["method"] == method) & (ev["task"] == task) & (ev["metric"] == "nll")
           & (ev["ratio"].astype(float) == float(ratio))]
    return r.iloc[0] if len(r) else None


def ppl_ratio_replicates(res: Results, model: str, task: str, pruned: tuple, base: tuple, seed: int = 0):
    """Bootstrap replicates of ppl(pruned) / ppl(base) - 1 on one corpus, and how they were made:
    paired over the evaluation windows when both evaluations left per-window samples (same text, so
    window difficulty cancels); else from the two mean-NLL standard errors, treated as independent
    (wider); else (None, why)."""
    a, b = _units(res, model, *pruned, task), _units(res, model, *base, task)
    if a is not None and b is not None:
        m = a.merge(b, on="unit", suffixes=("_p", "_b"))
        if len(m) == len(a) == len(b):
            reps = iv.paired_ppl_ratio(m["value_p"], m["value_b"], m["weight_b"], seed=seed)
            return reps, f"paired bootstrap over {len(m)} windows"
    na, nb = _nll_row(res, model, *pruned, task), _nll_row(res, model, *base, task)
    if na is not None and nb is not None and not (pd.isna(na["stderr"]) or pd.isna(nb["stderr"])):
        d = iv.normal(float(na["value"]), float(na["stderr"]), seed=seed) - \
            iv.normal(float(nb["value"]), float(nb["stderr"]), seed=seed + 1)
        return np.expm1(d), "mean-NLL standard errors, unpaired"
    return None, "no per-window samples or NLL standard errors in these results"


def claim_a2(res: Results, model: str, t: dict, stats: pd.DataFrame) -> dict:
    crit = f"mean utilisation: supported <= {t['low_utilisation']:g}, contradicted >= {t['high_utilisation']:g}"
    s = stats[(stats["model"] == model) & (stats["method"] == UNPRUNED)] if not stats.empty else stats
    if s.empty or math.isnan(s["mean utilisation"].iloc[0]):
        return _row("A2", model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no ranks.parquet / heads.csv for {model}")
    u = float(s["mean utilisation"].iloc[0])
    measured = f"mean utilisation {u:.3f} over {int(s['n_heads'].iloc[0])} heads ({s['utilisation source'].iloc[0]})"
    h = res.heads[(res.heads["model"] == model) & (res.heads["method"] == UNPRUNED)] if not res.heads.empty \
        else res.heads
    per_head = h["utilisation"].astype(float).to_numpy() if "utilisation" in h and len(h) else np.array([])
    # resampling heads: the heads' spread, not the mean's source (per-head final utilisation from heads.csv)
    reps = iv.mean(per_head) + (u - float(np.nanmean(per_head))) if len(per_head) else None
    return _judged("A2", model, res.profile_name, measured, u, crit, reps, lambda x: x <= t["low_utilisation"],
                   lambda x: x >= t["high_utilisation"], f"bootstrap over {len(per_head)} heads")


def claims_a3(res: Results, t: dict) -> list[dict]:
    crit = (f"median over series of ms(d_k0)/ms(d_k0/2): supported >= {t['min_speedup']:g}x, "
            f"contradicted < {t['no_speedup']:g}x")
    bench = res.bench
    ok = bench[(bench["error"].fillna("").astype(str) == "") & bench["ms_median"].notna()
               & (bench["level"] == "op")] if not bench.empty else bench
    if ok.empty:
        return [_row("A3", "–", res.profile_name, criterion=crit, reason="bench stage: no op-level results")]
    rows = []
    # a series: one timing configuration over d_k (eager and graph-captured decode are two series)
    series_cols = [c for c in ("impl", "dtype", "B", "T", "H", "d_v", "decode_mode") if c in ok.columns]
    for (device, fam, phase), g in ok.groupby(["device", "family", "phase"], sort=True):
        speedups, series_reps = [], []
        for i, (_, s) in enumerate(g.groupby(series_cols, dropna=False)):
            d_k0 = int(s["d_k"].max())
            full, half = _median_row(s[s["d_k"] == d_k0]), s[s["d_k"] == d_k0 // 2]
            if d_k0 % 2 == 0 and len(half):
                half = _median_row(half)
                speedups.append(float(full["ms_median"] / half["ms_median"]))
                series_reps.append(_timing_ratio(full, half, seed=2 * i))
        label = f"{fam} {phase} ({device})"
        if not speedups:
            rows.append(_row("A3", label, res.profile_name, criterion=crit,
                             reason="no series has both d_k0 and d_k0/2"))
            continue
        s = float(np.median(speedups))
        reps = iv.median_of_units(np.array(series_reps))
        rows.append(_judged("A3", label, res.profile_name,
                            f"speed-up {s:.2f}x at half d_k (ideal 2x; {len(speedups)} series)", s, crit, reps,
                            lambda x: x >= t["min_speedup"], lambda x: x < t["no_speedup"],
                            f"each series' timing noise (median +- its IQR over n repeats), "
                            f"bootstrap over {len(speedups)} series"))
    return rows


def _median_row(rows: pd.DataFrame) -> pd.Series:
    """The row of median ms_median among repeated timings of one configuration (normally one row)."""
    rows = rows.sort_values("ms_median", kind="stable")
    return rows.iloc[(len(rows) - 1) // 2]


def _timing_ratio(full: pd.Series, half: pd.Series, seed: int) -> np.ndarray:
    """Replicates of ms(d_k0) / ms(d_k0/2) from each row's median, IQR and repeat count (a row without
    them: NaN replicates, so the claim has no interval rather than a point that looks certain)."""
    def reps(row, k):
        return iv.median_time(float(row["ms_median"]), float(row.get("ms_iqr", np.nan)),
                              int(row["n_repeats"]) if pd.notna(row.get("n_repeats")) else 0, seed=seed + k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return reps(full, 0) / reps(half, 1)


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

        def n_of(rows, d_k, noise):
            sel = rows[(rows["d_k"] == d_k) & (rows["noise"] == noise)]["n"]
            return int(sel.sum()) if len(sel) and sel.notna().all() else 0

        # recall measured on n queries each: Jeffreys replicates of the four recalls the gap is made of
        src = {full_dk: base, small_dk: ch}
        draws = {(d, z): iv.proportion(float(curves[d][z]), n_of(src[d], d, z), seed=i)
                 for i, (d, z) in enumerate([(full_dk, 0), (full_dk, s), (small_dk, 0), (small_dk, s)])}
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = (1 - draws[(small_dk, s)] / draws[(small_dk, 0)]) - (1 - draws[(full_dk, s)] / draws[(full_dk, 0)])
        n_q = min(n_of(src[d], d, z) for d, z in draws)
        how = f"recall of {n_q}+ queries per cell, Jeffreys replicates"

        losses = {d: loss(c) for d, c in sorted(curves.items(), reverse=True)}
        gap = losses[small_dk] - losses[full_dk]
        f, sm = curves[full_dk], curves[small_dk]
        via = "" if method == PAPER_METHOD else f" ({PAPER_METHOD} not in the probe)"
        measured = (f"{method}{via}, query noise 0 -> {s:g}: recall {f[0]:.3f} -> {f[s]:.3f} at full d_k={full_dk}, "
                    f"{sm[0]:.3f} -> {sm[s]:.3f} at d_k={small_dk}; relative loss by d_k: "
                    + ", ".join(f"{d} {v:.0%}" for d, v in losses.items()) + f" (gap {gap * 100:+.1f} points)")
        if float(f[0]) < t["mqar_floor"]:
            lo, hi = iv.interval(reps)
            out.append(_row("A4", label, prof, measured, gap, crit, "inconclusive",
                            f"unpruned MQAR recall {float(f[0]):.1%} < {t['mqar_floor']:.0%}: probe model too weak",
                            lo, hi, how))
            continue
        if math.isnan(gap):
            out.append(_row("A4", label, prof, measured, gap, crit, "inconclusive",
                            f"recall 0 without noise at d_k={small_dk}: relative loss undefined"))
            continue
        out.append(_judged("A4", label, prof, measured, gap, crit, reps, lambda x: x >= g_, lambda x: x <= -g_,
                           how if n_q else "", "" if n_q else "no interval: the probe rows lack query counts (n)"))
    return out


# ----------------------------------------------------------------------------- paper B

def _b1_fractions(x: np.ndarray, t: dict) -> tuple[float, float, float]:
    lo, hi = float(np.mean(x < t["group_low"])), float(np.mean(x >= t["group_high"]))
    return lo, hi, 1 - lo - hi


def claim_b1(res: Results, model: str, t: dict, rank_col: str = "final_rank", eps_label: str = "") -> dict:
    crit = (f"x=rank/bound; low x<{t['group_low']:g}, high x>={t['group_high']:g}: supported if both groups "
            f">= {t['min_group']:.0%} of heads and middle <= {t['max_middle']:.0%}; contradicted if a group is empty")
    cid = cid_key = "B1-eps" if eps_label else "B1"
    h = res.heads[(res.heads["model"] == model) & (res.heads["method"] == UNPRUNED)] \
        if not res.heads.empty else res.heads
    if h.empty or rank_col not in h:
        return _row(cid_key, model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no heads.csv for {model}" if h.empty else f"heads.csv lacks {rank_col}")
    x = (h[rank_col].astype(float) / h["bound"].astype(float)).to_numpy()
    n = len(x)
    lo, hi, mid = _b1_fractions(x, t)
    measured = f"{n} heads: low {lo:.0%}, high {hi:.0%}, middle {mid:.0%}" + (f" (eps {eps_label})" if eps_label else "")
    # resampling heads; each replicate is judged whole (both groups large enough and a small middle)
    idx = np.random.default_rng(iv.SEED).integers(0, n, size=(iv.N_BOOT, n))
    fr = np.array([_b1_fractions(x[i], t) for i in idx])
    reps = np.minimum(fr[:, 0], fr[:, 1])
    ok = (fr[:, 0] >= t["min_group"]) & (fr[:, 1] >= t["min_group"]) & (fr[:, 2] <= t["max_middle"])
    lo_i, hi_i = iv.interval(reps)
    how = f"bootstrap over {n} heads; criterion held in {ok.mean():.0%} of replicates"
    row = lambda verdict, reason="": _row(cid_key, model, res.profile_name, measured, min(lo, hi), crit,  # noqa: E731
                                          verdict, reason, lo_i, hi_i, how)
    if n < t["min_heads"]:
        out = row("inconclusive", f"only {n} heads (< {t['min_heads']:g})")
    elif lo == 0 or hi == 0:
        out = row("contradicted")
    elif ok.mean() >= iv.LEVEL + (1 - iv.LEVEL) / 2:  # the criterion holds across the 95% interval
        out = row("supported")
    else:
        out = row("inconclusive", "the criterion fails in more than 2.5% of bootstrap replicates")
    return out


def claims_b1_eps(res: Results, model: str, t: dict) -> list[dict]:
    """B1 again from heads.csv's final_rank_<eps> columns (profiling.eps_sensitivity), one row per eps
    other than the default: 1e-4 lies below bf16's input resolution, so the split should survive 1e-3, 1e-2."""
    h = res.heads
    cols = sorted(c for c in h.columns if c.startswith("final_rank_") and c != "final_rank_1e-4") if len(h) else []
    mine = h[h["model"] == model] if len(h) else h
    cols = [c for c in cols if len(mine) and mine[c].notna().any()]
    if not cols:
        return [_row("B1-eps", model, res.profile_name, criterion="as B1",
                     reason="heads.csv has no final_rank_<eps> columns (profiling.eps_sensitivity)")]
    return [claim_b1(res, model, t, c, c.removeprefix("final_rank_")) for c in cols]


def claim_decay(res: Results, model: str, t: dict) -> dict:
    """R^2 of final rank / bound on the mean gate decay per head (profile stage's stratification.csv, as
    the replication SRA regresses it); reported, not judged."""
    st = _profile_file(res, model, "stratification.csv")
    crit = "R^2 of OLS final rank / bound ~ mean decay over heads (SRA: 0.897 on GDN-2 1.3B)"
    if st is None or st.empty or "decay_r2" not in st:
        return _row("B-decay", model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no stratification.csv for {model}")
    row = st[st["primary"].astype(str).str.lower() == "true"] if "primary" in st else st
    row = (row if len(row) else st).iloc[0]
    r2 = float(row["decay_r2"])
    n = int(row["decay_n_heads"]) if "decay_n_heads" in row and row["decay_n_heads"] == row["decay_n_heads"] else 0
    if math.isnan(r2):
        return _row("B-decay", model, res.profile_name, "no gate (not a gated family)", r2, crit, "reported",
                    "mean_decay is NaN for a family without a decay gate")
    measured = (f"R^2 {r2:.3f} over {n} heads (slope {float(row['decay_slope']):.3g}); bimodality coefficient "
                f"{float(row['bimodality']):.3f} (bimodal above 5/9)")
    return _row("B-decay", model, res.profile_name, measured, r2, crit, "reported")


def claim_b2_inputs(res: Results, model: str, t: dict, stats: pd.DataFrame) -> dict:
    crit = (f"supported: Spearman >= {t['stable_spearman']:g} and agreement >= {t['stable_agreement']:g}; "
            f"contradicted: Spearman < {t['unstable_spearman']:g} or agreement < {t['unstable_agreement']:g}")
    s = stats[(stats["model"] == model) & (stats["method"] == UNPRUNED)] if not stats.empty else stats
    if s.empty or int(s["n context pairs"].iloc[0]) == 0:
        return _row("B2-inputs", model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no consistency.csv for {model}")
    s = s.iloc[0]
    rho, agree = float(s["spearman mean"]), float(s["class agreement mean"])
    measured = (f"Spearman mean {rho:.2f} (min {float(s['spearman min']):.2f}), class agreement mean {agree:.2f} "
                f"(min {float(s['class agreement min']):.2f}) over {int(s['n context pairs'])} context pairs")
    if math.isnan(rho):
        return _row("B2-inputs", model, res.profile_name, measured, agree, crit, "inconclusive",
                    "head ranks constant in every context pair (Spearman undefined)")
    c = res.consistency
    c = c[(c["model"] == model) & (c["method"] == UNPRUNED)] if not c.empty else c
    rhos = c["spearman"].astype(float).to_numpy() if len(c) else np.array([rho])
    keep = c["keep_fraction"].astype(float).to_numpy() if len(c) and "keep_fraction" in c else np.full(len(rhos), agree)
    idx = np.random.default_rng(iv.SEED).integers(0, len(rhos), size=(iv.N_BOOT, len(rhos)))
    r_reps = np.nanmean(rhos[idx], axis=1)
    k_reps = np.nanmean(keep[idx], axis=1)
    (r_lo, r_hi), (k_lo, k_hi) = iv.interval(r_reps), iv.interval(k_reps)
    if r_lo >= t["stable_spearman"] and k_lo >= t["stable_agreement"]:
        verdict, reason = "supported", ""
    elif r_hi < t["unstable_spearman"] or k_hi < t["unstable_agreement"]:
        verdict, reason = "contradicted", ""
    else:
        verdict, reason = "inconclusive", (f"95% intervals: Spearman [{r_lo:.2f}, {r_hi:.2f}], agreement "
                                           f"[{k_lo:.2f}, {k_hi:.2f}] straddle a threshold")
    return _row("B2-inputs", model, res.profile_name, measured, rho, crit, verdict, reason, r_lo, r_hi,
                f"bootstrap over {len(rhos)} context pairs")


def _profile_file(res: Results, model: str, name: str) -> pd.DataFrame | None:
    """A table the profile stage wrote beside heads.csv for the unpruned model (None if absent)."""
    d = res.profile_dirs.get((model, UNPRUNED, 0.0))
    if d is None:
        d = next((p for (m, meth, _), p in res.profile_dirs.items() if m == model and meth == UNPRUNED), None)
    path = d / name if d is not None else None
    if path is None or not path.is_file():
        return None
    return pd.read_csv(path)


def claim_b2(res: Results, model: str, t: dict) -> dict:
    crit = (f"per layer, head threshold ranks at t=128 vs the last position: supported if mean Spearman >= "
            f"{t['time_spearman']:g} and mean cosine >= {t['time_cosine']:g}; contradicted if Spearman < "
            f"{t['unstable_spearman']:g}")
    ct = _profile_file(res, model, "consistency_time.csv")
    if ct is None or ct.empty:
        return _row("B2", model, res.profile_name, criterion=crit,
                    reason=f"profile stage: no consistency_time.csv for {model}")
    if "context" in ct:
        mean_rows = ct[ct["context"].astype(str) == "mean"]
        natural = ct[ct["natural"].astype(str).str.lower() == "true"] if "natural" in ct else \
            ct[ct["context"].astype(str) != "mean"]
        ct = natural if len(natural) else ct
    rho_col = "spearman"
    cos_col = "cosine_rank" if "cosine_rank" in ct else None
    rhos = pd.to_numeric(ct[rho_col], errors="coerce").to_numpy()
    coss = pd.to_numeric(ct[cos_col], errors="coerce").to_numpy() if cos_col else np.full(len(rhos), np.nan)
    norms = pd.to_numeric(ct["cosine_norm"], errors="coerce").to_numpy() if "cosine_norm" in ct else None
    rho, cos = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else math.nan, float(np.nanmean(coss))
    t0 = ct["t_early"].iloc[0] if "t_early" in ct else "?"
    t1 = ct["t_late"].iloc[0] if "t_late" in ct else "?"
    measured = (f"t={t0} vs t={t1}, {len(ct)} (layer, context) rows: Spearman mean {rho:.2f}, rank-vector cosine "
                f"{cos:.3f}" + (f", norm-vector cosine {float(np.nanmean(norms)):.3f}" if norms is not None else ""))
    if math.isnan(rho):
        return _row("B2", model, res.profile_name, measured, rho, crit, "inconclusive",
                    "head ranks constant within every layer (Spearman undefined)")
    heads_per_layer = int(pd.to_numeric(ct["n_heads"], errors="coerce").max()) if "n_heads" in ct else 0
    if 0 < heads_per_layer < 3:
        return _row("B2", model, res.profile_name, measured, rho, crit, "inconclusive",
                    f"{heads_per_layer} heads per layer: a per-layer Spearman can only be +-1")
    idx = np.random.default_rng(iv.SEED).integers(0, len(rhos), size=(iv.N_BOOT, len(rhos)))
    with np.errstate(all="ignore"):
        r_lo, r_hi = iv.interval(np.nanmean(rhos[idx], axis=1))
        c_lo, _ = iv.interval(np.nanmean(coss[idx], axis=1))
    if r_lo >= t["time_spearman"] and (math.isnan(c_lo) or c_lo >= t["time_cosine"]):
        verdict, reason = "supported", ""
    elif r_hi < t["unstable_spearman"]:
        verdict, reason = "contradicted", ""
    else:
        verdict, reason = "inconclusive", "the 95% interval straddles a threshold"
    return _row("B2", model, res.profile_name, measured, rho, crit, verdict, reason, r_lo, r_hi,
                f"bootstrap over {len(rhos)} (layer, context) rows")


def _head_rows(res: Results, model: str, ppl_task: str | None, alpha: float | None = None):
    """Head-pruning rows of one model (one alpha of the joint method's sweep when alpha is given: the
    sweep writes one set of rows per alpha at the B3 budget) and their per-(method, budget) summary."""
    hp = res.head_pruning
    hp = hp[hp["model"] == model] if not hp.empty else hp
    if alpha is not None and len(hp) and "alpha" in hp:
        a = pd.to_numeric(hp["alpha"], errors="coerce")
        joint = hp["method"].astype(str).str.contains("joint")
        hp = hp[~joint | a.isna() | np.isclose(a, alpha)]
    if hp.empty:
        return hp, pd.DataFrame()
    return hp, head_metric_rows(hp, ppl_task)


def _is_base(df: pd.DataFrame) -> pd.Series:
    arm = df["method"].astype(str).str.startswith("arm_")  # B4's arms are recorded at budget 0 when unformable
    return ((df["method"] == UNPRUNED) | (df["budget"] == 0)) & ~arm


def _task_quality(rows: pd.DataFrame) -> dict:
    """Mean accuracy over non-probe accuracy tasks (fraction) from tidy rows."""
    acc = rows[rows["metric"].map(is_accuracy) & ~rows["task"].map(lambda x: task_matches(x, NIAH_KEYS + MQAR_KEYS))
               & ~rows["task"].astype(str).str.startswith("ppl/")]
    return {(a, m): float(v) for a, m, v in acc.groupby(["task", "metric"])["value"].first().reset_index()
            .itertuples(index=False)}


# Accuracy of guessing, per task of PAPER_A_TASKS (matched by name): piqa and winogrande have two
# choices, hellaswag and ARC four (a few ARC items have 3 or 5), LAMBADA's exact word none.
CHANCE = {"piqa": 0.5, "winogrande": 0.5, "hellaswag": 0.25, "arc_easy": 0.25, "arc_challenge": 0.25,
          "lambada": 0.0}


def chance_level(task: str) -> float | None:
    return next((c for name, c in CHANCE.items() if name in str(task)), None)


def _at_chance(q_base: dict, n_base: dict, keys: list, seed: int = 7) -> str:
    """Why the unpruned model's accuracy cannot judge what pruning kept, or '': where its mean accuracy
    over `keys` is not above the mean chance level at the 95% level (Jeffreys replicates of each task
    on its document count), a ratio of accuracies compares noise with noise."""
    chance = [chance_level(task) for task, _ in keys]
    if not keys or any(c is None for c in chance) or not all(n_base.get(k, 0) > 0 for k in keys):
        return ""
    reps = np.mean([iv.proportion(q_base[k], n_base[k], seed=seed + i) for i, k in enumerate(keys)], axis=0)
    level = float(np.mean(chance))
    if np.quantile(reps, 0.025) > level:
        return ""
    return (f"unpruned accuracy {np.mean([q_base[k] for k in keys]):.3f} is not above chance {level:.3f} "
            f"over {len(keys)} task metrics (95% level), so retained accuracy is judged on perplexity instead")


def _alpha_sweep(res: Results, model: str, pick, ppl_task: str | None) -> str:
    """'; ppl by alpha 0: x, 0.25: y, ...' at the picked budget: how much the unpublished alpha matters."""
    hp = res.head_pruning
    if hp.empty or "alpha" not in hp:
        return ""
    g = hp[(hp["model"] == model) & (hp["method"] == pick["method"]) & (hp["budget"] == pick["budget"])]
    task = a1_corpus(res, model, g["task"], ppl_task) if len(g) else None
    g = g[(g["task"] == task) & (g["metric"] == "ppl")] if task else g.iloc[0:0]
    by = g.groupby(pd.to_numeric(g["alpha"], errors="coerce"))["value"].first()
    if len(by) < 2:
        return ""
    return f"; {task[4:]} ppl by alpha " + ", ".join(f"{a:g}: {v:.4g}" for a, v in by.items())


def _task_counts(rows: pd.DataFrame) -> dict:
    """(task, metric) -> number of documents the accuracy was measured on (`n` or `n_docs`)."""
    col = "n" if "n" in rows else "n_docs" if "n_docs" in rows else None
    if col is None or rows.empty:
        return {}
    out = {}
    for (task, metric), g in rows.groupby(["task", "metric"]):
        n = pd.to_numeric(g[col], errors="coerce").dropna()
        if len(n):
            out[(task, metric)] = int(n.iloc[0])
    return out


def claim_b3(res: Results, model: str, t: dict, ppl_task: str | None = None) -> dict:
    target = t["state_target"] - t["state_tolerance"]
    crit = (f"joint method, smallest budget saving >= {target:.1%} of state; retained quality q: "
            f"supported >= {t['kept_quality']:g}, contradicted < {t['lost_quality']:g}")
    hp, rows = _head_rows(res, model, ppl_task, alpha=t["b3_alpha"])
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
    if not common and q_pruned and not res.evals.empty:
        # the heads stage's unpruned job runs no lm-eval tasks: the evaluate stage's unpruned rows (same
        # tasks and document limits) are the reference
        base_rows = res.evals[(res.evals["model"] == model) & (res.evals["method"] == UNPRUNED)]
        q_base = _task_quality(base_rows)
        common = sorted(set(q_pruned) & set(q_base))
    saved = float(pick["state_saved_frac"])
    where = f"{pick['method']} budget {pick['budget']:g}, state saved {saved:.1%}"
    where += _alpha_sweep(res, model, pick, ppl_task)
    reps, how = None, ""
    chance = _at_chance(q_base, _task_counts(base_rows), common) if common else ""
    if common and not chance:
        a_p = float(np.mean([q_pruned[k] for k in common]))
        a_b = float(np.mean([q_base[k] for k in common]))
        q = a_p / a_b if a_b else math.nan
        measured = f"{where}: mean acc {a_p:.3f} vs {a_b:.3f} unpruned over {len(common)} tasks (q={q:.3f})"
        n_p, n_b = _task_counts(sel), _task_counts(base_rows)
        if all(n_p.get(k, 0) > 0 and n_b.get(k, 0) > 0 for k in common):
            rp = np.mean([iv.proportion(q_pruned[k], n_p[k], seed=2 * i) for i, k in enumerate(common)], axis=0)
            rb = np.mean([iv.proportion(q_base[k], n_b[k], seed=2 * i + 1) for i, k in enumerate(common)], axis=0)
            reps, how = rp / rb, "per-task accuracies on their document counts, Jeffreys replicates"
    else:
        task = a1_corpus(res, model, hp["task"], ppl_task)  # in-domain for a self-trained model
        base_ppl = math.nan
        if task:
            b = base_rows[(base_rows["task"] == task) & (base_rows["metric"] == "ppl")] if len(base_rows) else base_rows
            base_ppl = float(b["value"].iloc[0]) if len(b) else math.nan
        pp = sel[(sel["task"] == task) & (sel["metric"] == "ppl")] if task else sel.iloc[0:0]
        p = float(pp["value"].iloc[0]) if len(pp) else math.nan
        if math.isnan(base_ppl) or math.isnan(p):
            return _row("B3", model, res.profile_name, where, math.nan, crit,
                        reason="no accuracy or perplexity of both the pruned and the unpruned model")
        q = base_ppl / p
        measured = f"{where}: ppl {p:.4g} vs {base_ppl:.4g} unpruned on {task[4:]} (q={q:.3f})"
        measured += f" ({chance})" if chance else ""
        how = "no per-window samples of head-pruned perplexity"
        if weak := _no_better_than_unigram(res, model, task, base_ppl):
            return _row("B3", model, res.profile_name, measured, q, crit, "inconclusive", weak)
    return _judged("B3", model, res.profile_name, measured, q, crit, reps, lambda x: x >= t["kept_quality"],
                   lambda x: x < t["lost_quality"], how)


def b4_verdict(base: float, low: float, high: float, t: dict) -> str:
    """Paper B's retrieval claim on one set of NIAH accuracies (fractions): removing the low-rank heads
    must cost clearly more than removing the high-rank ones (gap = high - low >= niah_gap) while the
    high-rank-removed model keeps most of the base level (high / base >= high_kept). Calibrated on the
    paper's own Table 1 (Qwen3-Next): Instruct 93.8 / 90.6 / 46.9 (base / high removed / low removed)
    and Thinking 90.6 / 62.5 / 43.8 both classify as supported (gaps 0.437 and 0.187, retention 0.97 and
    0.69). Contradicted: removing high-rank heads costs at least as much (gap <= 0), the replication
    SRA's finding on a pure Gated DeltaNet."""
    if any(math.isnan(x) for x in (low, high)):
        return "inconclusive"
    gap = high - low
    kept = high / base if base and not math.isnan(base) else math.nan
    if gap >= t["niah_gap"] and (math.isnan(kept) or kept >= t["high_kept"]):
        return "supported"
    if gap <= 0:
        return "contradicted"
    return "inconclusive"


def _niah_arm(rows: pd.DataFrame) -> tuple[float, int]:
    """Mean NIAH accuracy of an arm (fraction) and the number of trials behind it."""
    acc = float(rows["niah"].mean())
    n = pd.to_numeric(rows["niah_n"], errors="coerce").sum() if "niah_n" in rows else 0
    return acc, int(n) if n == n else 0


def claim_b4(res: Results, model: str, t: dict, ppl_task: str | None = None) -> dict:
    crit = (f"gap = NIAH(high-rank removed) - NIAH(low-rank removed), same number of heads: supported if "
            f"gap >= {t['niah_gap']:g} and high-removed keeps >= {t['high_kept']:.0%} of base; contradicted if "
            f"gap <= 0 (judged at both ends of the 95% interval)")
    corpus = a1_corpus(res, model, res.head_pruning["task"] if len(res.head_pruning) else [], ppl_task)
    hp, rows = _head_rows(res, model, corpus)
    if rows.empty:
        return _row("B4", model, res.profile_name, criterion=crit, reason=f"heads stage: no results for {model}")
    rows = rows[rows["niah"].notna()]
    raw = hp[hp["method"].astype(str).str.startswith("arm_")] if len(hp) else hp
    if len(raw) and "status" in raw and not (raw["status"].astype(str) == "ok").all():
        why = sorted(set(raw.loc[raw["status"].astype(str) != "ok", "status"].astype(str)))
        return _row("B4", model, res.profile_name, criterion=crit, verdict="inconclusive",
                    reason=f"disjoint arms not formed: {'; '.join(why)[:300]}")
    arms = _disjoint_arms(rows)
    if arms is None:
        return _row("B4", model, res.profile_name, criterion=crit,
                    reason="need NIAH results of a low-rank-first and a high-rank-first method")
    low, high, rand, label = arms
    (a_low, n_low), (a_high, n_high) = _niah_arm(low), _niah_arm(high)
    base = rows[_is_base(rows)]
    a_base, n_base = _niah_arm(base) if len(base) else (math.nan, 0)
    if math.isnan(a_base) and not res.evals.empty:  # the eval stage's unpruned NIAH rows, if any
        ev = res.evals[(res.evals["model"] == model) & (res.evals["method"] == UNPRUNED)]
        ev = ev[ev["task"].map(lambda x: task_matches(x, NIAH_KEYS)) & ev["metric"].map(is_accuracy)]["value"]
        if len(ev):
            a_base = float(ev.mean() / 100 if ev.max() > 1 else ev.mean())
    gap = a_high - a_low
    measured = (f"{label}: NIAH {a_base:.1%} unpruned -> {a_low:.1%} low-rank removed, "
                f"{a_high:.1%} high-rank removed (gap {gap * 100:+.1f} points)")
    if rand is not None and len(rand):
        measured += f", {_niah_arm(rand)[0]:.1%} random ({int(rand['draws'].sum())} draw(s))"  # head_metric_rows counts them
    ppl = {name: float(g["ppl"].mean()) for name, g in (("low", low), ("high", high), ("random", rand))
           if g is not None and len(g) and "ppl" in g and g["ppl"].notna().any()}
    if {"low", "high"} <= set(ppl):  # which heads matter by perplexity too: NIAH alone often cannot say
        measured += (f"; {corpus[4:] if corpus else ''} ppl {ppl['low']:.4g} low-rank removed, {ppl['high']:.4g} high-rank removed"
                     + (f", {ppl['random']:.4g} random (mean)" if "random" in ppl else ""))
    if n_low and n_high:
        r_low, r_high = iv.proportion(a_low, n_low, seed=1), iv.proportion(a_high, n_high, seed=2)
        r_base = iv.proportion(a_base, n_base, seed=3) if n_base else np.full(iv.N_BOOT, a_base)
        reps = r_high - r_low
        how = f"NIAH trials {n_low} / {n_high} per arm, Jeffreys replicates"
    else:
        reps, how = None, "the NIAH rows lack trial counts (n)"
    if not math.isnan(a_base) and a_base < t["niah_floor"]:
        lo, hi = iv.interval(reps) if reps is not None else (math.nan, math.nan)
        return _row("B4", model, res.profile_name, measured, gap, crit, "inconclusive",
                    f"unpruned NIAH accuracy {a_base:.1%} < {t['niah_floor']:.0%}: probe too weak", lo, hi, how)
    if reps is None:
        return _row("B4", model, res.profile_name, measured, gap, crit, "inconclusive", f"no interval: {how}")
    lo, hi = iv.interval(reps)
    kept_lo = iv.interval(r_high / r_base)[0] if n_base else (a_high / a_base if a_base else math.nan)
    if lo >= t["niah_gap"] and (math.isnan(kept_lo) or kept_lo >= t["high_kept"]):
        verdict, reason = "supported", ""
    elif hi <= 0:
        verdict, reason = "contradicted", ""
    else:
        verdict, reason = "inconclusive", "the 95% interval straddles a threshold"
    return _row("B4", model, res.profile_name, measured, gap, crit, verdict, reason, lo, hi, how)


def _disjoint_arms(rows: pd.DataFrame):
    """(low arm, high arm, random arm or None, label): the heads stage's disjoint, count-matched arms
    (methods named arm_low / arm_high / arm_random) when present, else the largest budget both a
    low-rank-first and a high-rank-first method ran (the arms may then overlap; the label says so)."""
    m = rows["method"].astype(str)
    arm = rows[m.str.startswith("arm_")]
    if len(arm) and "status" in arm and not (arm["status"].astype(str) == "ok").all():
        return None
    if len(arm):
        low = arm[arm["method"].str.contains("low")]
        high = arm[arm["method"].str.contains("high")]
        rand = arm[arm["method"].str.contains("random")]
        if len(low) and len(high):
            k = int(pd.to_numeric(low["heads_removed"], errors="coerce").max()) if "heads_removed" in low else -1
            return low, high, rand, f"disjoint arms of k={k} heads each"
    low = rows[m.str.contains("low", case=False) & ~_is_base(rows)]
    high = rows[m.str.contains("high", case=False) & ~_is_base(rows)]
    if low.empty or high.empty:
        return None
    common = sorted(set(low["budget"]) & set(high["budget"]))
    if not common:
        return None
    b = common[-1]
    rand = rows[m.str.contains("random", case=False) & (rows["budget"] == b)]
    return (low[low["budget"] == b], high[high["budget"] == b], rand,
            f"budget {b:g} (low/high-first orders; arms may overlap)")


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
    for model in models:
        rows += claims_b1_eps(res, model, t)
    for fn in (claim_b1, claim_b2, claim_b2_inputs, claim_b3, claim_b4, claim_decay):
        for model in models:
            if fn is claim_b2_inputs:
                rows.append(fn(res, model, t, stats))
            elif fn in (claim_b3, claim_b4):
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


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, labels: tuple[str, str] = ("s0", "s1")) -> pd.DataFrame:
    """Two claims tables of the same profile (e.g. two seeds) side by side, one row per claims row:
    k = id|model|n-th row of that (id, model), then each run's verdict, value and interval. Rows only
    one run has keep NaN for the other (nothing is dropped)."""
    def keyed(df):
        df = df.assign(n=df.groupby(["id", "model"]).cumcount())
        return df.assign(k=df["id"] + "|" + df["model"].astype(str) + "|" + df["n"].astype(str)).set_index("k")
    x, y = keyed(a), keyed(b)
    cols = ["verdict", "value", "lo", "hi"]
    out = x[cols].add_suffix(f"_{labels[0]}").join(y[cols].add_suffix(f"_{labels[1]}"), how="outer")
    order = [f"{c}_{s}" for c in cols for s in labels]
    return out[order].reset_index()


def main(argv=None) -> None:
    """python -m lapr.report.claims A/claims.csv B/claims.csv --out C.csv: compare_runs of two runs."""
    import argparse

    from lapr import provenance

    p = argparse.ArgumentParser(prog="python -m lapr.report.claims", description=compare_runs.__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--labels", nargs=2, default=["s0", "s1"])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    table = compare_runs(pd.read_csv(args.a), pd.read_csv(args.b), tuple(args.labels))
    provenance.write_table(args.out, table)
    same = (table[f"verdict_{args.labels[0]}"] == table[f"verdict_{args.labels[1]}"]).sum()
    print(f"[claims] {same} of {len(table)} verdicts equal; wrote {args.out}")


__all__ = ["THRESHOLDS", "CLAIMS", "VERDICTS", "PAPER_METHOD", "thresholds", "claims_frame", "claims_table",
           "a1_corpus", "compare_runs"]


if __name__ == "__main__":
    main()
