"""Paper B's head-pruning protocol (issue 17): eq. 14, the 38.9% budget, the disjoint arms."""
import numpy as np
import pandas as pd
import pytest

from lapr.grid import heads_removed
from lapr.heads import methods as M


def heads(rank_norm, norms, bound=100, nuclear=None):
    """A heads.csv of one head per layer: final_rank = rank_norm * bound."""
    df = pd.DataFrame({"layer": range(len(norms)), "head": 0, "final_rank": np.asarray(rank_norm) * bound,
                       "bound": bound, "state_norm": norms})
    if nuclear is not None:
        df["state_nuclear"] = nuclear
    return df


# the issue's case: (rbar/d, nbar) = (1.0, 0.9), (0.85, 1.0), (0.08, 0.8), alpha 0.5
ISSUE = heads([1.0, 0.85, 0.08], [0.9, 1.0, 0.8])


def test_eq14_by_hand():
    # S_h = 0.5 r + 0.5 n / max n, max n = 1.0
    want = [0.5 * 1.0 + 0.5 * 0.9, 0.5 * 0.85 + 0.5 * 1.0, 0.5 * 0.08 + 0.5 * 0.8]   # 0.95, 0.925, 0.44
    np.testing.assert_allclose(M.priorities(ISSUE, "joint_rank_norm", 0.5), want)
    np.testing.assert_allclose(M.saturation_score(ISSUE, 0.5), want)
    # the min-max reading ranks head 1 first: n -> (0.5, 1, 0), S = 0.75, 0.925, 0.04
    minmax = 0.5 * M.normalised_rank(ISSUE) + 0.5 * M.minmax_norm(ISSUE)
    np.testing.assert_allclose(minmax, [0.75, 0.925, 0.04])
    # eq. 14 prunes the most saturated head first (highest S): head 0; min-max would take head 1
    assert M.select_heads(ISSUE, "joint_rank_norm", 0.3, alpha=0.5).removed == [(0, 0)]
    assert int(np.argmax(minmax)) == 1
    # a second hand case, norms not topping at 1: max n = 4
    t = heads([0.5, 0.25, 1.0], [2.0, 4.0, 1.0])
    np.testing.assert_allclose(M.priorities(t, "joint_rank_norm", 0.25),
                               [0.25 * 0.5 + 0.75 * 0.5, 0.25 * 0.25 + 0.75 * 1.0, 0.25 * 1.0 + 0.75 * 0.25])


def test_eq14_alpha_ends_and_nuclear():
    np.testing.assert_allclose(M.priorities(ISSUE, "joint_rank_norm", 1.0), [1.0, 0.85, 0.08])
    np.testing.assert_allclose(M.priorities(ISSUE, "joint_rank_norm", 0.0), [0.9, 1.0, 0.8])
    nuc = heads([1.0, 0.85, 0.08], [0.9, 1.0, 0.8], nuclear=[2.0, 1.0, 4.0])
    np.testing.assert_allclose(M.priorities(nuc, "joint_rank_norm", 0.5, norm="nuclear"),
                               [0.5 + 0.5 * 0.5, 0.425 + 0.5 * 0.25, 0.04 + 0.5 * 1.0])
    plan = M.select_heads(nuc, "joint_rank_norm", 0.3, norm="nuclear")
    assert plan.removed == [(0, 0)] and plan.summary()["norm"] == "nuclear"
    with pytest.raises(ValueError, match="state_nuclear"):
        M.priorities(ISSUE, "joint_rank_norm", 0.5, norm="nuclear")
    with pytest.raises(ValueError, match="norm must be one of"):
        M.priorities(ISSUE, "joint_rank_norm", 0.5, norm="spectral")


@pytest.mark.parametrize("n_heads, want", [(8, 3), (84, 33), (4, 2), (384, 149)])
def test_b3_head_counts(n_heads, want):
    # embedded 4 layers x 2 heads: 0.389 * 8 = 3.112 -> 3; gpu 14 x 6 = 84: 32.676 -> 33;
    # tiny 2 x 2: 1.556 -> 2; 24 x 16 = 384: 149.376 -> 149
    assert heads_removed(0.389, n_heads) == want
    t = pd.DataFrame({"layer": np.arange(n_heads) // 2, "head": np.arange(n_heads) % 2, "final_rank": 1.0,
                      "bound": 4, "state_norm": 1.0})
    assert len(M.select_heads(t, "joint_rank_norm", 0.389).removed) == want


def random_table(rng, n):
    return pd.DataFrame({"layer": np.arange(n) // 4, "head": np.arange(n) % 4,
                         "final_rank": rng.uniform(0, 64, n).round(1), "bound": 64,
                         "state_norm": rng.uniform(0, 1, n)})


@pytest.mark.parametrize("seed", range(40))
def test_arms_disjoint_count_matched(seed):
    rng = np.random.default_rng(seed)
    t = random_table(rng, int(rng.integers(2, 40)))
    lo, hi = sorted(rng.choice([0.1, 0.25, 0.5, 0.75, 0.9], 2))
    arms = M.disjoint_arms(t, lo, hi, draws=3, seed=seed)
    r = dict(zip(zip(t["layer"], t["head"]), M.normalised_rank(t)))
    n_low = sum(x < lo for x in r.values())
    n_high = sum(x >= hi for x in r.values())
    assert arms.k == min(n_low, n_high) and (arms.n_low_class, arms.n_high_class) == (n_low, n_high)
    if arms.k == 0:
        assert arms.status.startswith("unformable") and not arms.low and not arms.high and not arms.random
        return
    assert arms.status == "ok"
    assert len(arms.low) == len(arms.high) == arms.k and all(len(x) == arms.k for x in arms.random)
    assert not set(arms.low) & set(arms.high)
    assert all(r[h] < lo for h in arms.low) and all(r[h] >= hi for h in arms.high)
    # the low arm holds the k lowest ranks, the high arm the k highest
    assert max(r[h] for h in arms.low) <= min(r[h] for h in r if h not in arms.low)
    assert min(r[h] for h in arms.high) >= max(r[h] for h in r if h not in arms.high)
    assert all(len(set(x)) == arms.k and set(x) <= set(r) for x in arms.random)


def test_arms_random_draws_seeded():
    t = random_table(np.random.default_rng(0), 32)
    a = M.disjoint_arms(t, 0.5, 0.5, draws=4, seed=7)
    assert a.k > 0 and a.summary() == M.disjoint_arms(t, 0.5, 0.5, draws=4, seed=7).summary()
    assert len({tuple(x) for x in a.random}) > 1                       # draws differ from one another
    assert M.disjoint_arms(t, 0.5, 0.5, draws=4, seed=8).random != a.random


def test_arms_unformable_says_why():
    t = heads([0.9, 0.8, 0.95], [1.0, 1.0, 1.0])                       # no head below 0.25
    a = M.disjoint_arms(t)
    assert a.k == 0 and a.status == "unformable: no low-rank head (rank/bound < 0.25)"
    with pytest.raises(ValueError, match="group_low"):
        M.disjoint_arms(t, 0.8, 0.5)
