"""Synthetic results/PROFILE trees in the file formats of LAYOUT.md (no model is run).

Each writer covers one stage and takes the numbers the tests then look for in tables / claims.
`write_all(root)` builds a complete, embedded-sized tree.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lapr import columns

MODELS = {"deltanet": "delta_net", "gdn": "gated_deltanet"}
METHODS = ("random", "l2", "wanda", "strong_rrqr")
RATIOS = (0.25, 0.5, 0.75)
BASE_PPL = {"deltanet": {"gutenberg_valid": 80.0, "wikitext2_test_raw": 400.0},
            "gdn": {"gutenberg_valid": 70.0, "wikitext2_test_raw": 350.0}}
SLOPE = {"random": 0.8, "l2": 0.4, "wanda": 0.2, "strong_rrqr": 0.06}  # ppl(r) = base * (1 + slope * r)
TASKS = {"lapr_piqa": ["acc", "acc_norm"], "lapr_hellaswag": ["acc", "acc_norm"],
         "lapr_lambada_openai": ["acc", "perplexity"], "lapr_wikitext": ["word_perplexity", "byte_perplexity"]}


def ppl_value(model, corpus, method, ratio, slope=None):
    s = (slope or SLOPE)[method] if method != "none" else 0.0
    return BASE_PPL[model][corpus] * (1 + s * ratio)


def acc_value(model, task, metric, method, ratio):
    base = {"lapr_piqa": 0.60, "lapr_hellaswag": 0.30, "lapr_lambada_openai": 0.10}[task]
    base += 0.02 if metric == "acc_norm" else 0.0
    base += 0.01 if model == "gdn" else 0.0
    drop = 0.0 if method == "none" else SLOPE[method] * ratio * 0.1
    return base - drop


def write_pretrain(root: Path, models=MODELS, steps=100):
    for model, fam in models.items():
        d = root / "models" / model
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for step in range(1, steps + 1):
            row = {"step": step, "tokens": step * 2048, "train_loss": 9.0 - 4 * (1 - math.exp(-step / 30)),
                   "lr": 1e-3, "elapsed_s": step * 0.1}
            if step % 25 == 0:
                row["valid_loss"] = row["train_loss"] + 0.2
            rows.append(row)
        pd.DataFrame(rows).to_csv(d / "loss_curve.csv", index=False)
        metrics = {"family": fam, "parameters": 1_234_567 if model == "deltanet" else 1_300_000, "steps": steps,
                   "planned_steps": steps, "stopped_early": False, "train_tokens_seen": steps * 2048,
                   "backend": "torch", "train_time_s": 12.3}
        for corpus, ppl in BASE_PPL[model].items():
            metrics[corpus] = {"nll": math.log(ppl), "ppl": ppl, "tokens": 16384, "unigram_ppl": 900.0,
                               "beats_unigram": True}
        metrics["provenance"] = {"git_commit": "x"}
        (d / "metrics.json").write_text(json.dumps(metrics))


def write_profile(root: Path, model: str, final_ranks=None, bound=16, utilisation=0.1, spearman=(0.9, 0.8, 1.0),
                  keep=(1.0, 0.9, 1.0), key: str | None = None, contexts=("gutenberg", "wikitext", "attack"),
                  positions=(1, 4, 16, 64, 256)):
    """profile/KEY (KEY = model or model/method/ratio). final_ranks: per head (layer-major), len = L*H."""
    final_ranks = list(final_ranks if final_ranks is not None else [1, 2, 16, 15, 1, 16, 14, 2])
    n_layers, n_heads = 2, len(final_ranks) // 2
    d = root / "profile" / (key or model)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in contexts:
        for sample in range(2):
            for i, fr in enumerate(final_ranks):
                layer, head = divmod(i, n_heads)
                for p in positions:
                    b = min(p, bound)
                    rows.append({"context": c, "sample": sample, "layer": layer, "head": head, "position": p,
                                 "threshold_rank": int(min(fr, b)), "stable_rank": utilisation * bound,
                                 "utilisation": utilisation, "entropy_rank": 1.0, "frobenius": 1.0,
                                 "spectral": 1.0, "bound": b})
    pd.DataFrame(rows).to_parquet(d / "ranks.parquet", index=False)
    heads = pd.DataFrame([{"layer": divmod(i, n_heads)[0], "head": divmod(i, n_heads)[1], "final_rank": float(fr),
                           "bound": bound, "state_norm": 1.0, "class": "high" if fr >= 0.5 * bound else "low",
                           "stable_rank": utilisation * bound, "utilisation": utilisation}
                          for i, fr in enumerate(final_ranks)])
    heads.to_csv(d / "heads.csv", index=False)
    pairs = [(a, b) for i, a in enumerate(contexts) for b in contexts[i + 1:]]
    pd.DataFrame([{"context_a": a, "context_b": b, "n_heads": len(final_ranks), "spearman": rho,
                   "spearman_p": 0.01, "constant": bool(np.isnan(rho)), "keep_fraction": k}
                  for (a, b), rho, k in zip(pairs, spearman, keep)]).to_csv(d / "consistency.csv", index=False)
    (d / "timing.json").write_text(json.dumps({
        "device": "cpu", "device_name": "x86_64", "T": positions[-1], "batch": 2, "n_positions": len(positions),
        "n_layers": n_layers, "n_heads": len(final_ranks), "forward_s": 1.0, "capture_s": 1.5, "metrics_s": 0.1,
        "capture_over_forward": 1.5, "profile_over_forward": 1.6, "calibration_s": 0.5, "total_s": 4.0}))
    return d


EVAL_COLS = columns.EVAL


def eval_rows(model, method, ratio, slope=None, lm=True):
    rows = []
    for corpus in BASE_PPL[model]:
        v = ppl_value(model, corpus, method, ratio, slope)
        rows += [(model, method, ratio, f"ppl/{corpus}", "ppl", v, 0.5, 32, 32768),
                 (model, method, ratio, f"ppl/{corpus}", "nll", math.log(v), 0.001, 32, 32768)]
        if method == "none":
            rows.append((model, method, ratio, f"ppl/{corpus}", "unigram_ppl", 900.0, math.nan, 32, 32768))
    if lm:
        for task, metrics in TASKS.items():
            for metric in metrics:
                if metric in ("acc", "acc_norm"):
                    v = acc_value(model, task, metric, method, ratio)
                else:
                    v = 100.0 * (1 + (SLOPE[method] * ratio if method != "none" else 0))
                rows.append((model, method, ratio, task, metric, v, 0.01, 50, 50))
    return pd.DataFrame(rows, columns=EVAL_COLS)


def write_evals(root: Path, models=MODELS, methods=METHODS, ratios=RATIOS, slope=None, lm=True):
    for model in models:
        d = root / "eval" / model / "none"
        d.mkdir(parents=True, exist_ok=True)
        eval_rows(model, "none", 0.0, slope, lm).to_csv(d / "0.csv", index=False)
        for method in methods:
            d = root / "eval" / model / method
            d.mkdir(parents=True, exist_ok=True)
            for r in ratios:
                eval_rows(model, method, r, slope, lm).to_csv(d / f"{r:g}.csv", index=False)


def write_pruning(root: Path, models=MODELS, methods=METHODS, ratios=RATIOS, d_k=64, d_v=64, recovery=False):
    for model, fam in models.items():
        for method in methods:
            for r in ratios:
                d = root / "pruned" / model / method / f"{r:g}"
                d.mkdir(parents=True, exist_ok=True)
                kept = int(math.floor(d_k * (1 - r)))
                before, after = 4 * 2 * d_k * d_v * 4, 4 * 2 * kept * d_v * 4
                doc = {"method": method, "kind": "selection", "ratio": r, "effective_ratio": 1 - kept / d_k,
                       "multiple": 1, "seed": 0, "family": fam, "model": model, "d_k_before": d_k,
                       "d_k_after": kept, "d_v": d_v, "layers": [],
                       "state_bytes_per_sequence": {"before": before, "after": after, "dtype": "float32",
                                                    "fraction": after / before},
                       "conv_state_bytes_per_sequence": {"before": 100, "after": 80, "dtype": "float32"},
                       "parameters": {"before": 1000, "after": 900},
                       "recovery": {"enabled": recovery, "steps_run": 20 if recovery else 0,
                                    "first_loss": 5.0 if recovery else None, "last_loss": 4.5 if recovery else None}}
                (d / "pruning.json").write_text(json.dumps(doc))


def bench_ops_rows(device="cpu", d_ks=(64, 48, 32), speed=1.8, iqr=0.01):
    """ms(d_k) = 1 / (d_k0/d_k)^(log speed / log 2): speed-up `speed` at half d_k; every median's
    interquartile range over its 10 repeats is `iqr` ms."""
    rows = []
    e = math.log(speed) / math.log(2)
    for fam in ("delta_net", "gated_deltanet"):
        for phase in ("prefill", "decode"):
            d_k0 = max(d_ks)
            for d_k in d_ks:
                ms = 2.0 / (d_k0 / d_k) ** e
                rows.append({"level": "op", "family": fam, "impl": "torch", "device": device,
                             "device_name": "x86_64", "dtype": "float32", "phase": phase, "B": 1,
                             "T": 256 if phase == "prefill" else 1, "H": 4, "d_k": d_k, "d_v": 64,
                             "ms_median": ms, "ms_iqr": iqr, "ms_q25": ms, "ms_q75": ms,
                             "tokens_per_s": (256 if phase == "prefill" else 1) / ms * 1000,
                             "peak_mem_bytes": 2**20 * d_k, "mem_method": "rss", "state_bytes": 4 * d_k * 64 * 4,
                             "n_repeats": 10, "n_warmup": 3, "first_call_ms": ms, "clock": "perf_counter",
                             "error": ""})
    return pd.DataFrame(rows)


def write_bench(root: Path, device="cpu", speed=1.8, iqr=0.01):
    d = root / "bench"
    d.mkdir(parents=True, exist_ok=True)
    bench_ops_rows(device, speed=speed, iqr=iqr).to_csv(d / f"ops_{device}.csv", index=False)
    rows = []
    for model, fam in MODELS.items():
        for method, r, d_k in (("none", 0.0, 64), ("wanda", 0.5, 32)):
            for phase in ("prefill", "decode"):
                ms = 10.0 if d_k == 64 else 7.0
                rows.append({"level": "model", "family": fam, "impl": "torch", "device": device,
                             "device_name": "x86_64", "dtype": "float32", "phase": phase, "B": 1,
                             "T": 128 if phase == "prefill" else 1, "H": 2, "d_k": d_k, "d_v": 64, "ms_median": ms,
                             "ms_iqr": 0.1, "ms_q25": ms, "ms_q75": ms, "tokens_per_s": 1000 / ms,
                             "peak_mem_bytes": 2**22, "mem_method": "rss", "state_bytes": 4 * 2 * d_k * 64 * 4,
                             "n_repeats": 10, "n_warmup": 3, "first_call_ms": ms, "clock": "perf_counter",
                             "error": "", "model": model, "method": method, "ratio": r, "num_layers": 4,
                             "hidden_size": 128, "prompt_len": 16, "state_bytes_per_seq": 4 * 2 * d_k * 64 * 4,
                             "cache_bytes_per_seq": 4 * 2 * d_k * 64 * 4 + 100})
    pd.DataFrame(rows).to_csv(d / f"models_{device}.csv", index=False)


HEAD_COLS = columns.HEAD_PRUNING


def write_heads(root: Path, models=("deltanet", "gdn"), niah=None, ppl=None, saved=None, budgets=(0.25, 0.5),
                accuracy=None, n=20000):
    """heads/MODEL/METHOD/BUDGET.csv. niah / ppl / saved / accuracy: {method: {budget: value}} overrides;
    the unpruned reference is method 'none' budget 0."""
    niah = niah or {"none": {0.0: 0.9}, "low_rank": {0.25: 0.5, 0.5: 0.3}, "high_rank": {0.25: 0.85, 0.5: 0.8},
                    "joint": {0.25: 0.85, 0.5: 0.7}, "random": {0.25: 0.8, 0.5: 0.6}}
    ppl = ppl or {"none": {0.0: 100.0}, "low_rank": {0.25: 110.0, 0.5: 130.0}, "high_rank": {0.25: 120.0, 0.5: 150.0},
                  "joint": {0.25: 102.0, 0.5: 110.0}, "random": {0.25: 115.0, 0.5: 140.0}}
    saved = saved or {"none": {0.0: 0.0}, "low_rank": {0.25: 0.25, 0.5: 0.5}, "high_rank": {0.25: 0.25, 0.5: 0.5},
                      "joint": {0.25: 0.25, 0.5: 0.4}, "random": {0.25: 0.25, 0.5: 0.5}}
    full = 4 * 2 * 64 * 64 * 4
    for model in models:
        for method, by_budget in niah.items():
            for b, acc in by_budget.items():
                s = saved[method][b]
                rows = [(model, method, b, "niah", "acc", acc), (model, method, b, "ppl/gutenberg_valid", "ppl",
                                                                  ppl[method][b])]
                if accuracy is not None:
                    rows.append((model, method, b, "lapr_piqa", "acc", accuracy[method][b]))
                df = pd.DataFrame(rows, columns=HEAD_COLS[:6])
                df["n"] = [n if t != "ppl/gutenberg_valid" else 16 for t in df["task"]]  # trials / docs / windows
                df["state_bytes"] = full * (1 - s)
                df["state_bytes_full"] = full
                df["state_saved_frac"] = s
                df["application"] = "masked"
                d = root / "heads" / model / method
                d.mkdir(parents=True, exist_ok=True)
                df.reindex(columns=HEAD_COLS).to_csv(d / f"{b:g}.csv", index=False)


def write_all(root: Path) -> Path:
    root = Path(root)
    write_pretrain(root)
    for model in MODELS:
        write_profile(root, model)
    write_evals(root)
    write_pruning(root)
    write_bench(root)
    write_heads(root)
    return root


MQAR_COLS = ["model", "family", "kind", "method", "ratio", "d_k", "heads_removed", "removed_low", "removed_high",
             "noise", "metric", "value", "n", "state_bytes", "state_bytes_full", "state_saved_frac", "application"]


def write_mqar(root: Path, families=("delta_net",), method="strong_rrqr", base_recall=0.98, loss=None,
               noise=(0.0, 0.5, 1.0), d_k=32):
    """mqar/eval/FAMILY.csv: recall(d_k, noise) = r0(d_k) * (1 - loss[d_k] * noise / max(noise)), so that
    loss[d_k] is the relative recall lost at the largest noise. r0 = base_recall at the full d_k, lower
    when pruned. kind 'none' at d_k, kind 'channel' (`method`) at ratios 0.25 / 0.5 / 0.75."""
    loss = loss or {32: 0.3, 24: 0.35, 16: 0.4, 8: 0.5}
    for fam in families:
        rows = []
        cells = [("none", "none", 0.0, d_k)] + [("channel", method, r, int(d_k * (1 - r))) for r in (0.25, 0.5, 0.75)]
        for kind, m, r, dk in cells:
            r0 = base_recall * (1 - 0.3 * (1 - dk / d_k))
            for s in noise:
                rec = r0 * (1 - loss[dk] * s / max(noise)) if max(noise) > 0 else r0
                for metric, v in (("recall", rec), ("loss", 1 - rec)):
                    rows.append({"model": fam, "family": fam, "kind": kind, "method": m, "ratio": r, "d_k": dk,
                                 "heads_removed": 0, "removed_low": math.nan, "removed_high": math.nan, "noise": s,
                                 "metric": metric, "value": v, "n": 2048, "state_bytes": 4 * dk * 32 * 4,
                                 "state_bytes_full": 4 * d_k * 32 * 4, "state_saved_frac": 1 - dk / d_k,
                                 "application": "structural" if kind != "none" else "none"})
        d = root / "mqar" / "eval"
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=MQAR_COLS).to_csv(d / f"{fam}.csv", index=False)
        (d / f"{fam}.provenance.json").write_text("{}")
