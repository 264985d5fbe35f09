"""Bootstrap intervals of claims rows against closed forms."""
import math

import numpy as np
import pytest

from lapr.report import intervals as iv


def test_mean_interval_matches_the_normal_closed_form():
    x = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    lo, hi = iv.interval(iv.mean(x))
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # ~0.098
    assert lo == pytest.approx(x.mean() - half, abs=0.015)
    assert hi == pytest.approx(x.mean() + half, abs=0.015)


def test_paired_ratio_of_identical_windows_is_exactly_zero():
    nll = np.random.default_rng(2).uniform(200, 400, size=32)
    w = np.full(32, 128.0)
    assert iv.interval(iv.paired_ppl_ratio(nll, nll, w)) == (0.0, 0.0)


def test_paired_ratio_centres_on_the_point_value_and_pairing_removes_window_noise():
    rng = np.random.default_rng(3)
    base = rng.uniform(300, 700, size=64)           # windows differ a lot in difficulty
    pruned = base + 128 * 0.05 + rng.normal(0, 1, size=64)  # +0.05 nats/token everywhere
    w = np.full(64, 128.0)
    point = math.exp((pruned.sum() - base.sum()) / w.sum()) - 1
    lo, hi = iv.interval(iv.paired_ppl_ratio(pruned, base, w))
    assert lo < point < hi
    assert hi - lo < 0.01                            # paired: the difficulty spread cancels
    unpaired = iv.statistic({"a": pruned}, lambda a: 0.0)  # shape check of the generic resampler
    assert unpaired.shape == (iv.N_BOOT,)


def test_proportion_interval_matches_jeffreys():
    lo, hi = iv.interval(iv.proportion(0.5, 100))
    assert lo == pytest.approx(0.40, abs=0.015) and hi == pytest.approx(0.60, abs=0.015)
    lo, hi = iv.interval(iv.proportion(0.0, 32))
    assert lo == 0.0 or lo < 1e-3
    assert hi == pytest.approx(0.074, abs=0.015)  # Jeffreys upper 97.5% for 0/32


def test_decide_needs_the_whole_interval_on_one_side():
    sup, con = (lambda x: x <= 0.05), (lambda x: x > 0.20)
    assert iv.decide(0.01, 0.04, sup, con) == "supported"
    assert iv.decide(0.01, 0.06, sup, con) == "inconclusive"
    assert iv.decide(0.21, 0.5, sup, con) == "contradicted"
    assert iv.decide(0.19, 0.5, sup, con) == "inconclusive"
    assert iv.decide(float("nan"), 0.01, sup, con) == "inconclusive"


def test_resampling_is_seeded():
    x = np.arange(10.0)
    assert np.array_equal(iv.mean(x), iv.mean(x))
    assert not np.array_equal(iv.mean(x, seed=1), iv.mean(x, seed=2))


def test_median_stderr_closed_form():
    """sqrt(pi/2) * (IQR / 1.349) / sqrt(n): IQR 1.349 (sigma 1) over n = 4 repeats -> sqrt(pi/2) / 2."""
    assert iv.median_stderr(1.349, 4) == pytest.approx(math.sqrt(math.pi / 2) / 2)
    assert math.isnan(iv.median_stderr(float("nan"), 4)) and math.isnan(iv.median_stderr(1.0, 0))
    reps = iv.median_time(10.0, 1.349, 4, n_boot=20000)
    assert reps.mean() == pytest.approx(10.0, abs=0.02)
    assert reps.std() == pytest.approx(math.sqrt(math.pi / 2) / 2, rel=0.03)
    assert np.isnan(iv.median_time(10.0, float("nan"), 4)).all()


def test_median_of_units():
    rng = np.random.default_rng(3)
    one = rng.normal(size=(1, 500))
    assert np.array_equal(iv.median_of_units(one), one[0])          # one unit: its own replicates
    fixed = np.repeat(np.array([[1.0], [2.0], [3.0]]), 2000, axis=1)  # noise-free units: bootstrap of their median
    reps = iv.median_of_units(fixed)
    assert set(np.unique(reps)) <= {1.0, 2.0, 3.0} and np.median(reps) == 2.0
    lo, hi = iv.interval(reps)
    assert lo == 1.0 and hi == 3.0
