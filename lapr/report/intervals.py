"""Uncertainty of a claims row: bootstrap replicates of its statistic, an interval, a verdict.

A verdict is supported / contradicted only when the whole interval lies on that side of the
criterion; otherwise inconclusive, with the interval shown (issue: two runs of the same command,
~1 % apart in every metric, flipped verdicts judged on point values).

Replicates, not intervals, are what the functions here return, so a statistic built from several
measurements (a ratio of two perplexities, a difference of two accuracies) is resampled as a whole:
- `paired_ppl_ratio`: pruned / unpruned perplexity over the same evaluation windows (or documents),
  resampled together (the windows are the same text, so their noise cancels in the ratio);
- `mean`: the mean of independent units (heads, context pairs, NIAH trials, documents);
- `proportion`: a fraction measured on n trials when only the fraction and n are recorded
  (parametric: Beta(k + 1/2, n - k + 1/2) replicates, the Jeffreys posterior);
- `normal`: a value with a recorded standard error (lm-eval's stderr);
- `median_time`: a median of n timed repeats when only the median and the interquartile range are
  recorded (the bench stage's ms_median, ms_iqr, n_repeats).
`interval` takes the central 95 % of the replicates (percentile bootstrap, Efron & Tibshirani 1993,
ch. 13). Resampling is seeded: the same results give the same interval.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
SEED = 0


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(SEED if seed is None else seed)


def _indices(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_units, size=(n_boot, n_units))


def mean(values, n_boot: int = N_BOOT, seed: int | None = None) -> np.ndarray:
    """Replicates of the mean of independent units."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.full(n_boot, np.nan)
    return x[_indices(len(x), n_boot, _rng(seed))].mean(axis=1)


def statistic(units: dict[str, np.ndarray], fn: Callable[..., float], n_boot: int = N_BOOT,
              seed: int | None = None) -> np.ndarray:
    """Replicates of fn(**units) with the units (equal-length arrays, one entry per unit) resampled together."""
    arrays = {k: np.asarray(v) for k, v in units.items()}
    n = {len(v) for v in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"paired units need equal lengths, got {sorted(n)}")
    n_units = n.pop()
    if n_units == 0:
        return np.full(n_boot, np.nan)
    idx = _indices(n_units, n_boot, _rng(seed))
    return np.array([fn(**{k: v[i] for k, v in arrays.items()}) for i in idx], dtype=np.float64)


def paired_ppl_ratio(nll_pruned, nll_base, weight, n_boot: int = N_BOOT, seed: int | None = None) -> np.ndarray:
    """Replicates of ppl(pruned) / ppl(unpruned) - 1 over paired units: nll_* = summed NLL (nats) of
    each unit, weight = its token (or word) count, ppl = exp(sum nll / sum weight)."""
    a, b, w = (np.asarray(x, dtype=np.float64) for x in (nll_pruned, nll_base, weight))
    if not (len(a) == len(b) == len(w)):
        raise ValueError("paired units need equal lengths")
    if len(a) == 0:
        return np.full(n_boot, np.nan)
    idx = _indices(len(a), n_boot, _rng(seed))
    return np.expm1((a[idx].sum(1) - b[idx].sum(1)) / w[idx].sum(1))


def proportion(p: float, n: int, n_boot: int = N_BOOT, seed: int | None = None) -> np.ndarray:
    """Replicates of a fraction p observed on n trials (Jeffreys Beta posterior)."""
    if n is None or not n > 0 or p is None or np.isnan(p):
        return np.full(n_boot, np.nan)
    k = float(np.clip(p, 0.0, 1.0)) * n
    return _rng(seed).beta(k + 0.5, n - k + 0.5, size=n_boot)


def normal(value: float, stderr: float, n_boot: int = N_BOOT, seed: int | None = None) -> np.ndarray:
    """Replicates of a value with a standard error (0 or NaN stderr: the value itself)."""
    if stderr is None or np.isnan(stderr) or stderr <= 0:
        return np.full(n_boot, float(value))
    return _rng(seed).normal(float(value), float(stderr), size=n_boot)


def median_stderr(iqr: float, n: int) -> float:
    """Standard error of the median of n repeats with interquartile range iqr: sqrt(pi / 2) sigma /
    sqrt(n), the median's asymptotic error for normal noise, with sigma = iqr / 1.349 (a normal's
    IQR in sigmas); NaN when n or iqr is missing. Timing noise is skewed (slow outliers), but the
    median and the IQR are robust to it, which is why the bench stage records them."""
    if n is None or not n > 0 or iqr is None or np.isnan(iqr):
        return np.nan
    return float(np.sqrt(np.pi / 2) * (iqr / 1.349) / np.sqrt(n))


def median_time(median: float, iqr: float, n: int, n_boot: int = N_BOOT, seed: int | None = None) -> np.ndarray:
    """Replicates of a timed median (see median_stderr), floored at 0 (a time)."""
    se = median_stderr(iqr, n)
    if np.isnan(se):
        return np.full(n_boot, np.nan)
    return np.maximum(normal(median, se, n_boot, seed), 0.0)


def median_of_units(unit_replicates, seed: int | None = None) -> np.ndarray:
    """[n_units, n_boot] replicates of each unit's own value -> replicates of the median over units:
    draw b resamples the units and takes each drawn unit's replicate b, so the result carries both
    each unit's noise and the spread between units (one unit: that unit's replicates)."""
    r = np.asarray(unit_replicates, dtype=np.float64)
    n_units, n_boot = r.shape
    pick = _indices(n_units, n_boot, _rng(seed))                     # [n_boot, n_units]
    return np.median(r[pick, np.arange(n_boot)[:, None]], axis=1)


def interval(replicates, level: float = LEVEL) -> tuple[float, float]:
    """Central `level` percentile interval of the replicates (NaN, NaN when there are none)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[~np.isnan(r)]
    if len(r) == 0:
        return (np.nan, np.nan)
    tail = (1 - level) / 2
    return float(np.quantile(r, tail)), float(np.quantile(r, 1 - tail))


def decide(lo: float, hi: float, supported: Callable[[float], bool], contradicted: Callable[[float], bool]) -> str:
    """supported / contradicted when both interval ends satisfy that side's test; else inconclusive.
    For a monotone criterion (x <= c, x >= c) both ends passing means the whole interval does."""
    if np.isnan(lo) or np.isnan(hi):
        return "inconclusive"
    if supported(lo) and supported(hi):
        return "supported"
    if contradicted(lo) and contradicted(hi):
        return "contradicted"
    return "inconclusive"


def describe(lo: float, hi: float, fmt: str = "{:.3g}", how: str = "") -> str:
    if np.isnan(lo) or np.isnan(hi):
        return "no interval"
    return f"95% CI [{fmt.format(lo)}, {fmt.format(hi)}]" + (f" ({how})" if how else "")


__all__ = ["N_BOOT", "LEVEL", "mean", "statistic", "paired_ppl_ratio", "proportion", "normal", "interval",
           "decide", "describe"]
