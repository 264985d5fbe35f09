"""claims: verdicts follow the documented thresholds; missing stages give 'missing' rows, not crashes."""
import math

import pandas as pd
import pytest
from report_synth import write_bench, write_evals, write_heads, write_mqar, write_pretrain, write_profile

from lapr.report.claims import CLAIMS, THRESHOLDS, claims_frame, claims_table, thresholds
from lapr.report.results import collect

ONE = {"deltanet": "delta_net"}


def verdicts(root, cid, **kw):
    df = claims_frame(collect(root), **kw)
    return df[df["id"] == cid]


def one(root, cid, **kw):
    rows = verdicts(root, cid, **kw)
    assert len(rows) == 1, rows
    return rows.iloc[0]


@pytest.mark.parametrize("rrqr_slope, verdict", [(0.06, "supported"), (0.2, "inconclusive"), (0.5, "contradicted")])
def test_a1_judged_on_strong_rrqr_not_the_best_method(tmp_path, rrqr_slope, verdict):
    # random "wins" (ppl below the unpruned model's, as on the embedded models); A1 ignores it
    write_evals(tmp_path, models=ONE, methods=("random", "wanda", "strong_rrqr"), ratios=(0.5,), lm=False,
                slope={"random": -0.1, "wanda": 0.01, "strong_rrqr": rrqr_slope})
    row = one(tmp_path, "A1")
    assert row["verdict"] == verdict
    assert row["value"] == pytest.approx(rrqr_slope * 0.5)  # relative increase on wikitext2 (hub: no metrics.json)
    assert row["measured"].startswith("strong_rrqr:") and "wikitext2_test_raw" in row["measured"]
    assert "best of 3 methods: random -5.00%" in row["measured"]


def test_a1_threshold_override_and_corpus(tmp_path):
    write_evals(tmp_path, models=ONE, methods=("strong_rrqr",), ratios=(0.5,), lm=False, slope={"strong_rrqr": 0.06})
    assert one(tmp_path, "A1", overrides={"marginal_ppl": 0.02})["verdict"] == "inconclusive"
    row = one(tmp_path, "A1", ppl_task="gutenberg_valid")
    assert "gutenberg_valid" in row["measured"] and row["verdict"] == "supported"
    with pytest.raises(ValueError, match="^figures.claims.nope: unknown key; allowed: "):
        thresholds({"nope": 1})


def test_a1_self_trained_model_uses_gutenberg_valid(tmp_path):
    import pandas as pd

    write_pretrain(tmp_path, models=ONE)  # models/deltanet/metrics.json: a self-trained model
    write_evals(tmp_path, models=ONE, methods=("strong_rrqr",), ratios=(0.5,), lm=False, slope={"strong_rrqr": 0.06})
    # strong_rrqr +30% on WikiText (out of domain), +3% on Gutenberg (in domain)
    path = tmp_path / "eval" / "deltanet" / "strong_rrqr" / "0.5.csv"
    df = pd.read_csv(path)
    df.loc[(df["task"] == "ppl/wikitext2_test_raw") & (df["metric"] == "ppl"), "value"] = 400.0 * 1.3
    df.loc[(df["task"] == "ppl/wikitext2_test_raw") & (df["metric"] == "nll"), "value"] = math.log(400.0 * 1.3)
    df.to_csv(path, index=False)
    row = one(tmp_path, "A1")
    assert "gutenberg_valid" in row["measured"] and row["verdict"] == "supported"
    assert row["value"] == pytest.approx(0.03)
    row = one(tmp_path, "A1", ppl_task="wikitext2_test_raw")  # the setting still wins
    assert row["verdict"] == "contradicted" and row["value"] == pytest.approx(0.3)


