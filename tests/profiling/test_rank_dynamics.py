"""Paper B's rank-dynamics protocol in the profile stage (issue 17 items 4-7): consistency over time,
eps sensitivity, Sarle's bimodality coefficient, the decay gate and its R^2, the stratification figure."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from profiling_helpers import tiny_model

from lapr.profiling import stage, stratify
from lapr.profiling.capture import capture_states, chunk_log_decay_mean
from lapr.profiling.metrics import rank_table


# ----------------------------------------------------------------------------- Sarle's b

def test_bimodality_coefficient_hand_value():
    # x = [0, 0, 0, 0, 1]: m2 = .16, m3 = .096, m4 = .0832 -> g1 = 1.5, G1 = g1 sqrt(20) / 3 = sqrt(5);
    # g2 = .0832 / .0256 - 3 = .25, G2 = 4 (6 * .25 + 6) / (3 * 2) = 5; b = (5 + 1) / (5 + 3 * 16 / 6) = 6 / 13
    assert stratify.bimodality_coefficient([0, 0, 0, 0, 1]) == pytest.approx(6 / 13, rel=1e-12)
    # scale / shift invariant (rank vs rank / bound give one b)
    assert stratify.bimodality_coefficient([3, 3, 3, 3, 7]) == pytest.approx(6 / 13, rel=1e-12)


def test_bimodality_coefficient_reference_shapes():
    uniform = np.linspace(0, 1, 20001)
    assert stratify.bimodality_coefficient(uniform) == pytest.approx(5 / 9, abs=1e-3)  # Sarle's threshold
    two_groups = np.r_[np.zeros(500), np.ones(500)] + np.random.default_rng(0).normal(0, 0.01, 1000)
    assert stratify.bimodality_coefficient(two_groups) > 0.95
    normal = np.random.default_rng(1).normal(size=5000)
    assert stratify.bimodality_coefficient(normal) == pytest.approx(1 / 3, abs=0.02)  # (0 + 1) / (0 + 3)
    assert math.isnan(stratify.bimodality_coefficient([1, 1, 1, 1]))
    assert math.isnan(stratify.bimodality_coefficient([0, 1, 2]))


# ----------------------------------------------------------------------------- R^2

def test_linear_r2_closed_forms():
    r2, slope, icpt = stratify.linear_r2([0.1, 0.5, 0.9, 0.95], [1.0, 3.0, 5.0, 5.25])  # y = 5x + 0.5
    assert (r2, slope, icpt) == pytest.approx((1.0, 5.0, 0.5))
    # x = [0, 1, 2], y = [0, 2, 1]: Sxy = 1, Sxx = Syy = 2 -> R^2 = Sxy^2 / (Sxx Syy) = 1/4
    assert stratify.linear_r2([0, 1, 2], [0, 2, 1])[0] == pytest.approx(0.25)
    assert stratify.linear_r2([-1, 0, 1], [1, 0, 1])[0] == pytest.approx(0.0, abs=1e-12)  # y = x^2
    assert math.isnan(stratify.linear_r2([1, 1, 1], [0, 1, 2])[0])
    assert math.isnan(stratify.linear_r2([np.nan, np.nan, 1, 2], [0, 1, 2, 3])[0])  # < 3 finite pairs


# ----------------------------------------------------------------------------- consistency over time

def per_head(early, late, t_early=128, t_late=2048, context="gutenberg", layer=0, norm_scale=1.0):
    rows = []
    for t, vec in ((t_early, early), (t_late, late)):
        for h, r in enumerate(vec):
            rows.append({"context": context, "layer": layer, "head": h, "position": t, "rank": float(r),
                         "nuclear": norm_scale * (1 + r), "frobenius": 1.0 + h})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("late, rho", [([1, 2, 3, 4], 1.0), ([4, 3, 2, 1], -1.0),
                                       ([1, 3, 2, 4], 0.8)])  # 1 - 6 * 2 / (4 * 15)
def test_time_consistency_spearman(late, rho):
    t = stratify.time_consistency(per_head([1, 2, 3, 4], late), 128, 2048, natural=["gutenberg"])
    row = t[t["context"] == "gutenberg"].iloc[0]
    assert row["spearman"] == pytest.approx(rho) and not row["constant"] and row["n_heads"] == 4
    assert (row["t_early"], row["t_late"]) == (128, 2048)
    if late == [1, 3, 2, 4]:
        assert row["cosine_rank"] == pytest.approx(29 / 30)  # (1 + 6 + 6 + 16) / 30


def test_time_consistency_constant_and_means():
    a = per_head([5, 5, 5], [1, 2, 3], context="gutenberg")  # constant early vector: Spearman undefined
    b = per_head([1, 2, 3], [1, 2, 3], context="wikitext")
    c = per_head([3, 2, 1], [1, 2, 3], context="attack")  # not natural: not in the mean
    t = stratify.time_consistency(pd.concat([a, b, c]), 128, 2048, natural=["gutenberg", "wikitext"])
    assert list(t.columns) == stratify.TIME_COLUMNS
    g = t.set_index("context")
    assert math.isnan(g.loc["gutenberg", "spearman"]) and g.loc["gutenberg", "constant"]
    assert g.loc["attack", "spearman"] == pytest.approx(-1) and not g.loc["attack", "natural"]
    mean = g.loc[stratify.MEAN_CONTEXT]
    assert mean["spearman"] == pytest.approx(1.0)  # nanmean over the natural rows
    assert mean["cosine_rank"] == pytest.approx((g.loc["gutenberg", "cosine_rank"] + 1.0) / 2)
    assert not mean["constant"] and not mean["natural"]
    assert g.loc["wikitext", "cosine_norm"] == pytest.approx(1.0)


def test_time_consistency_needs_both_positions():
    with pytest.raises(ValueError, match="positions 128 and 512"):
        stratify.time_consistency(per_head([1, 2], [2, 1]), 128, 512)


@pytest.mark.parametrize("T, n, early, added", [(2048, 32, 128, True), (512, 32, 128, False),
                                                (256, 32, 128, None), (64, 8, 4, True), (48, 32, 3, None)])
def test_early_position_is_always_profiled(T, n, early, added):
    from lapr.profiling.capture import log_positions
    assert stage.early_position(T) == early
    pos = stage.profile_positions(T, n)
    assert early in pos and pos[-1] == T and pos == sorted(set(pos))
    if added is not None:
        assert (early not in log_positions(T, n)) == added
        assert len(pos) == n + added


def test_consistency_time_table_from_ranks():
    rows = []
    for sample in range(2):
        for t in (1, 4, 64):
            for h in range(3):
                rows.append({"context": "wikitext", "sample": sample, "layer": 0, "head": h, "position": t,
                             "threshold_rank": (h + 1) * (t > 1) + sample, "nuclear": 1.0 + h, "frobenius": 1.0})
    t = stage.consistency_time_table(pd.DataFrame(rows), t_early=4)
    row = t[t["context"] == "wikitext"].iloc[0]
    assert (row["t_early"], row["t_late"], row["spearman"]) == (4, 64, pytest.approx(1.0))
    assert len(t) == 2 and t["context"].tolist() == ["wikitext", "mean"]


# ----------------------------------------------------------------------------- eps sensitivity

def test_extra_eps_columns_from_the_same_singular_values():
    sigma = torch.tensor([1.0, 5e-3, 5e-4, 5e-5], dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    state = (u * sigma) @ u.T
    t = rank_table(state.reshape(1, 1, 1, 4, 4), [64], eps=1e-4, extra_eps=[1e-3, 1e-2])
    assert t[["threshold_rank", "threshold_rank_1e-3", "threshold_rank_1e-2"]].iloc[0].tolist() == [3, 2, 1]
    assert "threshold_rank_1e-3" not in rank_table(state.reshape(1, 1, 1, 4, 4), [64]).columns


def synthetic_ranks(decay=None):
    """Two natural contexts, one sample, 1 layer x 4 heads at positions 2 and 16 (bound 8)."""
    rows = []
    for context in ("gutenberg", "attack"):
        for t in (2, 16):
            for h in range(4):
                r = min(t, 8) * (h + 1) / 4
                rows.append({"context": context, "sample": 0, "layer": 0, "head": h, "position": t,
                             "threshold_rank": r, "threshold_rank_1e-2": r / 2, "bound": min(t, 8),
                             "frobenius": 1.0, "nuclear": 2.0, "stable_rank": 1.0, "utilisation": 0.1})
    return pd.DataFrame(rows)


def test_head_table_per_eps_and_decay():
    ranks = synthetic_ranks()
    heads = stage.head_table(ranks, ["gutenberg", "attack"], "fraction", 0.5, eps=1e-4)
    assert list(heads.columns[-3:]) == ["final_rank_1e-4", "final_rank_1e-2", "mean_decay"]
    assert heads["final_rank_1e-4"].tolist() == [2, 4, 6, 8] and heads["final_rank_1e-2"].tolist() == [1, 2, 3, 4]
    assert heads["mean_decay"].isna().all()  # DeltaNet: no gate, NaN (documented), never 1.0
    log_decay = np.log([0.5, 0.7, 0.9, 0.99])
    decay = pd.DataFrame({"context": ["gutenberg"] * 8 + ["attack"] * 4, "sample": [0] * 4 + [1] * 4 + [0] * 4,
                          "layer": 0, "head": list(range(4)) * 3,
                          "log_decay": np.r_[log_decay, log_decay + 0.01, np.zeros(4)]})
    heads = stage.head_table(ranks, ["gutenberg", "attack"], "fraction", 0.5, eps=1e-4, decay=decay)
    # r_bar per sample, averaged over the natural context's samples only (attack is not natural)
    want = (np.exp(log_decay) + np.exp(log_decay + 0.01)) / 2
    assert heads["mean_decay"].to_numpy() == pytest.approx(want)


def test_stratification_table():
    ranks = synthetic_ranks()
    decay = pd.DataFrame({"context": "gutenberg", "sample": 0, "layer": 0, "head": range(4),
                          "log_decay": np.log([0.2, 0.4, 0.6, 0.8])})
    heads = stage.head_table(ranks, ["gutenberg"], "fraction", 0.5, eps=1e-4, decay=decay)
    strat = stage.stratification_table(heads, stage.eps_list({"eps": 1e-4, "eps_sensitivity": [1e-2, 1e-4]}))
    assert list(strat.columns) == stage.STRAT_COLUMNS
    assert strat["rank_column"].tolist() == ["final_rank_1e-4", "final_rank_1e-2"]  # 1e-4 not repeated
    assert strat["primary"].tolist() == [True, False]
    # final rank / bound = (h + 1) / 4 and r_bar = 0.2 (h + 1): a perfect line, R^2 = 1, slope 1.25
    assert strat["decay_r2"].tolist() == pytest.approx([1.0, 1.0])
    assert strat["decay_slope"].tolist() == pytest.approx([1.25, 0.625])
    x = np.array([1, 2, 3, 4]) / 4
    assert strat["bimodality"].iloc[0] == pytest.approx(stratify.bimodality_coefficient(x))
    assert strat["low_fraction"].iloc[0] == 0 and strat["high_fraction"].iloc[0] == 0.5


def test_eps_settings():
    s = stage.parse_settings("{}", torch.device("cpu"))
    assert s["eps_sensitivity"] == [1e-3, 1e-2] and stage.eps_list(s) == [1e-4, 1e-3, 1e-2]
    assert stage.eps_list(stage.parse_settings('{"eps_sensitivity": []}', torch.device("cpu"))) == [1e-4]


# ----------------------------------------------------------------------------- decay gate capture

def test_chunk_log_decay_mean_matches_token_mean():
    g = -torch.rand(2, 45, 3, generator=torch.Generator().manual_seed(0))  # natural log, T = 45, C = 16
    C = 16
    g_cum = torch.cat([g[:, s:s + C].cumsum(1) for s in range(0, 45, C)], 1) / math.log(2.0)  # fla's layout
    assert chunk_log_decay_mean(g_cum, C) == pytest.approx(g.mean(1), abs=1e-6)


def test_capture_decays_are_the_gates_of_the_same_forward():
    from lapr.backends.delta_rule import gdn_gate
    from lapr.models import family
    model = tiny_model("gated_deltanet")
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    views = family(model).attention(model)
    seen = {}
    hooks = [v.module.a_proj.register_forward_hook(lambda m, i, o, idx=v.index: seen.__setitem__(idx, o))
             for v in views]
    decays = {}
    try:
        capture_states(model, ids, [10, 40], decays=decays)
    finally:
        for h in hooks:
            h.remove()
    assert sorted(decays) == [v.index for v in views]
    for v in views:
        ref = gdn_gate(seen[v.index], v.module.A_log, v.module.dt_bias).mean(1)  # [B, HV]
        assert decays[v.index].shape == (2, 2)
        assert torch.allclose(decays[v.index], ref, atol=1e-6)
        assert (decays[v.index] < 0).all()  # alpha = exp(g) in (0, 1)
    none = {}
    capture_states(tiny_model("delta_net"), ids, [10, 40], decays=none)
    assert none == {}  # DeltaNet has no decay gate


# ----------------------------------------------------------------------------- figure

def test_stratification_figure_and_caption(tmp_path):
    from lapr.profiling.plots import stratification, widest_layer
    from lapr.report.stage import caption_for
    rows, heads = [], []
    for layer in range(2):
        for h in range(4):
            final = 16 * (h % 2) if layer == 1 else 8  # layer 1 splits into 0 and 16: the widest
            heads.append({"layer": layer, "head": h, "final_rank": final, "bound": 16,
                          "class": "high" if final >= 8 else "low"})
            for t in (1, 4, 16, 64):
                rows.append({"context": "wikitext", "sample": 0, "layer": layer, "head": h, "position": t,
                             "threshold_rank": min(t, final), "bound": min(t, 16)})
    heads = pd.DataFrame(heads)
    assert widest_layer(heads) == 1
    paths = stratification(pd.DataFrame(rows), heads, tmp_path / "stratification", times=(4, 64))
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"] and all(p.stat().st_size > 5000 for p in paths)
    assert "bimodality coefficient" in caption_for("profile/gdn/stratification.png")
