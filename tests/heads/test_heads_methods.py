"""Head-pruning methods, budgets and their validation (no model needed)."""
import numpy as np
import pandas as pd
import pytest

from lapr.heads import methods as M


def table(ranks, norms, layers=None, bound=16):
    n = len(ranks)
    layers = layers or [i // 2 for i in range(n)]
    heads = [sum(1 for x in layers[:i] if x == layers[i]) for i in range(n)]
    return pd.DataFrame({"layer": layers, "head": heads, "final_rank": ranks, "bound": bound,
                         "state_norm": norms, "class": ["high" if r >= bound / 2 else "low" for r in ranks]})


T = table(ranks=[16, 2, 12, 1, 16, 4, 8, 0], norms=[1.0, 3.0, 2.0, 5.0, 9.0, 1.0, 4.0, 1.0])


def test_registry_has_the_five_methods():
    assert set(M.METHODS) == {"joint_rank_norm", "low_rank_first", "high_rank_first", "norm_only", "random"}


def test_normalisations():
    np.testing.assert_allclose(M.normalised_rank(T), np.array([16, 2, 12, 1, 16, 4, 8, 0]) / 16)
    # eq. 14: nbar_h / max_j nbar_j (not min-max, which minmax_norm keeps for comparison)
    np.testing.assert_allclose(M.normalised_norm(T), np.array([1, 3, 2, 5, 9, 1, 4, 1]) / 9)
    np.testing.assert_allclose(M.minmax_norm(T), (np.array([1, 3, 2, 5, 9, 1, 4, 1]) - 1) / 8)
    flat = table([1, 2], [3.0, 3.0])
    assert (M.normalised_norm(flat) == 1).all() and (M.minmax_norm(flat) == 0).all()
    assert (M.normalised_norm(table([1, 2], [0.0, 0.0])) == 0).all()
    assert (M.normalised_rank(table([20, 8], [1.0, 2.0])) <= 1).all()   # clipped at the bound


def test_joint_score_is_convex_mix():
    r, n = M.normalised_rank(T), M.normalised_norm(T)
    for a in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(M.priorities(T, "joint_rank_norm", a), a * r + (1 - a) * n)
    np.testing.assert_allclose(M.priorities(T, "joint_rank_norm", 1.0), M.priorities(T, "high_rank_first"))
    np.testing.assert_allclose(M.priorities(T, "joint_rank_norm", 0.0), M.priorities(T, "norm_only"))


def test_orders():
    # global, 4 of 8 heads
    hi = M.select_heads(T, "high_rank_first", 0.5, seed=0)
    assert set(hi.removed) == {(0, 0), (2, 0), (1, 0), (3, 0)}          # ranks 16, 16, 12, 8
    lo = M.select_heads(T, "low_rank_first", 0.5)
    assert set(lo.removed) == {(3, 1), (1, 1), (0, 1), (2, 1)}          # ranks 0, 1, 2, 4
    nrm = M.select_heads(T, "norm_only", 0.25)
    assert set(nrm.removed) == {(2, 0), (1, 1)}                          # norms 9, 5
    joint = M.select_heads(T, "joint_rank_norm", 0.125, alpha=0.5)
    assert joint.removed == [(2, 0)]                                     # rank 1 and norm 1
    assert joint.summary()["norm"] == "frobenius"
    assert hi.summary()["removed_high"] == 4 and hi.summary()["removed_low"] == 0
    assert lo.summary()["removed_low"] == 4


def test_random_is_seeded():
    a = M.select_heads(T, "random", 0.5, seed=1).removed
    assert a == M.select_heads(T, "random", 0.5, seed=1).removed
    assert any(M.select_heads(T, "random", 0.5, seed=s).removed != a for s in range(2, 8))


def test_ties_broken_by_seed_not_index():
    flat = table([16] * 8, [1.0] * 8)
    firsts = {M.select_heads(flat, "high_rank_first", 0.125, seed=s).removed[0] for s in range(10)}
    assert len(firsts) > 1


def test_layer_scope():
    plan = M.select_heads(T, "high_rank_first", 0.5, scope="layer")
    assert plan.removed_per_layer == {0: 1, 1: 1, 2: 1, 3: 1}
    assert set(plan.removed) == {(0, 0), (1, 0), (2, 0), (3, 0)}


def test_min_keep_and_budget_errors():
    with pytest.raises(ValueError, match="only 4 can go"):
        M.select_heads(T, "random", 0.75, min_keep=1)
    plan = M.select_heads(T, "high_rank_first", 0.5, min_keep=1)
    assert max(plan.removed_per_layer.values()) == 1
    for bad in (0, 1, 1.5, -0.1, "0.5", True, None):
        with pytest.raises(ValueError, match="budget"):
            M.select_heads(T, "random", bad)
    with pytest.raises(ValueError, match="removes no head"):
        M.select_heads(T, "random", 0.05)
    with pytest.raises(ValueError, match="removes no head"):
        M.select_heads(T, "random", 0.2, scope="layer")     # round(0.2 * 2) = 0 per layer
    with pytest.raises(ValueError, match="unknown head-pruning method"):
        M.select_heads(T, "lowest", 0.5)
    with pytest.raises(ValueError, match="scope"):
        M.select_heads(T, "random", 0.5, scope="model")
    with pytest.raises(ValueError, match="alpha"):
        M.select_heads(T, "joint_rank_norm", 0.5, alpha=1.5)


def test_a_budget_may_empty_a_layer_but_not_the_model():
    plan = M.select_heads(T, "high_rank_first", 0.875)     # 7 of 8: layers 0 and 2 lose both heads
    assert len(plan.removed) == 7 and sorted(plan.removed_per_layer.values()) == [1, 2, 2, 2]
    with pytest.raises(ValueError, match=r"^head budget 0.95 removes all 8 heads of the model "
                                         r"\(round\(0.95 \* 8\) = 8\): lower the budget$"):
        M.select_heads(T, "random", 0.95)
    with pytest.raises(ValueError, match=r"^head budget 0.9 with scope 'layer' removes all 8 heads of the model"):
        M.select_heads(T, "random", 0.9, scope="layer")    # round(0.9 * 2) = 2 of every layer's 2


def test_table_validation(tmp_path):
    with pytest.raises(ValueError, match="missing column"):
        M.check_table(T.drop(columns=["state_norm"]))
    with pytest.raises(ValueError, match="duplicate"):
        M.check_table(pd.concat([T, T.iloc[:1]]))
    with pytest.raises(FileNotFoundError, match="heads.csv"):
        M.load_heads(tmp_path / "nope.csv")
    T.to_csv(tmp_path / "heads.csv", index=False)
    assert len(M.load_heads(tmp_path / "heads.csv")) == 8