@pytest.mark.parametrize("lora_slope, verdict", [(None, "missing"), (0.02, "supported"), (0.5, "contradicted")])
def test_a1_with_and_without_recovery(tmp_path, lora_slope, verdict):
    methods = ("wanda", "wanda+lora", "strong_rrqr") + (("strong_rrqr+lora",) if lora_slope is not None else ())
    write_evals(tmp_path, models=ONE, methods=methods, ratios=(0.5,), lm=False,
                slope={"wanda": 0.1, "wanda+lora": 0.0, "strong_rrqr": 0.3, "strong_rrqr+lora": lora_slope})
    plain = one(tmp_path, "A1")
    assert plain["verdict"] == "inconclusive" and plain["value"] == pytest.approx(0.15)  # +lora never counts here
    rec = one(tmp_path, "A1r")
    assert rec["verdict"] == verdict
    if lora_slope is None:
        assert rec["reason"].startswith("not recovered in this profile") and "wanda+lora" in rec["reason"]
        assert math.isnan(rec["value"])
    else:
        assert rec["value"] == pytest.approx(lora_slope * 0.5)
        assert rec["measured"].startswith("strong_rrqr+lora:") and "without recovery +15.00%" in rec["measured"]


def test_a1_withheld_when_unpruned_model_does_not_beat_unigram(tmp_path):
    import pandas as pd

    write_evals(tmp_path, models=ONE, methods=("strong_rrqr",), ratios=(0.5,), lm=False, slope={"strong_rrqr": 0.06})
    assert one(tmp_path, "A1")["verdict"] == "supported"
    base = tmp_path / "eval" / "deltanet" / "none" / "0.csv"
    df = pd.read_csv(base)
    df.loc[df["metric"] == "unigram_ppl", "value"] = 1.0  # the unigram model now wins
    df.to_csv(base, index=False)
    row = one(tmp_path, "A1")
    assert row["verdict"] == "inconclusive" and "unigram" in row["reason"]
    assert row["value"] == pytest.approx(0.06 * 0.5)  # the measurement is still reported


def test_a1_missing_ratio_or_method(tmp_path):
    write_evals(tmp_path / "a", models=ONE, methods=("strong_rrqr",), ratios=(0.25, 0.75), lm=False)
    row = one(tmp_path / "a", "A1")
    assert row["verdict"] == "missing" and "r=0.5" in row["reason"] and math.isnan(row["value"])
    assert "evaluated at r=0.25, 0.75" in row["reason"]
    write_evals(tmp_path / "b", models=ONE, methods=("random", "wanda"), ratios=(0.5,), lm=False)
    row = one(tmp_path / "b", "A1")
    assert row["verdict"] == "missing" and "strong_rrqr" in row["reason"] and "r=0.5" in row["reason"]


@pytest.mark.parametrize("u, verdict", [(0.1, "supported"), (0.35, "inconclusive"), (0.6, "contradicted")])
def test_a2_utilisation(tmp_path, u, verdict):
    write_profile(tmp_path, "deltanet", utilisation=u)
    row = one(tmp_path, "A2")
    assert row["verdict"] == verdict and row["value"] == pytest.approx(u)


@pytest.mark.parametrize("speed, verdict", [(1.8, "supported"), (1.3, "inconclusive"), (1.0, "contradicted")])
def test_a3_speedup(tmp_path, speed, verdict):
    write_bench(tmp_path, speed=speed)
    rows = verdicts(tmp_path, "A3")
    assert len(rows) == 4  # 2 families x 2 phases
    assert set(rows["verdict"]) == {verdict}
    assert rows["value"].tolist() == pytest.approx([speed] * 4)


def test_a3_interval_carries_timing_noise(tmp_path):
    """Speed-up 1.8x from one series per row: with tight timings (IQR 0.01 ms on ~1-2 ms medians) the
    interval sits above 1.5x; with an IQR of 1 ms over 10 repeats (median standard error ~0.37 ms)
    the same point value straddles the thresholds and the verdict is withheld."""
    write_bench(tmp_path / "tight", speed=1.8, iqr=0.01)
    tight = verdicts(tmp_path / "tight", "A3")
    assert set(tight["verdict"]) == {"supported"} and (tight["lo"] > 1.7).all()
    write_bench(tmp_path / "noisy", speed=1.8, iqr=1.0)
    noisy = verdicts(tmp_path / "noisy", "A3")
    assert set(noisy["verdict"]) == {"inconclusive"}
    assert noisy["value"].tolist() == pytest.approx([1.8] * 4)
    assert ((noisy["lo"] < 1.5) & (noisy["hi"] > 1.8)).all()
    assert "timing noise" in noisy["interval"].iloc[0]


