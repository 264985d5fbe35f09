"""The profile stage end to end on a tiny saved checkpoint, and its input validation."""
import argparse
import json

import pandas as pd
import pytest
import torch
from profiling_helpers import tiny_model

from lapr.profiling import stage, stratify
from lapr.profiling.metrics import RANK_COLUMNS

SETTINGS = {"T": 48, "n_positions": 32, "batch": 2, "spectrum_positions": 3, "seed": 1,
            "calib": {"n_batches": 2, "seq_len": 16, "batch_size": 2, "rows": 20, "source": "gutenberg_valid"}}


def parse(argv):
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "gdn"
    tiny_model("gated_deltanet", vocab=8192).save_pretrained(path)  # gutenberg-bpe-8k ids fit
    return path


@pytest.fixture(scope="module")
def profile_dir(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "gdn"
    stage.run(parse(["--model", str(checkpoint), "--out", str(out), "--settings", json.dumps(SETTINGS)]))
    return out


def test_outputs(profile_dir):
    files = {p.name for p in profile_dir.iterdir()}
    assert files == {"ranks.parquet", "spectrum.parquet", "heads.csv", "consistency.csv", "calib.pt",
                     "timing.json", "provenance.json", "consistency_time.csv", "stratification.csv"}
    ranks = pd.read_parquet(profile_dir / "ranks.parquet")
    eps_cols = ["threshold_rank_1e-3", "threshold_rank_1e-2"]  # settings.eps_sensitivity's default
    assert list(ranks.columns) == stage.RANK_ORDER + eps_cols
    assert set(ranks.columns) == set(RANK_COLUMNS) | {"context", "sample"} | set(eps_cols)
    # a larger eps can only drop singular values: rank(1e-2) <= rank(1e-3) <= rank(1e-4)
    assert (ranks["threshold_rank_1e-2"] <= ranks["threshold_rank_1e-3"]).all()
    assert (ranks["threshold_rank_1e-3"] <= ranks["threshold_rank"]).all()
    early = stage.early_position(48)  # T = 48 < 256: 48 / 16 = 3, always profiled
    assert early == 3 and early in set(ranks["position"])
    contexts = ["gutenberg", "wikitext", "attack", "needle"]
    assert list(pd.unique(ranks["context"])) == contexts
    n_pos = ranks["position"].nunique()
    assert n_pos >= 32 and ranks["position"].max() == 48
    assert len(ranks) == len(contexts) * 2 * n_pos * 2 * 2  # contexts x samples x positions x layers x heads
    assert (ranks["threshold_rank"] <= ranks["bound"]).all()
    assert (ranks.loc[ranks["position"] == 1, "threshold_rank"] <= 1).all()

    spec = pd.read_parquet(profile_dir / "spectrum.parquet")
    assert spec["position"].nunique() == 3 and {"context", "sample", "sigma", "sigma_rel"} <= set(spec.columns)

    heads = pd.read_csv(profile_dir / "heads.csv")
    assert list(heads.columns[:6]) == ["layer", "head", "final_rank", "bound", "state_norm", "class"]
    assert len(heads) == 4 and set(heads["class"]) <= {"low", "high"}
    natural = ranks[(ranks["position"] == 48) & ranks["context"].isin(["gutenberg", "wikitext"])]
    want = natural.groupby(["layer", "head"])["threshold_rank"].mean().to_numpy()
    assert heads["final_rank"].to_numpy() == pytest.approx(want)
    assert ((heads["final_rank"] >= 0.5 * heads["bound"]) == (heads["class"] == "high")).all()
    assert (heads["final_rank_1e-4"] == heads["final_rank"]).all()
    want = natural.groupby(["layer", "head"])["threshold_rank_1e-2"].mean().to_numpy()
    assert heads["final_rank_1e-2"].to_numpy() == pytest.approx(want)
    # GDN's decay gate, read in the same forward: r_bar = exp(mean log alpha_t) in (0, 1)
    assert heads["mean_decay"].between(0, 1, inclusive="neither").all()

    ct = pd.read_csv(profile_dir / "consistency_time.csv")
    assert list(ct.columns) == stratify.TIME_COLUMNS
    assert len(ct) == 2 * (len(contexts) + 1) and set(ct["t_early"]) == {3} and set(ct["t_late"]) == {48}
    mean = ct[ct["context"] == "mean"].set_index("layer")
    nat = ct[ct["natural"]].groupby("layer")["cosine_rank"].mean()
    assert mean["cosine_rank"].to_numpy() == pytest.approx(nat.to_numpy())
    strat = pd.read_csv(profile_dir / "stratification.csv")
    assert list(strat["rank_column"]) == ["final_rank_1e-4", "final_rank_1e-3", "final_rank_1e-2"]
    assert list(strat["primary"]) == [True, False, False] and (strat["n_heads"] == 4).all()
    assert (strat["decay_n_heads"] == 4).all()

    cons = pd.read_csv(profile_dir / "consistency.csv")
    assert len(cons) == 6 and {"context_a", "context_b", "spearman", "keep_fraction"} <= set(cons.columns)

    calib = torch.load(profile_dir / "calib.pt")
    assert calib["meta"]["family"] == "gated_deltanet" and calib["meta"]["rows"] == 20
    assert calib["meta"]["seed"] == 1 and calib["meta"]["n_tokens"] == 64 and len(calib["layers"]) == 2
    assert calib["layers"][0]["q_act"].shape == (2, 20, 16)

    timing = json.loads((profile_dir / "timing.json").read_text())
    assert timing["forward_s"] > 0 and timing["capture_s"] > 0 and timing["device"] == "cpu"
    assert set(timing["contexts"]) == set(contexts)
    prov = json.loads((profile_dir / "provenance.json").read_text())
    assert prov["settings"]["T"] == 48 and prov["seed"] == 1 and len(prov["positions"]) == n_pos


def test_deterministic_rerun(checkpoint, profile_dir, tmp_path):
    out = tmp_path / "again"
    stage.run(parse(["--model", str(checkpoint), "--out", str(out), "--settings",
                     json.dumps({**SETTINGS, "contexts": ["needle"], "calib": SETTINGS["calib"]})]))
    a = pd.read_parquet(profile_dir / "ranks.parquet").query("context == 'needle'").reset_index(drop=True)
    b = pd.read_parquet(out / "ranks.parquet")
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)


