"""The `profile` stage: state-rank dynamics, head stratification and calibration statistics of one model.

    python -m lapr profile --model results/tiny/models/gdn --out results/tiny/profile/gdn \
        --settings '{"T": 512, "n_positions": 32, "batch": 2}'

For each input context (lapr.profiling.contexts) it captures every layer's recurrent state at
`n_positions` log-spaced token counts up to T, plus t_early (below) when the log grid misses it
(capture.capture_states; the same forward also yields Gated DeltaNet's per-head mean log decay),
computes the rank metrics
(metrics.rank_table / spectrum_table), classifies heads from their final rank and measures how
consistent ranks and classes are across contexts (stratify), then collects the calibration
statistics pruning needs (calibrate.calibrate). It writes, atomically (the whole directory
appears at once), into --out:

  ranks.parquet     context, sample, layer, head, position, threshold_rank, stable_rank, utilisation,
                    entropy_rank, frobenius, nuclear, spectral, bound, then threshold_rank_<e> for each
                    e in eps_sensitivity (the threshold rank at eps = e, e written by metrics.eps_label:
                    threshold_rank_1e-3, threshold_rank_1e-2; same singular values, no extra SVD);
                    one row per state
  spectrum.parquet  context, sample, position, layer, head, index, sigma, sigma_rel
                    (`spectrum_positions` evenly spaced positions, first and last included)
  heads.csv         layer, head, final_rank, bound, state_norm, class, stable_rank, utilisation,
                    state_nuclear (mean nuclear norm = sum of singular values; state_norm is Frobenius):
                    means over the natural contexts' samples at the last position (t = T); class
                    'low' / 'high' by `class_rule` (stratify.classify_heads, default: high iff
                    final_rank >= 0.5 * bound). All contexts are used when no natural one is run.
                    Then final_rank_<e> for e in [eps] + eps_sensitivity (final_rank_1e-4 equals
                    final_rank at the default eps; B1 at each eps reads final_rank_<e> / bound), and
                    mean_decay: the head's r_bar = exp(mean over tokens of log alpha_t), averaged over
                    the same samples (SRA's per-sequence decay, rank_decay_dist.py / stage1_repro.py;
                    alpha_t = exp(g_t) is Gated DeltaNet's decay gate; GLA's key-wise log decay is
                    averaged over the key channels too, Family.mean_log_decay). NaN for DeltaNet, which has no
                    decay gate (not 1.0: "no gate" is not "a gate that keeps everything" in a
                    regression), and with capture 'segments' (the gate is read in the single pass).
  consistency.csv   one row per context pair: context_a, context_b, n_heads, spearman, spearman_p,
                    constant, keep_fraction (Spearman of per-head final ranks; fraction of heads
                    with the same class in both): claim B2-inputs
  consistency_time.csv  paper B's consistency over time (claim B2), stratify.time_consistency: one row
                    per (layer, context): layer, context, natural, t_early, t_late, n_heads, spearman,
                    constant, cosine_rank, cosine_norm (nuclear norms, as SRA), cosine_frobenius, of
                    the layer's head vectors (means over the context's samples) at t_early vs t_late = T;
                    then one row per layer with context 'mean' averaging the natural contexts' rows.
                    t_early = 128 when T >= 256 (paper B: t = 128 vs 2048), else max(2, round(T / 16))
                    (the same fraction of T as 128 / 2048); it is always added to the positions.
  stratification.csv  one row per eps in [eps] + eps_sensitivity: eps, rank_column, primary (eps ==
                    settings.eps), n_heads, bimodality (Sarle's b of final rank / bound over all heads,
                    stratify.bimodality_coefficient), bimodal (b > 5/9), skewness, excess_kurtosis,
                    low_fraction (x < 0.25), high_fraction (x >= 0.75), decay_r2, decay_slope,
                    decay_intercept, decay_n_heads (OLS of final rank / bound on mean_decay over heads,
                    stratify.linear_r2, SRA's G1b regression; NaN without decays)
  calib.pt          calibration statistics (format: LAYOUT.md); meta.weights_fingerprint identifies
                    the model (lapr.models.weights.fingerprint), so prune refuses it for another
  timing.json       profiling wall time vs one plain forward of the full LM on the same tokens
  provenance.json   lapr.provenance.record(...) + positions + the consistency summary + the model's
                    weights_fingerprint (what heads checks heads.csv against)

Settings (--settings JSON object, or a path to a .json file; every key optional): the Profiling
model below, its defaults and checks (T and warmup null: filled in for the device by parse_settings).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lapr import paths, provenance
from lapr.profiling import stratify
from lapr.profiling.calibrate import Calib, calibrate, calibration_batches
from lapr.profiling.capture import capture_states, log_positions, plain_forward, reader
from lapr.profiling.contexts import CONTEXTS, NATURAL, make_context
from lapr.profiling.metrics import (DEFAULT_EPS, GPU_METHODS, SVD_METHODS, eps_label, rank_table,
                                    singular_values, spectrum_table, threshold_rank_column)
from lapr.settings import Settings, SettingsError, setting

CAPTURE_METHODS = {  # capture.capture_states(method=...) -> what timing.json says about it
    "single_pass": "one backbone forward; states read out of its chunked state pass (reader: 'fla' = fla's "
                   "chunk_gated_delta_rule_fwd_h, 'lapr' = lapr's chunked delta rule)",
    "segments": "segment-wise prefill with fla's cache (one backbone forward per segment)",
}


@dataclass
class Profiling(Settings):
    """Settings of `lapr profile` (the config's `profiling` section)."""

    SECTION = "profiling"
    T: int | None = setting(None, "context length (null: 2048 on CUDA, 512 on CPU)", low=2)
    capture: str = setting("single_pass", "how states are read (capture.py)", choices=tuple(CAPTURE_METHODS))
    n_positions: int = setting(32, "log-spaced token counts at which states are captured (<= T)", low=2)
    eps: float = setting(DEFAULT_EPS, "threshold of the threshold rank", above=0, below=1)
    # paper B's eps 1e-4 lies below bf16's resolution of a state entry (~4e-3 relative)
    eps_sensitivity: list[float] = setting([1e-3, 1e-2], "extra threshold-rank eps (ranks.parquet "
                                           "threshold_rank_<e>, heads.csv final_rank_<e>; same singular values)",
                                           items=dict(above=0, below=1))
    batch: int = setting(4, "samples per context", low=1)
    contexts: list[str] = setting(["gutenberg", "wikitext", "attack", "needle"], "input contexts",
                                  min_items=1, unique=True, items=dict(choices=tuple(CONTEXTS)))
    spectrum_positions: int = setting(4, "evenly spaced positions of spectrum.parquet", low=1)
    class_rule: str = setting("fraction", "head classes (stratify.classify_heads)", choices=("fraction", "gap"))
    class_fraction: float = setting(0.5, "rule 'fraction': high iff final_rank >= class_fraction * bound",
                                    above=0, high=1)
    tokenizer: str | None = setting(None, "null: the checkpoint's own if it has one, else gutenberg-bpe-8k")
    warmup: bool | None = setting(None, "one untimed forward + capture first, so that Triton compilation and "
                                  "first-call allocations are not timed (null: true)")
    seed: int = setting(0, "--seed overrides it", low=0)
    calib: Calib = setting(Calib())
    svd: str = setting("auto", "singular values: LAPACK, one of the two GPU routes (gram, bidiag: "
                       "spectrum_gpu.py) or auto (the fastest GPU route on CUDA states, LAPACK on CPU ones)",
                       choices=SVD_METHODS)

    def check(self, where: str) -> None:
        # one column per eps label: 1e-3 and 0.001 would write threshold_rank_1e-3 twice
        if len({eps_label(e) for e in self.eps_sensitivity}) != len(self.eps_sensitivity):
            raise SettingsError(f"{where}.eps_sensitivity", f"{self.eps_sensitivity!r} has duplicates")
        self.eps_sensitivity = [float(e) for e in self.eps_sensitivity]

MIN_POSITIONS = 32  # the issue asks for >= 32 positions; fewer only warn (tiny smoke profiles)
CLASS_NAMES = {stratify.LOW: "low", stratify.HIGH: "high"}
RANK_ORDER = ["context", "sample", "layer", "head", "position", "threshold_rank", "stable_rank",
              "utilisation", "entropy_rank", "frobenius", "nuclear", "spectral", "bound"]
PAPER_T_EARLY = 128  # paper B compares head ranks at t = 128 and t = 2048 (claim B2)
PAPER_T = 2048


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--out", required=True, help="output directory (written atomically)")
    parser.add_argument("--settings", default="{}",
                        help="JSON object (or a path to a .json file) with the profile settings")
    parser.add_argument("--seed", type=int, default=None, help="overrides settings.seed")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def parse_settings(raw, device: torch.device, seed: int | None = None) -> dict:
    """The Profiling settings (a dict, a JSON string or a .json file's path) with T and warmup
    filled in for `device` and `seed` (--seed) over settings.seed."""
    if isinstance(raw, str) and raw.strip().endswith(".json") and Path(raw).is_file():
        raw = Path(raw).read_text()
    s = Profiling.parse(raw)
    if seed is not None:
        s.seed = seed
    if s.T is None:
        s.T = 2048 if device.type == "cuda" else 512
    if s.warmup is None:
        s.warmup = True
    if s.n_positions > s.T:
        raise SettingsError("profiling.n_positions", f"{s.n_positions} exceeds T={s.T} (distinct token counts)")
    if s.n_positions < MIN_POSITIONS:
        warnings.warn(f"profiling.n_positions={s.n_positions} < {MIN_POSITIONS} (issue 4 asks for >= 32)",
                      stacklevel=2)
    return s.as_dict()


def _tokenizer(model_dir: Path, name):
    from lapr.data import load_tokenizer
    if name is None:
        own = any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
        name = str(model_dir) if own else "gutenberg-bpe-8k"
    return load_tokenizer(name), name


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int = 1):
    """fn's last result and the median wall time of `repeats` calls (synchronised on CUDA)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


# forward and capture are timed as the median of 3 calls on a GPU (a single ~40 ms call varied 2x
# between contexts on the H100); once on a CPU, where one call is long and steady
TIMING_REPEATS = {"cuda": 3}


def early_position(T: int) -> int:
    """t_early of the consistency over time: paper B's 128 when T >= 256, else the same fraction of
    T as 128 of paper B's 2048 (T / 16, at least 2) so that short smoke profiles still compare an
    early with the last state."""
    return PAPER_T_EARLY if T >= 2 * PAPER_T_EARLY else max(2, round(T * PAPER_T_EARLY / PAPER_T))


def profile_positions(T: int, n_positions: int) -> list[int]:
    """The log grid (capture.log_positions) plus early_position(T) when the grid misses it (it does
    at T = 2048, n = 32: ... 111, 139 ...), so consistency over time reads a measured state."""
    return sorted(set(log_positions(T, n_positions)) | {early_position(T)})


def _natural(contexts) -> list[str]:
    return [c for c in contexts if c in NATURAL] or list(contexts)


def eps_list(settings: dict) -> list[float]:
    """[eps] + the eps_sensitivity values other than eps: the thresholds of heads.csv's final_rank_<e>."""
    base = float(settings["eps"])
    return [base] + [e for e in settings.get("eps_sensitivity", []) if eps_label(e) != eps_label(base)]