@pytest.mark.parametrize("small_loss, verdict", [(0.5, "supported"), (0.33, "inconclusive"), (0.1, "contradicted")])
def test_a4_query_noise_by_d_k(tmp_path, small_loss, verdict):
    write_mqar(tmp_path, families=("delta_net", "gated_deltanet"),
               loss={32: 0.3, 24: 0.3, 16: 0.3, 8: small_loss})
    rows = verdicts(tmp_path, "A4")
    assert rows["model"].tolist() == ["MQAR delta_net", "MQAR gated_deltanet"]
    assert set(rows["verdict"]) == {verdict}
    assert rows["value"].tolist() == pytest.approx([small_loss - 0.3] * 2)
    m = rows["measured"].iloc[0]
    assert m.startswith("strong_rrqr, query noise 0 -> 1:") and "d_k=8" in m and "32 30%" in m


def test_a4_other_method_floor_and_missing(tmp_path):
    write_mqar(tmp_path / "a", method="wanda", loss={32: 0.1, 24: 0.2, 16: 0.3, 8: 0.4})
    row = one(tmp_path / "a", "A4")
    assert row["verdict"] == "supported" and "wanda (strong_rrqr not in the probe)" in row["measured"]
    write_mqar(tmp_path / "b", base_recall=0.3, loss={32: 0.1, 24: 0.2, 16: 0.3, 8: 0.4})
    row = one(tmp_path / "b", "A4")
    assert row["verdict"] == "inconclusive" and "probe model too weak" in row["reason"]
    assert row["value"] == pytest.approx(0.3)
    row = one(tmp_path / "c", "A4")
    assert row["verdict"] == "missing" and "mqar" in row["reason"]
    write_mqar(tmp_path / "d", noise=(0.0,))
    row = one(tmp_path / "d", "A4")
    assert row["verdict"] == "missing" and "noise" in row["reason"]


def test_mqar_reader_keeps_the_stage_schema(tmp_path):
    import pandas as pd

    from lapr.report.results import MQAR_COLUMNS
    stage = pytest.importorskip("lapr.probes.mqar_stage")
    assert MQAR_COLUMNS == stage.COLUMNS
    write_mqar(tmp_path)
    res = collect(tmp_path)
    assert not res.problems and len(res.mqar) == 4 * 3 * 2 and res.mqar["d_k"].dtype.kind in "if"
    path = tmp_path / "mqar" / "eval" / "delta_net.csv"
    pd.read_csv(path).drop(columns="noise").to_csv(path, index=False)
    res = collect(tmp_path)
    assert res.mqar.empty and len(res.problems) == 1 and "noise" in res.problems[0]


@pytest.mark.parametrize("ranks, verdict", [
    ([1, 2, 16, 15, 1, 16, 14, 2], "supported"),
    ([16, 16, 15, 16, 14, 16, 16, 16], "contradicted"),
    ([1, 8, 8, 8, 8, 8, 16, 2], "inconclusive"),
    ([1, 16, 1, 16], "inconclusive"),  # fewer than min_heads
])
def test_b1_groups(tmp_path, ranks, verdict):
    write_profile(tmp_path, "deltanet", final_ranks=ranks)
    assert one(tmp_path, "B1")["verdict"] == verdict


