"""Read everything under results/PROFILE into tidy pandas frames (the report's only input).

    res = collect("results/embedded")
    res.evals          # one row per (model, method, ratio, task, metric)
    res.problems       # result files that exist but could not be read (build_report refuses them)

Only the result *files* described in LAYOUT.md are read; no stage module is imported. A stage that
has not run yet gives an empty frame with the documented columns, so every builder downstream can
test `frame.empty` instead of guarding against missing columns.

Sources (relative to the results directory):

  models/MODEL/metrics.json          -> pretrain (one row per model x eval corpus)
  models/MODEL/loss_curve.csv        -> loss_curves (+ model)
  profile/KEY/ranks.parquet          -> ranks (+ model, method, ratio)
  profile/KEY/heads.csv              -> heads (+ model, method, ratio)
  profile/KEY/consistency.csv        -> consistency (+ model, method, ratio)
  profile/KEY/timing.json            -> timing (one row per profile)
  pruned/MODEL/METHOD/RATIO/pruning.json -> pruning (one flat row per checkpoint)
  eval/MODEL/METHOD/RATIO.csv        -> evals (method 'none', ratio 0 = unpruned)
  eval/MODEL/METHOD/RATIO.samples.csv -> samples (+ model, method, ratio; absent for older results)
  bench/**/*.csv                     -> bench (+ source file)
  heads/MODEL/METHOD/BUDGET.csv      -> head_pruning
  mqar/eval/FAMILY.csv               -> mqar (MQAR recall under channel / head pruning x query noise)

KEY is MODEL for the profile of an unpruned checkpoint (method 'none', ratio 0) or
MODEL/METHOD/RATIO for the profile of a pruned checkpoint, if the workflow profiles those (the
rank-utilisation vs perplexity scatter uses every profiled checkpoint that was also evaluated).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lapr import columns

PRETRAIN_COLUMNS = ["model", "family", "parameters", "steps", "planned_steps", "stopped_early",
                    "train_tokens_seen", "train_time_s", "final_train_loss", "final_valid_loss",
                    "corpus", "nll", "ppl", "tokens", "unigram_ppl", "beats_unigram"]
CURVE_COLUMNS = ["model", "step", "tokens", "train_loss", "lr", "elapsed_s", "valid_loss"]
KEY_COLUMNS = ["model", "method", "ratio"]
RANK_COLUMNS = KEY_COLUMNS + ["context", "sample", "layer", "head", "position", "threshold_rank",
                              "stable_rank", "utilisation", "entropy_rank", "frobenius", "spectral", "bound"]
HEAD_COLUMNS = KEY_COLUMNS + ["layer", "head", "final_rank", "bound", "state_norm", "class",
                              "stable_rank", "utilisation"]
CONSISTENCY_COLUMNS = KEY_COLUMNS + ["context_a", "context_b", "n_heads", "spearman", "spearman_p",
                                     "constant", "keep_fraction"]
TIMING_COLUMNS = KEY_COLUMNS + ["device", "device_name", "T", "batch", "n_positions", "n_layers", "n_heads",
                                "forward_s", "capture_s", "metrics_s", "capture_over_forward",
                                "profile_over_forward", "calibration_s", "total_s"]
PRUNING_COLUMNS = KEY_COLUMNS + ["kind", "effective_ratio", "multiple", "family", "d_k_before", "d_k_after",
                                 "d_v", "state_bytes_before", "state_bytes_after", "state_fraction",
                                 "conv_state_bytes_before", "conv_state_bytes_after", "parameters_before",
                                 "parameters_after", "recovery_enabled", "recovery_steps",
                                 "recovery_first_loss", "recovery_last_loss"]
EVAL_COLUMNS = columns.EVAL
SAMPLE_COLUMNS = KEY_COLUMNS + columns.SAMPLES
BENCH_COLUMNS = ["level", "family", "impl", "device", "device_name", "dtype", "phase", "B", "T", "H", "d_k",
                 "d_v", "ms_median", "ms_iqr", "tokens_per_s", "peak_mem_bytes", "state_bytes", "error",
                 "model", "method", "ratio", "state_bytes_per_seq", "source"]
HEAD_PRUNING_COLUMNS = ["model", "method", "budget", "task", "metric", "value", "state_bytes",
                        "state_bytes_full", "state_saved_frac", "application"]
# the mqar-eval stage's table (= lapr.probes.mqar_stage.COLUMNS, which imports torch; a test keeps the two equal)
MQAR_COLUMNS = columns.MQAR

UNPRUNED = "none"  # the method name of unpruned rows (ratio 0)


def ratio_value(x) -> float:
    """A ratio / budget as a float rounded to 6 decimals (file names like '0.5', '0', '0.25')."""
    return round(float(x), 6)


@dataclass
class Results:
    """Tidy frames of one results directory; `problems` lists files skipped (path: reason)."""

    root: Path
    pretrain: pd.DataFrame
    loss_curves: pd.DataFrame
    ranks: pd.DataFrame
    heads: pd.DataFrame
    consistency: pd.DataFrame
    timing: pd.DataFrame
    pruning: pd.DataFrame
    evals: pd.DataFrame
    bench: pd.DataFrame
    head_pruning: pd.DataFrame
    mqar: pd.DataFrame = field(default_factory=lambda: _empty(MQAR_COLUMNS))
    # per-unit values behind the eval rows (lapr.columns.SAMPLES): one row per window / document
    samples: pd.DataFrame = field(default_factory=lambda: _empty(SAMPLE_COLUMNS))
    bench_files: list[Path] = field(default_factory=list)
    profile_dirs: dict = field(default_factory=dict)  # (model, method, ratio) -> profile directory
    problems: list[str] = field(default_factory=list)

    @property
    def profile_name(self) -> str:
        return self.root.name

    def stages(self) -> dict[str, bool]:
        """Which stages left results: name -> present."""
        return {"pretrain": not self.pretrain.empty, "profile": not (self.ranks.empty and self.heads.empty),
                "prune": not self.pruning.empty, "evaluate": not self.evals.empty,
                "bench": not self.bench.empty, "heads": not self.head_pruning.empty}


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _frame(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Concatenate parts; documented columns first (added empty when absent), extras after."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return _empty(columns)
    df = pd.concat(parts, ignore_index=True)
    for c in columns:
        if c not in df.columns:
            df[c] = math.nan
    return df[columns + [c for c in df.columns if c not in columns]]


def _problem(problems: list, path: Path, err: Exception) -> None:
    problems.append(f"{path}: {type(err).__name__}: {err}")


def _visible(paths, base: Path) -> list[Path]:
    """Paths without a hidden component below `base` (atomic writes in flight are '.name.*.tmp')."""
    return sorted(p for p in paths if not any(part.startswith(".") for part in p.relative_to(base).parts))


def _read_json(path: Path) -> dict:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


# ----------------------------------------------------------------------------- pretrain

def load_pretrain(root: Path, problems: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for model_dir in (p for p in _visible((root / "models").glob("*"), root) if p.is_dir()):
        model = model_dir.name
        curve = None
        curve_path = model_dir / "loss_curve.csv"
        if curve_path.is_file():
            try:
                curve = pd.read_csv(curve_path)
                curves.append(curve.assign(model=model))
            except Exception as err:  # noqa: BLE001 - a broken file is reported, not fatal
                _problem(problems, curve_path, err)
                curve = None
        path = model_dir / "metrics.json"
        if not path.is_file():
            continue
        try:
            doc = _read_json(path)
        except Exception as err:  # noqa: BLE001
            _problem(problems, path, err)
            continue
        base = {k: doc.get(k) for k in ("family", "parameters", "steps", "planned_steps", "stopped_early",
                                        "train_tokens_seen", "train_time_s")}
        base["model"] = model
        base["final_train_loss"] = math.nan
        base["final_valid_loss"] = math.nan
        if curve is not None and len(curve):
            if "train_loss" in curve:
                base["final_train_loss"] = float(curve["train_loss"].dropna().iloc[-1]) \
                    if curve["train_loss"].notna().any() else math.nan
            # the checkpoint is the weight average when pretraining kept one (settings.ema)
            valid = "valid_loss_ema" if "valid_loss_ema" in curve else "valid_loss"
            if valid in curve and curve[valid].notna().any():
                base["final_valid_loss"] = float(curve[valid].dropna().iloc[-1])
        corpora = {k: v for k, v in doc.items() if isinstance(v, dict) and "ppl" in v}
        if not corpora:
            rows.append({**base, "corpus": None})
        for corpus, m in corpora.items():
            rows.append({**base, "corpus": corpus, **{k: m.get(k) for k in
                                                       ("nll", "ppl", "tokens", "unigram_ppl", "beats_unigram")}})
    pretrain = _frame([pd.DataFrame(rows)] if rows else [], PRETRAIN_COLUMNS)
    return pretrain, _frame(curves, CURVE_COLUMNS)


# ----------------------------------------------------------------------------- profiling

PROFILE_FILES = ("ranks.parquet", "heads.csv", "consistency.csv", "timing.json")


def _profile_key(profile_root: Path, directory: Path):
    parts = directory.relative_to(profile_root).parts
    if len(parts) == 1:
        return parts[0], UNPRUNED, 0.0
    if len(parts) == 3:
        return parts[0], parts[1], ratio_value(parts[2])
    raise ValueError(f"unexpected profile directory depth {len(parts)} (want MODEL or MODEL/METHOD/RATIO)")


def load_profiles(root: Path, problems: list):
    profile_root = root / "profile"
    ranks, heads, cons, timing, dirs = [], [], [], [], {}
    if not profile_root.is_dir():
        return (_empty(RANK_COLUMNS), _empty(HEAD_COLUMNS), _empty(CONSISTENCY_COLUMNS),
                _empty(TIMING_COLUMNS), dirs)
    found = sorted({p.parent for name in PROFILE_FILES for p in _visible(profile_root.rglob(name), profile_root)})
    for d in found:
        try:
            model, method, ratio = _profile_key(profile_root, d)
        except ValueError as err:
            _problem(problems, d, err)
            continue
        key = {"model": model, "method": method, "ratio": ratio}
        dirs[(model, method, ratio)] = d
        for name, sink in (("ranks.parquet", ranks), ("heads.csv", heads), ("consistency.csv", cons)):
            path = d / name
            if not path.is_file():
                continue
            try:
                df = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
                sink.append(df.assign(**key))
            except Exception as err:  # noqa: BLE001
                _problem(problems, path, err)
        path = d / "timing.json"
        if path.is_file():
            try:
                doc = _read_json(path)
                timing.append(pd.DataFrame([{**key, **{c: doc.get(c) for c in TIMING_COLUMNS[3:]}}]))
            except Exception as err:  # noqa: BLE001
                _problem(problems, path, err)
    return (_frame(ranks, RANK_COLUMNS), _frame(heads, HEAD_COLUMNS), _frame(cons, CONSISTENCY_COLUMNS),
            _frame(timing, TIMING_COLUMNS), dirs)


# ----------------------------------------------------------------------------- pruning

def _flatten_pruning(doc: dict, model: str, method: str, ratio: float) -> dict:
    state = doc.get("state_bytes_per_sequence") or {}
    conv = doc.get("conv_state_bytes_per_sequence") or {}
    params = doc.get("parameters") or {}
    rec = doc.get("recovery") or {}
    before, after = state.get("before"), state.get("after")
    fraction = state.get("fraction")
    if fraction is None and before and after is not None:
        fraction = after / before
    return {"model": model, "method": method,  # the path's: pruning.json names a recovered one's base method
            "ratio": ratio_value(doc["ratio"]) if doc.get("ratio") is not None else ratio,
            "kind": doc.get("kind"), "effective_ratio": doc.get("effective_ratio"), "multiple": doc.get("multiple"),
            "family": doc.get("family"), "d_k_before": doc.get("d_k_before"), "d_k_after": doc.get("d_k_after"),
            "d_v": doc.get("d_v"), "state_bytes_before": before, "state_bytes_after": after,
            "state_fraction": fraction, "conv_state_bytes_before": conv.get("before"),
            "conv_state_bytes_after": conv.get("after"), "parameters_before": params.get("before"),
            "parameters_after": params.get("after"), "recovery_enabled": bool(rec.get("enabled", False)),
            "recovery_steps": rec.get("steps_run"), "recovery_first_loss": rec.get("first_loss"),
            "recovery_last_loss": rec.get("last_loss")}


def load_pruning(root: Path, problems: list) -> pd.DataFrame:
    rows = []
    for path in _visible((root / "pruned").glob("*/*/*/pruning.json"), root):
        model, method, ratio = path.parts[-4], path.parts[-3], path.parts[-2]
        try:
            rows.append(_flatten_pruning(_read_json(path), model, method, ratio_value(ratio)))
        except Exception as err:  # noqa: BLE001
            _problem(problems, path, err)
    return _frame([pd.DataFrame(rows)] if rows else [], PRUNING_COLUMNS)


# ----------------------------------------------------------------------------- evaluation

def _fill_key(df: pd.DataFrame, **key) -> pd.DataFrame:
    """Columns model/method/ratio from the file's path where the file lacks them or leaves them empty."""
    df = df.copy()
    for col, value in key.items():
        if col not in df.columns:
            df[col] = value
        else:
            df[col] = df[col].where(df[col].notna(), value)
    return df