@pytest.mark.parametrize("settings,match", [
    ("{not json", "not valid JSON"), ("[1]", "JSON object"),
    ('{"Tee": 5}', "^profiling.Tee: unknown key; allowed: T, batch, calib, capture, "),
    ('{"T": 0}', r"^profiling.T: expected an integer >= 2 or null, got 0$"),
    ('{"T": 16, "n_positions": 32}', "^profiling.n_positions: 32 exceeds T=16"),
    ('{"eps": 2}', r"^profiling.eps: expected a number in \(0, 1\), got 2$"),
    ('{"contexts": ["gutenberg", "poetry"]}', "^profiling.contexts.1: expected one of 'gutenberg', 'wikitext', "),
    ('{"contexts": "needle"}', "^profiling.contexts: expected a non-empty list of values among"),
    ('{"calib": {"rows": 0}}', "^profiling.calib.rows: expected an integer >= 1, got 0$"),
    ('{"calib": {"row": 5}}', "^profiling.calib.row: unknown key"),
    ('{"batch": 1.5}', "^profiling.batch: expected an integer >= 1, got 1.5$"),
    ('{"class_rule": "median"}', "^profiling.class_rule: expected one of 'fraction', 'gap', got 'median'$"),
    ('{"svd": "cusolver"}', "^profiling.svd"), ('{"eps_sensitivity": [0.001, 2]}', "^profiling.eps_sensitivity.1"),
    ('{"eps_sensitivity": 0.01}', "^profiling.eps_sensitivity: expected a list of numbers in"),
    ('{"eps_sensitivity": [0.01, 0.01]}', "^profiling.eps_sensitivity: .* non-unique|duplicates"),
])
def test_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        stage.parse_settings(settings, torch.device("cpu"))


def test_defaults_and_overrides():
    s = stage.parse_settings("{}", torch.device("cpu"), seed=7)
    assert s["T"] == 512 and s["n_positions"] == 32 and s["eps"] == 1e-4 and s["seed"] == 7
    assert s["contexts"] == ["gutenberg", "wikitext", "attack", "needle"] and s["calib"]["rows"] == 2048
    assert stage.parse_settings("{}", torch.device("cuda"))["T"] == 2048
    assert stage.parse_settings('{"calib": {"rows": 5}}', torch.device("cpu"))["calib"]["seq_len"] == 512
    with pytest.warns(UserWarning, match="n_positions"):
        stage.parse_settings('{"n_positions": 8}', torch.device("cpu"))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        stage.run(parse(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()


def test_tokenizer_mismatch(tmp_path):
    path = tmp_path / "small_vocab"
    tiny_model("delta_net", vocab=256).save_pretrained(path)
    with pytest.raises(ValueError, match="vocab"):
        stage.run(parse(["--model", str(path), "--out", str(tmp_path / "o"), "--settings",
                         json.dumps({**SETTINGS, "contexts": ["wikitext"]})]))
    assert not (tmp_path / "o").exists()
