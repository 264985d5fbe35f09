"""Ratio -> kept d_k, and grid validation before any job runs."""

import pytest

from lapr.pruning.channels import ALL_METHODS, REQUIRES
from lapr.pruning.ratio import kept_dim, validate

DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75)


def test_all_nine_methods_named_once():
    assert ALL_METHODS == ("l1", "l2", "pivoted_qr", "random", "strong_rrqr", "taylor",
                           "wanda", "pca", "pca_qk")
    assert set(REQUIRES) == set(ALL_METHODS)


@pytest.mark.parametrize("d_k,ratio,multiple,kept", [
    (128, 0.1, 1, 115), (128, 0.5, 1, 64), (128, 0.75, 1, 32), (64, 0.3, 1, 44),
    (10, 0.3, 1, 7),          # 10 * 0.7 = 6.999999999999999 in floats: still 7
    (100, 0.29, 1, 71),       # 100 * 0.71 = 70.99999999999999
    (128, 0.1, 16, 112), (128, 0.3, 8, 88), (128, 0.3, 16, 80), (12, 0.5, 4, 4),
    (8, 0.01, 1, 7), (16, "0.5", 1, 8),   # a ratio from a Snakemake wildcard
])
def test_kept_dim(d_k, ratio, multiple, kept):
    assert kept_dim(d_k, ratio, multiple) == kept


@pytest.mark.parametrize("ratio", [0, 1, 0.0, 1.0, -0.1, 1.5, float("nan"), True, None, "x"])
def test_ratio_outside_open_interval(ratio):
    with pytest.raises(ValueError, match="pruning ratio must") as info:
        kept_dim(64, ratio)
    assert f"got {ratio!r}" in str(info.value)


def test_ratio_leaving_no_channel():
    with pytest.raises(ValueError, match=r"ratio 0.9 leaves no channel of d_k=8"):
        kept_dim(8, 0.9)
    with pytest.raises(ValueError, match=r"ratio 0.8 leaves no channel.*multiple of 16"):
        kept_dim(64, 0.8, multiple=16)  # floor(12.8) = 12 -> 0 after rounding down to 16s


def test_ratio_removing_nothing():
    with pytest.raises(ValueError, match=r"removes no channel"):
        kept_dim(8, 1e-12)


@pytest.mark.parametrize("multiple", [0, -4, 2.0, True])
def test_bad_multiple(multiple):
    with pytest.raises(ValueError, match="multiple must be a positive int"):
        kept_dim(64, 0.5, multiple)


def test_validate_default_grid_for_two_models():
    table = validate(ALL_METHODS, DEFAULT_GRID, [128, 64], multiple=1)
    assert table[0.75] == {128: 32, 64: 16}
    assert list(table) == list(DEFAULT_GRID)


def test_validate_reports_every_problem_at_once():
    with pytest.raises(ValueError) as info:
        validate(["l1", "magnitude", "pca"], [0.5, 1.0, 0.99], [64, 8], multiple=1)
    message = str(info.value)
    assert "unknown pruning method 'magnitude'" in message
    assert "known: l1, l2, pivoted_qr, random, strong_rrqr, taylor, wanda, pca, pca_qk" in message
    assert "got 1.0" in message
    assert "ratio 0.99 leaves no channel of d_k=64" in message
    assert "ratio 0.99 leaves no channel of d_k=8" in message
    assert message.count("got 1.0") == 1          # deduplicated across models


def test_validate_empty():
    with pytest.raises(ValueError, match="no pruning method"):
        validate([], [0.5], 64)
    with pytest.raises(ValueError, match="no pruning ratio"):
        validate(["l1"], [], 64)


def test_workflow_and_stage_share_the_kept_dim():
    """The workflow's grid (lapr.grid, no torch) and the prune stage keep the same d_k, also where
    d_k (1 - r) lands just below an integer in floating point (100 * 0.57 = 56.99999999999999)."""
    from lapr.grid import kept_channels

    for d_k, r, multiple in [(100, 0.43, 1), (10, 0.3, 1), (128, 0.7, 8), (64, 0.75, 1)]:
        assert kept_channels(d_k, r, multiple) == kept_dim(d_k, r, multiple)
    assert kept_channels(100, 0.43) == 57