def _read_each(paths, read, problems: list) -> list[pd.DataFrame]:
    """read(path) for every path; a file that fails is a problem (path: reason), never a crash."""
    parts = []
    for path in paths:
        try:
            parts.append(read(path))
        except Exception as err:  # noqa: BLE001
            _problem(problems, path, err)
    return parts


def _read_table(path: Path, schema: list[str], kind: str) -> pd.DataFrame:
    """A result CSV that must have every column its producer writes (lapr/columns.py)."""
    df = pd.read_csv(path)
    if missing := set(schema) - set(df.columns):
        raise ValueError(f"missing columns {sorted(missing)} of the {kind} result schema (lapr/columns.py)")
    return df


def _load_grid(root: Path, stage: str, x: str, schema: list[str], shown, numeric, problems: list) -> pd.DataFrame:
    """Tidy rows of results/<p>/<stage>/<model>/<method>/<x>.csv, keyed by the path where a file
    leaves a key column empty. A file must have every column of the producer's `schema`
    (lapr/columns.py); the stage's sidecar files beside it are not result tables."""
    def read(path: Path) -> pd.DataFrame:
        model, method = path.parts[-3], path.parts[-2]
        df = _fill_key(_read_table(path, schema, stage), model=model, method=method, **{x: ratio_value(path.stem)})
        df[x] = df[x].map(ratio_value)
        df["model"] = df["model"].astype(str)
        df["method"] = df["method"].astype(str)
        return df

    tables = [p for p in _visible((root / stage).glob("*/*/*.csv"), root)
              if not p.name.endswith(columns.SIDECARS.get(stage, ()))]
    df = _frame(_read_each(tables, read, problems), shown)
    if len(df):
        for c in numeric:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def load_evals(root: Path, problems: list) -> pd.DataFrame:
    return _load_grid(root, "eval", "ratio", columns.EVAL, EVAL_COLUMNS, ("value", "stderr"), problems)