def head_table(ranks: pd.DataFrame, contexts: list[str], rule: str, fraction: float, eps: float = DEFAULT_EPS,
               decay: pd.DataFrame | None = None) -> pd.DataFrame:
    """heads.csv: per (layer, head) means at the last position over natural contexts (all if none).
    eps: the threshold of ranks' threshold_rank (its final_rank_<eps> copy); threshold_rank_<e> columns
    of ranks give final_rank_<e>. decay: rows (context, sample, layer, head, log_decay) -> mean_decay."""
    natural = _natural(contexts)
    last = ranks[(ranks["position"] == ranks["position"].max()) & ranks["context"].isin(natural)]
    extra = {c.replace("threshold_rank_", "final_rank_", 1): (c, "mean")
             for c in ranks.columns if c.startswith("threshold_rank_")}
    heads = last.groupby(["layer", "head"], sort=True).agg(
        final_rank=("threshold_rank", "mean"), bound=("bound", "first"), state_norm=("frobenius", "mean"),
        state_nuclear=("nuclear", "mean"),
        stable_rank=("stable_rank", "mean"), utilisation=("utilisation", "mean"), **extra).reset_index()
    labels = stratify.classify_heads(heads["final_rank"], heads["bound"], rule=rule, fraction=fraction)
    heads["class"] = [CLASS_NAMES[x] for x in labels]
    per_eps = [threshold_rank_column(eps, "final_rank")] + list(extra)
    heads[per_eps[0]] = heads["final_rank"]
    heads["mean_decay"] = np.nan
    if decay is not None and len(decay):
        d = decay[decay["context"].isin(natural)].assign(r_bar=lambda f: np.exp(f["log_decay"]))
        r_bar = d.groupby(["layer", "head"])["r_bar"].mean()
        heads["mean_decay"] = [r_bar.get((layer, head), np.nan) for layer, head in zip(heads["layer"], heads["head"])]
    return heads[["layer", "head", "final_rank", "bound", "state_norm", "class", "stable_rank", "utilisation",
                  "state_nuclear"] + per_eps + ["mean_decay"]]