@pytest.mark.parametrize("rho, keep, verdict", [
    ((0.9, 0.8, 1.0), (1.0, 0.9, 1.0), "supported"),
    ((0.1, 0.2, 0.25), (1.0, 1.0, 1.0), "contradicted"),
    ((0.9, 0.9, 0.9), (0.5, 0.5, 0.5), "contradicted"),
    ((0.5, 0.5, 0.5), (0.9, 0.9, 0.9), "inconclusive"),
    ((math.nan, math.nan, math.nan), (1.0, 1.0, 1.0), "inconclusive"),
])
def test_b2_stability(tmp_path, rho, keep, verdict):
    write_profile(tmp_path, "deltanet", spearman=rho, keep=keep)
    row = one(tmp_path, "B2-inputs")
    assert row["verdict"] == verdict
    if not math.isnan(rho[0]):
        assert row["value"] == pytest.approx(sum(rho) / 3)


def _heads(joint_ppl=110.0, joint_saved=0.4, **kw):
    ppl = {"none": {0.0: 100.0}, "joint": {0.25: 101.0, 0.5: joint_ppl}}
    saved = {"none": {0.0: 0.0}, "joint": {0.25: 0.25, 0.5: joint_saved}}
    niah = {"none": {0.0: 0.9}, "joint": {0.25: 0.9, 0.5: 0.8}}
    return dict(ppl=ppl, saved=saved, niah=niah, models=("deltanet",), **kw)


@pytest.mark.parametrize("joint_ppl", [102.0, 150.0])
def test_b3_by_ppl_without_windows_has_no_interval(tmp_path, joint_ppl):
    write_heads(tmp_path, **_heads(joint_ppl))
    row = one(tmp_path, "B3")
    assert row["verdict"] == "inconclusive" and row["value"] == pytest.approx(100.0 / joint_ppl)
    assert "no interval" in row["reason"] and math.isnan(row["lo"])
    assert "40.0%" in row["measured"]


def test_b3_prefers_accuracy_and_needs_target_saving(tmp_path):
    acc = {"none": {0.0: 0.60}, "joint": {0.25: 0.60, 0.5: 0.59}}
    write_heads(tmp_path / "a", **_heads(150.0, accuracy=acc))  # ppl says contradicted, accuracy says kept
    row = one(tmp_path / "a", "B3")
    assert row["verdict"] == "supported" and row["value"] == pytest.approx(0.59 / 0.60)
    assert row["lo"] < 0.59 / 0.60 < row["hi"] and row["lo"] >= 0.95
    write_heads(tmp_path / "c", **_heads(150.0, accuracy=acc, n=200))  # the same point on 200 documents
    row = one(tmp_path / "c", "B3")
    assert row["verdict"] == "inconclusive" and row["lo"] < 0.95 < row["hi"]
    write_heads(tmp_path / "b", **_heads(joint_saved=0.3))
    row = one(tmp_path / "b", "B3")
    assert row["verdict"] == "inconclusive" and "no budget reaches" in row["reason"]


@pytest.mark.parametrize("low, high, base, verdict", [
    (0.3, 0.8, 0.9, "supported"), (0.85, 0.8, 0.9, "contradicted"), (0.7, 0.8, 0.9, "inconclusive"),
    (0.79, 0.8, 0.9, "inconclusive"),  # high - low barely above 0: the interval straddles it
    (0.0, 0.4, 0.3, "inconclusive"),  # unpruned NIAH below the floor
])
def test_b4_niah(tmp_path, low, high, base, verdict):
    niah = {"none": {0.0: base}, "low_rank": {0.25: 0.9, 0.5: low}, "high_rank": {0.25: 0.9, 0.5: high}}
    ppl = {m: {b: 100.0 for b in v} for m, v in niah.items()}
    saved = {m: {b: b for b in v} for m, v in niah.items()}
    write_heads(tmp_path, models=("deltanet",), niah=niah, ppl=ppl, saved=saved)
    row = one(tmp_path, "B4")
    assert row["verdict"] == verdict and row["value"] == pytest.approx(high - low)  # largest common budget 0.5
    if verdict != "inconclusive":
        assert row["lo"] <= high - low <= row["hi"]


