"""Head classification rules and cross-context consistency on hand-made heads with known answers."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lapr.profiling.stratify import HIGH, LOW, classify_heads, consistency


def test_fraction_rule_known_heads():
    # bound 64: ranks 0..10 are low, 40..64 high; 32 sits exactly on 0.5 * bound -> high (>=)
    rank = np.array([0, 1, 3, 10, 31, 32, 40, 63, 64])
    expect = [LOW, LOW, LOW, LOW, LOW, HIGH, HIGH, HIGH, HIGH]
    assert classify_heads(rank, 64).tolist() == expect
    assert classify_heads(rank, 64, fraction=0.1).tolist() == [LOW, LOW, LOW, HIGH] + [HIGH] * 5


def test_per_head_bounds_and_shape_kept():
    # heads with different d_k: same rank 40 is high against bound 48, low against bound 128
    rank = np.array([[40, 40], [2, 100]])
    bound = np.array([[48, 128], [48, 128]])
    assert classify_heads(rank, bound).tolist() == [[HIGH, LOW], [LOW, HIGH]]


def test_gap_rule_splits_at_largest_gap():
    # normalised ranks 0.05 | 0.40 0.42 0.45: fraction 0.5 calls all low, gap splits after 0.05
    bound = 100
    rank = np.array([40, 5, 45, 42])
    assert classify_heads(rank, bound).tolist() == [LOW] * 4
    assert classify_heads(rank, bound, rule="gap").tolist() == [HIGH, LOW, HIGH, HIGH]
    # two clean clusters: both rules agree
    rank = np.array([0, 1, 2, 3, 60, 62, 64, 64])
    want = [LOW] * 4 + [HIGH] * 4
    assert classify_heads(rank, 64).tolist() == want
    assert classify_heads(rank, 64, rule="gap").tolist() == want


def test_gap_rule_fallbacks_and_errors():
    # all equal: no gap -> fraction rule
    assert classify_heads([30, 30, 30], 40, rule="gap").tolist() == [HIGH] * 3
    assert classify_heads([3], 40, rule="gap").tolist() == [LOW]
    with pytest.raises(ValueError):
        classify_heads([1, 2], 0)
    with pytest.raises(ValueError):
        classify_heads([1, 2], 4, rule="kmeans")


def frame(context_ranks: dict, bound=64) -> pd.DataFrame:
    rows = []
    for ctx, ranks in context_ranks.items():
        labels = classify_heads(np.asarray(ranks), bound)
        for i, (r, lab) in enumerate(zip(ranks, labels)):
            rows.append({"context": ctx, "layer": i // 2, "head": i % 2, "rank": r, "label": lab})
    return pd.DataFrame(rows)


def test_identical_contexts():
    ranks = [0, 3, 50, 64, 10, 40]
    res = consistency(frame({"a": ranks, "b": ranks, "c": ranks}))
    assert len(res.pairs) == 3
    assert np.allclose(res.pairs["spearman"], 1.0)
    assert (res.pairs["keep_fraction"] == 1.0).all()
    assert not res.pairs["constant"].any()
    assert res.summary["spearman_mean"] == pytest.approx(1.0)
    assert res.summary["stable_fraction"] == 1.0
    assert res.summary["n_heads_all"] == 6


def test_reversed_ranks():
    ranks = [0, 5, 20, 40, 50, 64]
    res = consistency(frame({"a": ranks, "b": ranks[::-1]}))
    row = res.pairs.iloc[0]
    assert row["spearman"] == pytest.approx(-1.0)
    # labels a: L L L H H H, b: H H H L L L -> none kept
    assert row["keep_fraction"] == 0.0


def test_hand_made_keep_fraction():
    # 4 heads; labels a: L L H H, b: L H H L -> 2 of 4 kept
    df = pd.DataFrame({
        "context": ["a"] * 4 + ["b"] * 4,
        "layer": [0, 0, 1, 1] * 2,
        "head": [0, 1, 0, 1] * 2,
        "rank": [1, 2, 50, 60, 1, 40, 50, 3],
        "label": [LOW, LOW, HIGH, HIGH, LOW, HIGH, HIGH, LOW],
    })
    res = consistency(df)
    row = res.pairs.iloc[0]
    assert (row["context_a"], row["context_b"], row["n_heads"]) == ("a", "b", 4)
    assert row["keep_fraction"] == 0.5
    # ranks a 1 2 50 60 -> 1 2 3 4; b 1 40 50 3 -> 1 3 4 2: d = 0 1 1 2, rho = 1 - 6*6/(4*15) = 0.4
    assert row["spearman"] == pytest.approx(0.4)
    assert res.summary["stable_fraction"] == 0.5


def test_constant_ranks_flagged_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = consistency(frame({"a": [0, 0, 0, 0], "b": [0, 10, 40, 64], "c": [1, 11, 41, 63]}))
    pairs = res.pairs.set_index(["context_a", "context_b"])
    assert np.isnan(pairs.loc[("a", "b"), "spearman"]) and pairs.loc[("a", "b"), "constant"]
    assert np.isnan(pairs.loc[("a", "c"), "spearman"]) and pairs.loc[("a", "c"), "constant"]
    assert pairs.loc[("b", "c"), "spearman"] == pytest.approx(1.0)
    assert res.summary["n_constant_pairs"] == 2
    assert res.summary["spearman_mean"] == pytest.approx(1.0)  # NaN pairs left out
    assert pairs.loc[("a", "b"), "keep_fraction"] == 0.5  # a: all L; b: L L H H


def test_heads_missing_from_a_context_and_bad_input():
    df = frame({"a": [0, 10, 50, 60], "b": [0, 10, 50, 60]})
    df = df.drop(index=df.index[-1])  # b lacks its last head
    res = consistency(df)
    assert res.pairs.iloc[0]["n_heads"] == 3
    assert res.summary["n_heads_all"] == 3
    with pytest.raises(ValueError):
        consistency(pd.concat([df, df.iloc[:1]]))  # duplicate row
    with pytest.raises(ValueError):
        consistency(df.drop(columns="label"))
