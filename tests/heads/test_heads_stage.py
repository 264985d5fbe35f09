"""`heads` stage end to end on a tiny checkpoint, its settings validation, and the figures."""
import argparse
import json

import pandas as pd
import pytest
import torch

from lapr.data import load_tokenizer
from lapr.heads import methods, plots, stage
from lapr.heads.table import head_table
from lapr.models import build_model

SETTINGS = {"eval": {"ppl": ["gutenberg_valid"], "max_tokens": 256, "seq_len": 64, "batch_size": 4},
            "niah": {"lengths": [64], "depths": [0.0, 1.0], "n": 2, "max_chars": 20000}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = load_tokenizer("gutenberg-bpe-8k")
    d = tmp_path_factory.mktemp("m") / "gdn"
    model = build_model(dict(family="gated_deltanet", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=8,
                             head_v_dim=8, vocab_size=len(tok), mlp_ratio=2), seed=0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    heads = head_table(model.eval(), torch.randint(0, len(tok), (4, 32), generator=torch.Generator().manual_seed(0)))
    heads.to_csv(d.parent / "heads.csv", index=False)
    return d


def run(ckpt, out, method, budget, settings=SETTINGS, heads_csv=True):
    """One stage run; budget / out may be lists (a batch). Returns the CSV(s) read back."""
    budgets = budget if isinstance(budget, list) else [budget]
    outs = out if isinstance(out, list) else [out]
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    argv = ["--model", str(ckpt), "--method", method, "--budget", *map(str, budgets), "--out", *map(str, outs),
            "--settings", json.dumps(settings)]
    if heads_csv:
        argv += ["--heads-csv", str(ckpt.parent / "heads.csv")]
    stage.run(p.parse_args(argv))
    frames = [pd.read_csv(o) for o in outs]
    return frames if isinstance(out, list) else frames[0]


def test_stage_rows(ckpt, tmp_path):
    res = tmp_path / "results"
    base = run(ckpt, res / "heads/gdn/none/0.csv", "none", 0)
    assert set(base["application"]) == {"none"} and (base["state_saved_frac"] == 0).all()
    df = run(ckpt, res / "heads/gdn/high_rank_first/0.5.csv", "high_rank_first", 0.5,
             {**SETTINGS, "scope": "layer"})
    assert list(df.columns) == stage.COLUMNS
    assert set(df["application"]) == {"structural"}           # 1 of 2 heads per layer: fla can drop it
    assert (df["state_bytes_full"] == 2 * 2 * 8 * 8 * 4).all() and (df["state_bytes"] == 2 * 8 * 8 * 4).all()
    assert df["state_saved_frac"].iloc[0] == pytest.approx(0.5)
    tasks = set(zip(df["task"], df["metric"]))
    assert {("ppl/gutenberg_valid", "ppl"), ("niah", "accuracy"), ("niah", "accuracy_mean")} <= tasks
    cells = df[(df["task"] == "niah") & (df["metric"] == "accuracy")]
    assert sorted(cells["depth"]) == [0.0, 1.0] and (cells["n"] == 2).all()
    g = run(ckpt, res / "heads/gdn/random/0.25.csv", "random", 0.25, heads_csv=False)
    assert set(g["application"]) == {"masked"} and g["heads_removed"].iloc[0] == 1   # 1 of 4: uneven
    prov = json.loads((res / "heads/gdn/random/0.25.provenance.json").read_text())
    assert prov["application"] == "masked" and "differ" in prov["structural_blocked_by"]
    assert (res / "heads/gdn/random/0.25.niah.csv").is_file()
    # figures from these results
    paths = plots.make_figures(res, tmp_path / "fig")
    names = {p.name for p in paths}
    assert {"heads_ppl.png", "heads_ppl.pdf", "heads_niah.png", "heads_state.pdf"} <= names


def test_stage_errors(ckpt, tmp_path):
    with pytest.raises(ValueError, match="needs --budget 0"):
        run(ckpt, tmp_path / "x.csv", "none", 0.5)
    with pytest.raises(ValueError, match="heads-csv"):
        run(ckpt, tmp_path / "x.csv", "joint_rank_norm", 0.5, heads_csv=False)
    with pytest.raises(ValueError, match="budget"):
        run(ckpt, tmp_path / "x.csv", "random", 1.0)
    with pytest.raises(ValueError, match="unknown head-pruning method"):
        run(ckpt, tmp_path / "x.csv", "smallest", 0.5)
    other = methods.load_heads(ckpt.parent / "heads.csv").assign(layer=lambda d: d["layer"] + 5)
    other.to_csv(tmp_path / "bad.csv", index=False)
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    with pytest.raises(ValueError, match="do not match"):
        stage.run(p.parse_args(["--model", str(ckpt), "--method", "norm_only", "--budget", "0.5", "--out",
                                str(tmp_path / "x.csv"), "--heads-csv", str(tmp_path / "bad.csv"),
                                "--settings", json.dumps(SETTINGS)]))
    assert not (tmp_path / "x.csv").exists()


def _files(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def test_stage_batch_equals_single_runs(ckpt, tmp_path, capsys):
    # norm_only, global scope on 2 layers x 2 heads: 0.75 -> 3 heads (masked), 0.5 -> one per layer
    # (structural), 0.25 -> 1 head (masked). Largest first, so a removal leaking into a later budget
    # (hooks left on, weights changed in place) shows in the 0.25 rows.
    budgets = [0.75, 0.5, 0.25]
    batch = run(ckpt, [tmp_path / "batch" / f"{b}.csv" for b in budgets], "norm_only", budgets)
    log = capsys.readouterr().out
    assert "budget 1/3" in log and "budget 3/3" in log and log.count("[heads] wrote") == 3
    assert [set(df["application"]) for df in batch] == [{"masked"}, {"structural"}, {"masked"}]
    assert [df["heads_removed"].iloc[0] for df in batch] == [3, 2, 1]
    singles = [run(ckpt, tmp_path / "single" / f"{b}.csv", "norm_only", b) for b in budgets]
    for b, got, want in zip(budgets, batch, singles):
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=f"budget {b}")
        niah_got, niah_want = (pd.read_csv(tmp_path / d / f"{b}.niah.csv") for d in ("batch", "single"))
        pd.testing.assert_frame_equal(niah_got, niah_want, check_exact=True, obj=f"niah budget {b}")
        prov_got, prov_want = (json.loads((tmp_path / d / f"{b}.provenance.json").read_text())
                               for d in ("batch", "single"))
        for key in ("plan", "scores", "application", "structural_blocked_by", "state", "budget", "method"):
            assert prov_got[key] == prov_want[key], (b, key)
        assert prov_got["batch_budgets"] == budgets and prov_want["batch_budgets"] == [b]
    # the budgets really differ, so a leak (or one budget's rows reused for another) would show
    ppl = [df.loc[(df["task"] == "ppl/gutenberg_valid") & (df["metric"] == "nll"), "value"].item() for df in batch]
    assert len(set(ppl)) == 3
    assert _files(tmp_path / "batch") == _files(tmp_path / "single")


def test_stage_batch_none_baseline_and_masked_setting(ckpt, tmp_path):
    # a batch of one is the single-budget run; application 'masked' for every budget of a batch
    settings = {**SETTINGS, "application": "masked", "niah": None}
    base = run(ckpt, [tmp_path / "none" / "0.csv"], "none", [0], settings)[0]
    assert set(base["application"]) == {"none"} and (base["heads_removed"] == 0).all()
    batch = run(ckpt, [tmp_path / "b" / "0.5.csv", tmp_path / "b" / "0.25.csv"], "random", [0.5, 0.25], settings,
                heads_csv=False)
    single = run(ckpt, tmp_path / "s" / "0.25.csv", "random", 0.25, settings, heads_csv=False)
    assert set(batch[0]["application"]) == {"masked"} and batch[0]["heads_removed"].iloc[0] == 2
    pd.testing.assert_frame_equal(batch[1], single, check_exact=True)
    assert not batch[0]["value"].equals(batch[1]["value"])
    assert not (tmp_path / "b" / "0.5.niah.csv").exists()


@pytest.mark.parametrize("method, budgets, outs, settings, msg", [
    ("random", [0.25, 0.5], ["a.csv"], SETTINGS, r"--budget has 2 value\(s\) but --out has 1"),
    ("random", [0.25], ["a.csv", "b.csv"], SETTINGS, r"--budget has 1 value\(s\) but --out has 2"),
    ("random", [0.25, 1.0], ["a.csv", "b.csv"], SETTINGS, "budget"),
    ("none", [0, 0.5], ["a.csv", "b.csv"], SETTINGS, "needs --budget 0"),
    ("random", [0.25, 0.5], ["a.csv", "a.csv"], SETTINGS, "duplicate"),
    # valid budgets, but the second cannot be applied structurally (1 of 4 heads): planned up front
    ("norm_only", [0.5, 0.25], ["a.csv", "b.csv"], {**SETTINGS, "application": "structural"},
     "structural head removal impossible"),
])
def test_stage_batch_errors_before_writing(ckpt, tmp_path, method, budgets, outs, settings, msg):
    d = tmp_path / "out"
    d.mkdir()
    with pytest.raises(ValueError, match=msg):
        run(ckpt, [d / o for o in outs], method, budgets, settings)
    assert _files(d) == []


def test_stage_batch_argparse_pairs_in_order():
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    a = p.parse_args(["--model", "m", "--method", "random", "--budget", "0.25", "0.5", "--out", "x.csv", "y.csv"])
    assert a.budget == [0.25, 0.5] and a.out == ["x.csv", "y.csv"]
    jobs = stage.check_budgets_outs(a.method, a.budget, a.out)
    assert [(b, o.name) for b, o in jobs] == [(0.25, "x.csv"), (0.5, "y.csv")]
    with pytest.raises(ValueError, match="writes"):   # a.csv and a.tsv share the sidecars a.provenance.json
        stage.check_budgets_outs("random", [0.25, 0.5], ["d/a.csv", "d/a.tsv"])


@pytest.mark.parametrize("bad, msg", [
    ({"alpha": 2}, r"^heads.alpha: expected a number in \[0, 1\], got 2$"),
    ({"scope": "net"}, "^heads.scope: expected one of 'global', 'layer', got 'net'$"),
    ({"application": "x"}, "^heads.application"), ({"colour": 1}, "^heads.colour: unknown key; allowed: alpha, "),
    ({"eval": {"ppl": ["nope"]}}, "^heads.eval.ppl: expected one of"),
    ({"niah": {"depths": [2]}}, r"^heads.niah.depths.0: expected a number in \[0, 1\], got 2$"),
    ({"eval": {"seq_len": 1}}, "^heads.eval.seq_len"), ({"niah": {"size": 1}}, "^heads.niah.size: unknown key"),
    ({"arms": {"group_low": 0.8, "group_high": 0.5}}, "^heads.arms.group_low: 0.8 must be <= group_high"),
    ({"lm_eval": {"limt": 3}}, "^heads.lm_eval.limt: unknown key; allowed: batch_size, limit, max_length, tasks$"),
    ({"lm_eval": {"tasks": ["lapr_nope"]}}, r"^heads.lm_eval.tasks: unknown local task\(s\) \['lapr_nope'\]")])
def test_settings_validation(bad, msg):
    with pytest.raises(ValueError, match=msg):
        stage.resolve_settings(bad)


def test_settings_defaults_and_nulls():
    s = stage.resolve_settings('{"niah": null, "eval": {"ppl": "wikitext2"}}')
    assert s["niah"] is None and s["eval"]["ppl"] == ["wikitext2_test_raw"] and s["alpha"] == 0.5


def test_b3_alpha_sweep_lm_eval_and_arms(ckpt, tmp_path):
    """At b3_budget joint_rank_norm writes one block of rows per alpha, lm-eval rows at settings.alpha
    only; the unpruned job writes the disjoint arms (or says they cannot be formed)."""
    s = {**SETTINGS, "alphas": [0.0, 1.0], "alpha": 0.5,
         "lm_eval": {"tasks": ["lapr_piqa"], "limit": 4, "batch_size": 4, "max_length": 64}}
    df = run(ckpt, tmp_path / "j/0.389.csv", "joint_rank_norm", 0.389, s)
    assert sorted(df["alpha"].unique()) == [0.0, 0.5, 1.0]
    assert set(df["norm"]) == {"frobenius"} and set(df["status"]) == {"ok"}
    lm = df[df["task"] == "lapr_piqa"]
    assert len(lm) and set(lm["alpha"]) == {0.5} and lm["value"].between(0, 1).all()
    assert (df["heads_removed"] == 2).all()                              # round(0.389 * 4) = 2
    other = run(ckpt, tmp_path / "j/0.5.csv", "joint_rank_norm", 0.5, s)
    assert set(other["alpha"]) == {0.5} and "lapr_piqa" not in set(other["task"])
    # arms: group thresholds that split this table in two, then thresholds no head can meet
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    for arms, formed in (({"group_low": 0.99, "group_high": 0.99, "draws": 2, "niah_n": 3}, None),
                         ({"group_low": 0.01, "group_high": 0.01, "draws": 2, "niah_n": 3}, False)):
        out = tmp_path / f"arms{formed}"
        stage.run(p.parse_args(["--model", str(ckpt), "--heads-csv", str(ckpt.parent / "heads.csv"),
                                "--method", "none", "--budget", "0", "--out", str(out / "none.csv"),
                                "--arms-out", str(out / "arms.csv"),
                                "--settings", json.dumps({**SETTINGS, "arms": arms})]))
        none, got = pd.read_csv(out / "none.csv"), pd.read_csv(out / "arms.csv")
        assert none[(none["task"] == "niah") & none["context_len"].notna()]["n"].eq(3).all()
        if formed is False:
            assert set(got["status"]) == {"unformable: no low-rank head (rank/bound < 0.01)"}
            assert set(got["method"]) == {"arm_low", "arm_high", "arm_random"}
        else:
            r = methods.normalised_rank(methods.load_heads(ckpt.parent / "heads.csv"))
            if ((r < 0.99).sum() == 0) or ((r >= 0.99).sum() == 0):
                assert got["status"].str.startswith("unformable").all()
            else:
                assert set(got["status"]) == {"ok"} and set(got["draw"].dropna()) == {0.0, 1.0}
                assert got.groupby("method")["heads_removed"].nunique().eq(1).all()