def consistency_time_table(ranks: pd.DataFrame, t_early: int) -> pd.DataFrame:
    """consistency_time.csv (claim B2): stratify.time_consistency between t_early and the last position
    on the per-head means over each context's samples."""
    t_late = int(ranks["position"].max())
    sel = ranks[ranks["position"].isin([t_early, t_late])]
    per = sel.groupby(["context", "layer", "head", "position"], sort=False).agg(
        rank=("threshold_rank", "mean"), nuclear=("nuclear", "mean"), frobenius=("frobenius", "mean")).reset_index()
    contexts = list(pd.unique(ranks["context"]))
    natural = [c for c in contexts if c in NATURAL]
    return stratify.time_consistency(per, t_early, t_late, natural=natural)


STRAT_COLUMNS = ["eps", "rank_column", "primary", "n_heads", "bimodality", "bimodal", "skewness",
                 "excess_kurtosis", "low_fraction", "high_fraction", "decay_r2", "decay_slope",
                 "decay_intercept", "decay_n_heads"]


def stratification_table(heads: pd.DataFrame, eps_values: list[float]) -> pd.DataFrame:
    """stratification.csv: per eps, Sarle's b of x = final rank / bound over all heads (paper B's
    Fig. 1 groups; SRA's G1a) and the R^2 of x on mean_decay (SRA's G1b: rank ~ r_bar). The bound
    is one number per model when all heads share d_k, d_v, so R^2 is that of the raw final rank."""
    from scipy import stats
    rows = []
    for i, e in enumerate(eps_values):
        col = threshold_rank_column(e, "final_rank")
        x = (heads[col].astype(float) / heads["bound"].astype(float)).to_numpy()
        fin = x[np.isfinite(x)]
        spread = len(fin) >= 4 and np.ptp(fin) > 0
        b = stratify.bimodality_coefficient(x)
        decay = heads["mean_decay"].astype(float).to_numpy()
        r2, slope, icpt = stratify.linear_r2(decay, x)
        rows.append({"eps": e, "rank_column": col, "primary": i == 0, "n_heads": len(fin), "bimodality": b,
                     "bimodal": bool(b > stratify.BIMODAL_THRESHOLD),
                     "skewness": float(stats.skew(fin, bias=False)) if spread else np.nan,
                     "excess_kurtosis": float(stats.kurtosis(fin, bias=False)) if spread else np.nan,
                     "low_fraction": float(np.mean(fin < 0.25)) if len(fin) else np.nan,
                     "high_fraction": float(np.mean(fin >= 0.75)) if len(fin) else np.nan,
                     "decay_r2": r2, "decay_slope": slope, "decay_intercept": icpt,
                     "decay_n_heads": int((np.isfinite(decay) & np.isfinite(x)).sum())})
    return pd.DataFrame(rows, columns=STRAT_COLUMNS)