@pytest.mark.parametrize("base, high, low, verdict", [
    (0.938, 0.906, 0.469, "supported"),     # paper B Table 1, Qwen3-Next Instruct
    (0.906, 0.625, 0.438, "supported"),     # paper B Table 1, Qwen3-Next Thinking
    (0.938, 0.30, 0.90, "contradicted"),    # SRA's direction: removing high-rank heads hurts more
    (0.938, 0.50, 0.40, "inconclusive"),    # the high-rank-removed model lost half the base level
])
def test_b4_criterion_on_the_papers_table_1(base, high, low, verdict):
    from lapr.report.claims import b4_verdict

    assert b4_verdict(base, low, high, THRESHOLDS) == verdict


def test_everything_missing(tmp_path):
    t = claims_table(collect(tmp_path / "none"))
    df = t.df
    assert set(df["verdict"]) == {"missing"}
    assert set(df["id"]) == set(CLAIMS)
    assert (df["reason"].str.len() > 0).all()
    assert list(df["id"]) == sorted(df["id"], key=list(CLAIMS).index)


def test_partial_results_one_row_per_model(tmp_path):
    write_profile(tmp_path, "deltanet")
    write_evals(tmp_path, models={"gdn": "gated_deltanet"}, methods=("strong_rrqr", "wanda"), ratios=(0.5,),
                lm=False, slope={"strong_rrqr": 0.2, "wanda": 0.0})
    df = claims_frame(collect(tmp_path))
    a1 = df[df["id"] == "A1"].set_index("model")
    assert a1.at["gdn", "verdict"] == "inconclusive" and a1.at["deltanet", "verdict"] == "missing"  # rrqr +10%
    assert set(df.loc[df["id"] == "A1r", "verdict"]) == {"missing"}
    b1 = df[df["id"] == "B1"].set_index("model")
    assert b1.at["deltanet", "verdict"] == "supported" and b1.at["gdn", "verdict"] == "missing"
    assert set(df.loc[df["id"].isin(["A4", "B3", "B4"]), "verdict"]) == {"missing"}


def test_thresholds_documented():
    import lapr.report.claims as c
    for key in THRESHOLDS:
        assert key in c.__doc__ or key in c.__doc__.replace("_", " "), key


def test_readme_note_lists_every_criterion(tmp_path):
    t = claims_table(collect(tmp_path / "none"))
    for cid in CLAIMS:
        assert f"- {cid}: " in t.note, cid


@pytest.mark.parametrize("rho, cos, verdict", [(0.95, 0.99, "supported"), (0.95, 0.90, "inconclusive"),
                                               (0.1, 0.99, "contradicted"), (0.6, 0.99, "inconclusive")])
def test_b2_over_time(tmp_path, rho, cos, verdict):
    import numpy as np
    import pandas as pd

    write_profile(tmp_path, "deltanet")
    rng = np.random.default_rng(0)
    rows = [{"layer": layer, "context": c, "t_early": 128, "t_late": 2048,
             "spearman": rho + rng.normal(0, 0.01), "cosine_rank": cos, "cosine_norm": 0.99, "n_heads": 6}
            for layer in range(4) for c in ("gutenberg", "wikitext")]
    pd.DataFrame(rows).to_csv(tmp_path / "profile" / "deltanet" / "consistency_time.csv", index=False)
    row = one(tmp_path, "B2")
    assert row["verdict"] == verdict and row["value"] == pytest.approx(rho, abs=0.01)
    assert row["lo"] <= row["value"] <= row["hi"] and "t=128 vs t=2048" in row["measured"]
    assert one(tmp_path, "B2-inputs")["verdict"] == "supported"  # consistency.csv: its own row


