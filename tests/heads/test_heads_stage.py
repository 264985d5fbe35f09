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
    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    argv = ["--model", str(ckpt), "--method", method, "--budget", str(budget), "--out", str(out),
            "--settings", json.dumps(settings)]
    if heads_csv:
        argv += ["--heads-csv", str(ckpt.parent / "heads.csv")]
    stage.run(p.parse_args(argv))
    return pd.read_csv(out)


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


@pytest.mark.parametrize("bad, msg", [({"alpha": 2}, "alpha"), ({"scope": "net"}, "scope"),
                                      ({"application": "x"}, "application"), ({"colour": 1}, "unknown key"),
                                      ({"eval": {"ppl": ["nope"]}}, "eval.ppl"), ({"niah": {"depths": [2]}}, "depths"),
                                      ({"eval": {"seq_len": 1}}, "seq_len"), ({"niah": {"size": 1}}, "niah")])
def test_settings_validation(bad, msg):
    with pytest.raises(ValueError, match=msg):
        stage.resolve_settings(bad)


def test_settings_defaults_and_nulls():
    s = stage.resolve_settings('{"niah": null, "eval": {"ppl": "wikitext2"}}')
    assert s["niah"] is None and s["eval"]["ppl"] == ["wikitext2_test_raw"] and s["alpha"] == 0.5