def consistency_table(ranks: pd.DataFrame, rule: str, fraction: float) -> stratify.Consistency:
    """Spearman / class agreement of per-head final ranks (mean over samples) between contexts."""
    last = ranks[ranks["position"] == ranks["position"].max()]
    per = last.groupby(["context", "layer", "head"], sort=False).agg(
        rank=("threshold_rank", "mean"), bound=("bound", "first")).reset_index()
    parts = []
    for _, g in per.groupby("context", sort=False):  # the gap rule adapts per context
        g = g.copy()
        g["label"] = stratify.classify_heads(g["rank"], g["bound"], rule=rule, fraction=fraction)
        parts.append(g)
    return stratify.consistency(pd.concat(parts, ignore_index=True))


def _batched_singular_values(states: dict, method: str) -> dict:
    """{layer: [B, HV, P, d_k, d_v] CUDA} -> {layer: [B, HV, P, r]} on the same device: one
    singular_values call per state shape (one for a model whose layers agree)."""
    by_shape: dict[tuple, list] = {}
    for layer, s in states.items():
        by_shape.setdefault(tuple(s.shape[-2:]), []).append(layer)
    out = {}
    for shape, layers in by_shape.items():
        flat = torch.cat([states[layer].reshape(-1, *shape) for layer in layers])
        sv = singular_values(flat, method).float()
        for layer, part in zip(layers, sv.split([states[layer][..., 0, 0].numel() for layer in layers])):
            out[layer] = part.reshape(*states[layer].shape[:-2], -1)
    return out