SAMPLES_SUFFIX = columns.SAMPLES_SUFFIX


def load_eval_samples(root: Path, problems: list) -> pd.DataFrame:
    """Rows of every results/<p>/eval/<model>/<method>/<ratio>.samples.csv, keyed by the path
    (model, method, ratio). Checkpoints evaluated before the stage wrote samples simply have none."""
    def read(path: Path) -> pd.DataFrame:
        df = _read_table(path, columns.SAMPLES, "eval samples")
        ratio = ratio_value(path.name.removesuffix(SAMPLES_SUFFIX))
        return df.assign(model=path.parts[-3], method=path.parts[-2], ratio=ratio)

    paths = _visible((root / "eval").glob(f"*/*/*{SAMPLES_SUFFIX}"), root)
    df = _frame(_read_each(paths, read, problems), SAMPLE_COLUMNS)
    if len(df):
        for c in ("unit", "value", "weight"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
        df["model"] = df["model"].astype(str)
        df["method"] = df["method"].astype(str)
    return df


def sample_metric(value_sum, weight_sum, metric: str):
    """A table value from the sums of a (task, metric)'s per-unit samples (lapr.columns.SAMPLES)."""
    m = value_sum / weight_sum
    kind = columns.SAMPLE_TRANSFORM.get(str(metric).split(",")[0], "mean")
    if kind == "exp":
        return np.exp(m)
    if kind == "bits":
        return m / math.log(2)
    return m


def aggregate_samples(samples: pd.DataFrame, by=("model", "method", "ratio", "task", "metric")) -> pd.DataFrame:
    """The table values the samples reproduce: one row per `by` group with a `value` column (the
    eval rows' value for the same key; a bootstrap resamples `unit`s and calls this on each draw)."""
    by = list(by)
    if samples.empty:
        return _empty(by + ["value", "units"])
    g = samples.groupby(by, sort=False, dropna=False).agg(value_sum=("value", "sum"), weight_sum=("weight", "sum"),
                                                          units=("unit", "size")).reset_index()
    g["value"] = [sample_metric(v, w, m) for v, w, m in zip(g["value_sum"], g["weight_sum"], g["metric"])]
    return g[by + ["value", "units"]]


# ----------------------------------------------------------------------------- bench

def load_bench(root: Path, problems: list) -> tuple[pd.DataFrame, list[Path]]:
    files = []

    def read(path: Path) -> pd.DataFrame:
        df = pd.read_csv(path)
        if "d_k" not in df.columns or "ms_median" not in df.columns:
            raise ValueError("not a bench table (no d_k / ms_median column)")
        df["error"] = df["error"].astype(object).fillna("").astype(str) if "error" in df.columns else ""
        if "level" not in df.columns:
            df["level"] = "op"
        df["source"] = str(path.relative_to(root))
        files.append(path)
        return df

    bench_root = root / "bench"
    paths = _visible(bench_root.rglob("*.csv"), root) if bench_root.is_dir() else []
    df = _frame(_read_each(paths, read, problems), BENCH_COLUMNS)
    if len(df) and "ratio" in df:
        df["ratio"] = pd.to_numeric(df["ratio"], errors="coerce")
    if len(df) and "model" in df:  # rows written before lapr.bench.models named a pruned model by its path
        df["model"] = df["model"].map(lambda m: Path(m).name if isinstance(m, str) and "/" in m else m)
    return df, files


# ----------------------------------------------------------------------------- head pruning

def load_head_pruning(root: Path, problems: list) -> pd.DataFrame:
    return _load_grid(root, "heads", "budget", columns.HEAD_PRUNING, HEAD_PRUNING_COLUMNS,
                      ("value", "state_bytes", "state_bytes_full", "state_saved_frac"), problems)


# ----------------------------------------------------------------------------- MQAR probe

def load_mqar(root: Path, problems: list) -> pd.DataFrame:
    """Rows of results/<p>/mqar/eval/<family>.csv (the provenance JSON beside each is not read); a file
    must have every column of the mqar-eval schema (MQAR_COLUMNS); `model` defaults to the file's stem."""
    def read(path: Path) -> pd.DataFrame:
        df = _fill_key(_read_table(path, MQAR_COLUMNS, "mqar-eval"), model=path.stem)
        df["model"] = df["model"].astype(str)
        return df

    base = root / "mqar" / "eval"
    paths = _visible(base.glob("*.csv"), root) if base.is_dir() else []
    df = _frame(_read_each(paths, read, problems), MQAR_COLUMNS)
    if len(df):
        for c in ("ratio", "d_k", "noise", "value", "n", "state_bytes", "state_bytes_full", "state_saved_frac"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
        df["ratio"] = df["ratio"].map(ratio_value)
    return df


# ----------------------------------------------------------------------------- everything

def collect(results_dir) -> Results:
    """All result frames of one results directory (results/PROFILE). Never raises on missing stages."""
    root = Path(results_dir)
    problems: list[str] = []
    pretrain, curves = load_pretrain(root, problems)
    ranks, heads, cons, timing, dirs = load_profiles(root, problems)
    bench, bench_files = load_bench(root, problems)
    return Results(root=root, pretrain=pretrain, loss_curves=curves, ranks=ranks, heads=heads,
                   consistency=cons, timing=timing, pruning=load_pruning(root, problems),
                   evals=load_evals(root, problems), samples=load_eval_samples(root, problems),
                   bench=bench, head_pruning=load_head_pruning(root, problems),
                   mqar=load_mqar(root, problems), bench_files=bench_files, profile_dirs=dirs, problems=problems)


__all__ = ["Results", "collect", "ratio_value", "UNPRUNED", "load_pretrain", "load_profiles", "load_pruning",
           "load_eval_samples", "aggregate_samples", "sample_metric", "SAMPLE_COLUMNS",
           "load_evals", "load_bench", "load_head_pruning", "load_mqar", "MQAR_COLUMNS"]