def test_b1_at_other_eps_and_decay_row(tmp_path):
    import pandas as pd

    write_profile(tmp_path, "gdn", final_ranks=[1, 2, 16, 15, 1, 16, 14, 2])
    d = tmp_path / "profile" / "gdn"
    heads = pd.read_csv(d / "heads.csv")
    heads["final_rank_1e-3"] = heads["final_rank"]                      # same split
    heads["final_rank_1e-2"] = [1, 1, 2, 2, 1, 2, 2, 1]                 # every head low: no high group
    heads.to_csv(d / "heads.csv", index=False)
    pd.DataFrame([{"eps": 1e-4, "rank_column": "final_rank", "primary": True, "n_heads": 8, "bimodality": 0.8,
                   "decay_r2": 0.75, "decay_slope": 2.0, "decay_intercept": -1.0, "decay_n_heads": 8}]) \
        .to_csv(d / "stratification.csv", index=False)
    rows = verdicts(tmp_path, "B1-eps").set_index("measured")
    assert sorted(rows["verdict"]) == ["contradicted", "supported"]
    assert any("eps 1e-2" in m for m, v in rows["verdict"].items() if v == "contradicted")
    row = one(tmp_path, "B-decay")
    assert row["verdict"] == "reported" and row["value"] == pytest.approx(0.75) and "0.800" in row["measured"]


def test_b4_unformable_arms_say_so_and_are_not_the_unpruned_model(tmp_path):
    import pandas as pd

    write_heads(tmp_path, models=("deltanet",))
    d = tmp_path / "heads" / "deltanet" / "arms"
    d.mkdir(parents=True)
    base = pd.read_csv(tmp_path / "heads" / "deltanet" / "none" / "0.csv")
    rows = base.iloc[:1].copy()
    rows[["method", "task", "metric", "value", "budget"]] = ["arm_low", "arms", "k", 0.0, 0.0]
    rows["status"] = "unformable: no head of the high class (rank/bound >= 0.75)"
    rows.to_csv(d / "0.csv", index=False)
    row = one(tmp_path, "B4")
    assert row["verdict"] == "inconclusive" and "no head of the high class" in row["reason"]


def test_b3_accuracy_at_chance_is_not_evidence():
    """A model at chance on every task (the 2 x H200 run's 110M models: piqa 0.50, hellaswag 0.25, ...)
    keeps 'all' of its accuracy under any pruning; B3 then judges on perplexity instead."""
    from lapr.report.claims import _at_chance, chance_level

    keys = [("lapr_piqa", "acc"), ("lapr_hellaswag", "acc"), ("lapr_arc_easy", "acc"), ("lapr_lambada_openai", "acc")]
    n = {k: 500 for k in keys}
    assert chance_level("lapr_arc_challenge") == 0.25 and chance_level("lapr_mystery") is None
    at = {("lapr_piqa", "acc"): 0.49, ("lapr_hellaswag", "acc"): 0.26, ("lapr_arc_easy", "acc"): 0.24,
          ("lapr_lambada_openai", "acc"): 0.01}
    assert "not above chance" in _at_chance(at, n, keys)
    above = {("lapr_piqa", "acc"): 0.62, ("lapr_hellaswag", "acc"): 0.33, ("lapr_arc_easy", "acc"): 0.45,
             ("lapr_lambada_openai", "acc"): 0.2}
    assert _at_chance(above, n, keys) == ""
    assert _at_chance(at, n, keys + [("lapr_mystery", "acc")]) == ""  # unknown chance level: no guard


def test_compare_runs_keeps_every_row(tmp_path):
    from lapr.report.claims import compare_runs, main

    a = pd.DataFrame({"id": ["A1", "A3", "A3"], "model": ["m", "x", "x"], "verdict": ["supported", "supported", "inconclusive"],
                      "value": [0.1, 1.8, 1.2], "lo": [0.0, 1.6, 1.0], "hi": [0.2, 2.0, 1.4]})
    b = a.iloc[[0, 1]].assign(verdict=["supported", "inconclusive"])
    t = compare_runs(a, b)
    assert t["k"].tolist() == ["A1|m|0", "A3|x|0", "A3|x|1"]
    assert t["verdict_s0"].tolist() == ["supported", "supported", "inconclusive"]
    assert t["verdict_s1"].tolist()[:2] == ["supported", "inconclusive"] and pd.isna(t["verdict_s1"].iloc[2])
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "c.csv")])
    assert pd.read_csv(tmp_path / "c.csv").shape == (3, 9)