def _metrics(states: dict, positions, settings: dict, context: str) -> tuple[list, list]:
    """Rank and spectrum frames, one of each per sample.

    CUDA states (settings.svd 'auto'; or 'gram' / 'bidiag' on any device): the singular values of
    every state of the context (all samples, layers, heads, positions: 10,752 matrices in the gpu
    profile) in one batched call of the GPU route (metrics.singular_values; cuSOLVER took 33 s per
    context), and the tables in one call each, with the samples folded into the head axis (rank_table
    works per layer, so per (sample, layer) calls cost ~50 small copies back to the host each).
    Otherwise LAPACK on the
    CPU, one thread per (sample, layer): CUDA has no batched SVD for 128 x 128 matrices and LAPACK
    releases the GIL, so the work spreads over the cores."""
    # the batched path: CUDA states, or a GPU route asked for by name (then on the states' device)
    on_cuda = next(iter(states.values())).is_cuda
    batched = settings["svd"] in GPU_METHODS or (settings["svd"] == "auto" and on_cuda)
    states = {layer: s.float() if batched else s.float().cpu() for layer, s in states.items()}  # [B, HV, P, dk, dv]
    n_samples = next(iter(states.values())).shape[0]
    extra_eps = eps_list(settings)[1:]
    keep = settings["spectrum_positions"]
    if batched:
        sv = _batched_singular_values(states, settings["svd"])
        folded = {layer: s.permute(2, 0, 1, 3, 4).flatten(1, 2) for layer, s in states.items()}  # [P, B*HV, ...]
        given = {layer: v.permute(2, 0, 1, 3).flatten(1, 2) for layer, v in sv.items()}
        heads = {layer: s.shape[1] for layer, s in states.items()}
        parts = [tuple(_unfold(t, heads) for t in (
            rank_table(folded, positions, eps=settings["eps"], method=settings["svd"], extra_eps=extra_eps, sv=given),
            spectrum_table(folded, positions, keep=keep, method=settings["svd"], sv=given)))]
    else:
        def one(job):
            b, layer = job
            per_layer = {layer: states[layer][b].transpose(0, 1)}  # [P, HV, dk, dv]
            return (rank_table(per_layer, positions, eps=settings["eps"], method=settings["svd"],
                               extra_eps=extra_eps).assign(sample=b),
                    spectrum_table(per_layer, positions, keep=keep, method=settings["svd"]).assign(sample=b))

        jobs = [(b, layer) for b in range(n_samples) for layer in states]
        with ThreadPoolExecutor(max(1, min(len(jobs), torch.get_num_threads()))) as pool:
            parts = list(pool.map(one, jobs))

    def per_sample(kind: int, by: list[str]) -> list[pd.DataFrame]:
        table = pd.concat([p[kind] for p in parts], ignore_index=True)
        return [table[table["sample"] == b].drop(columns="sample")
                .sort_values(by, kind="stable", ignore_index=True).assign(context=context, sample=b)
                for b in range(n_samples)]

    return (per_sample(0, ["position", "layer", "head"]),
            per_sample(1, ["position", "layer", "head", "index"]))


def _unfold(table: pd.DataFrame, heads: dict) -> pd.DataFrame:
    """A table of states whose head axis held (sample, head) pairs sample-major -> sample and head
    columns (heads: {layer: heads per sample})."""
    per = table["layer"].map(heads).to_numpy()
    folded = table["head"].to_numpy()
    return table.assign(head=folded % per, sample=folded // per)


def profile(model, tokenizer, settings: dict, device: torch.device, progress: bool = True) -> dict:
    """Run captures + metrics for every context; returns the tables and timings (no file I/O)."""
    T, seed = settings["T"], settings["seed"]
    positions = profile_positions(T, settings["n_positions"])
    vocab = model.get_input_embeddings().num_embeddings
    inputs = {}
    for name in settings["contexts"]:
        ids = make_context(name, tokenizer, T, settings["batch"], seed)
        if int(ids.max()) >= vocab:
            raise ValueError(f"context {name!r}: token id {int(ids.max())} >= model vocab {vocab}; "
                             f"settings.tokenizer does not match the model")
        inputs[name] = ids

    if settings["warmup"]:  # compile / autotune kernels outside the timed region
        first = inputs[settings["contexts"][0]]
        plain_forward(model, first)
        capture_states(model, first, positions, method=settings["capture"])
        _sync(device)

    rank_frames, spec_frames, decay_frames, timing = [], [], [], {}
    for name in tqdm(settings["contexts"], desc="profile contexts", disable=not progress):
        ids = inputs[name].to(device)
        reps = TIMING_REPEATS.get(device.type, 1)
        _, forward_s = _timed(lambda: plain_forward(model, ids), device, reps)
        decays: dict = {}  # filled by the same forward (single_pass): per-head mean log decay, gated layers
        states, capture_s = _timed(lambda: capture_states(model, ids, positions, method=settings["capture"],
                                                          decays=decays), device, reps)
        for layer, d in decays.items():  # [B, HV]
            d = d.cpu().double().numpy()
            decay_frames.append(pd.DataFrame({
                "context": name, "sample": np.repeat(np.arange(d.shape[0]), d.shape[1]), "layer": layer,
                "head": np.tile(np.arange(d.shape[1]), d.shape[0]), "log_decay": d.ravel()}))

        def metrics():
            ranks, spectra = _metrics(states, positions, settings, name)
            rank_frames.extend(ranks)
            spec_frames.extend(spectra)
        _, metrics_s = _timed(metrics, device)
        timing[name] = {"forward_s": forward_s, "capture_s": capture_s, "metrics_s": metrics_s,
                        "capture_over_forward": capture_s / forward_s,
                        "profile_over_forward": (capture_s + metrics_s) / forward_s}
        del states
    ranks = pd.concat(rank_frames, ignore_index=True)
    ranks = ranks[RANK_ORDER + [c for c in ranks.columns if c.startswith("threshold_rank_")]]
    spectrum = pd.concat(spec_frames, ignore_index=True)
    spectrum = spectrum[["context", "sample"] + [c for c in spectrum.columns if c not in ("context", "sample")]]
    decay = pd.concat(decay_frames, ignore_index=True) if decay_frames else None
    return {"positions": positions, "ranks": ranks, "spectrum": spectrum, "timing": timing, "decay": decay}


def run(args: argparse.Namespace) -> None:
    from lapr.models import load_model, resolve_device, weights

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no Hugging Face checkpoint there (config.json missing)")
    device = resolve_device(getattr(args, "device", None))
    settings = parse_settings(args.settings, device, getattr(args, "seed", None))
    paths.check_outputs({"--out": args.out}, {"--model": model_dir, "--settings": paths.local(args.settings),
                                             "settings.tokenizer": paths.local(settings["tokenizer"])})
    t_start = time.perf_counter()
    model = load_model(model_dir, device=device)
    # recorded in calib.pt and provenance.json (beside heads.csv), so that prune and heads
    # refuse these files for another model (lapr.models.weights.check_source)
    fingerprint = weights.fingerprint(model_dir)
    tokenizer, tok_name = _tokenizer(model_dir, settings["tokenizer"])
    torch.manual_seed(settings["seed"])

    result = profile(model, tokenizer, settings, device)
    ranks = result["ranks"]
    heads = head_table(ranks, settings["contexts"], settings["class_rule"], settings["class_fraction"],
                       eps=settings["eps"], decay=result["decay"])
    cons = consistency_table(ranks, settings["class_rule"], settings["class_fraction"])
    t_early = early_position(settings["T"])
    cons_time = consistency_time_table(ranks, t_early)
    strat = stratification_table(heads, eps_list(settings))

    c = settings["calib"]
    batches = calibration_batches(tokenizer, c["n_batches"], c["seq_len"], c["batch_size"],
                                  seed=settings["seed"], source=c["source"])
    calib, calib_s = _timed(lambda: calibrate(model, batches, rows=c["rows"], seed=settings["seed"],
                                              model_name=str(model_dir), progress=True,
                                              meta={"source": c["source"], "weights_fingerprint": fingerprint}),
                              device)

    timing = result["timing"]
    fwd = sum(t["forward_s"] for t in timing.values())
    cap = sum(t["capture_s"] for t in timing.values())
    met = sum(t["metrics_s"] for t in timing.values())
    hw = provenance.device_info(device)
    timing_doc = {
        "device": device.type, "device_name": hw.get("gpu") or hw.get("cpu"),
        "cpu_threads": torch.get_num_threads(), "dtype": str(next(model.parameters()).dtype),
        "T": settings["T"], "batch": settings["batch"], "n_positions": len(result["positions"]),
        "n_layers": int(ranks["layer"].nunique()), "n_heads": int(ranks.groupby("layer")["head"].nunique().sum()),
        "method": CAPTURE_METHODS[settings["capture"]],
        "reader": reader(model) if settings["capture"] == "single_pass" else None,
        "forward": "one plain forward of the full LM (logits, use_cache=False) on the same [batch, T] tokens",
        "timing_repeats": TIMING_REPEATS.get(device.type, 1),
        "warmup": settings["warmup"], "svd": settings["svd"],
        "contexts": timing,
        "forward_s": fwd, "capture_s": cap, "metrics_s": met,
        "capture_over_forward": cap / fwd, "profile_over_forward": (cap + met) / fwd,
        "calibration_s": calib_s, "total_s": time.perf_counter() - t_start,
    }
    for name, t in timing.items():
        print(f"[profile] {name}: capture {t['capture_s']:.3f}s + metrics {t['metrics_s']:.3f}s "
              f"vs forward {t['forward_s']:.3f}s ({t['capture_over_forward']:.2f}x)")
    print(f"[profile] consistency: {cons.summary}")
    mean = cons_time[cons_time["context"] == stratify.MEAN_CONTEXT]
    print(f"[profile] consistency over time t={t_early} vs t={settings['T']} (per-layer means, natural contexts): "
          f"Spearman {mean['spearman'].mean():.3f}, rank cosine {mean['cosine_rank'].mean():.3f}, "
          f"nuclear-norm cosine {mean['cosine_norm'].mean():.3f}")
    for r in strat.itertuples(index=False):
        print(f"[profile] eps {r.eps:g}: Sarle's b {r.bimodality:.3f} over {r.n_heads} heads, "
              f"R^2(rank / bound ~ mean decay) {r.decay_r2:.3f}")

    with provenance.atomic_dir(args.out) as tmp:
        provenance.write_table(tmp / "ranks.parquet", ranks)
        provenance.write_table(tmp / "spectrum.parquet", result["spectrum"])
        provenance.write_table(tmp / "heads.csv", heads)
        provenance.write_table(tmp / "consistency.csv", cons.pairs)
        provenance.write_table(tmp / "consistency_time.csv", cons_time)
        provenance.write_table(tmp / "stratification.csv", strat)
        with provenance.atomic_path(tmp / "calib.pt") as p:
            torch.save(calib, p)
        provenance.write_json(tmp / "timing.json", timing_doc)
        provenance.write_json(tmp / "provenance.json", provenance.record(
            settings, settings["seed"], device, stage="profile", model=str(model_dir),
            weights_fingerprint=fingerprint, tokenizer=tok_name,
            positions=result["positions"], t_early=t_early, consistency=cons.summary))
    print(f"[profile] wrote {args.out}")


__all__ = ["Profiling", "add_arguments", "run", "parse_settings", "profile", "head_table",
           "consistency_table", "consistency_time_table", "stratification_table", "early_position",
           "profile_positions", "eps_list"]
