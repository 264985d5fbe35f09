"""mqar-train / mqar-eval stages on a toy task: checkpoint + metrics, tidy CSV over every method."""
import argparse
import json

import pandas as pd
import pytest

from lapr.heads import methods as head_methods
from lapr.probes import mqar_eval, mqar_stage, mqar_train

TRAIN = {"model": {"family": "delta_net", "hidden_size": 32, "head_k_dim": 16, "head_v_dim": 16},
         "task": {"vocab_size": 16, "seq_len": 16, "num_kv_pairs": 2},
         "train": {"steps": 20, "batch_size": 16, "lr": 1e-2, "warmup": 2, "eval_every": 10, "eval_n": 32}}
EVAL = {"eval_n": 48, "noise": [0.0, 0.5], "channel": {"ratios": [0.5]},
        "heads": {"budgets": [0.5], "profile_n": 16}, "calib": {"n_batches": 2, "batch_size": 8, "rows": 64}}


def call(module, argv):
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    module.run(p.parse_args(argv))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("mqar") / "models" / "mqar_gdn"
    call(mqar_train, ["--out", str(out), "--family", "gated_deltanet", "--settings", json.dumps(TRAIN)])
    return out


def test_train_outputs(trained):
    m = json.loads((trained / "metrics.json").read_text())
    assert m["family"] == "gated_deltanet" and m["steps"] == 20 and m["train_time_s"] > 0
    assert 0 <= m["recall"] <= 1 and m["chance"] == 1 / 8 and m["task"]["num_kv_pairs"] == 2
    assert (trained / "config.json").is_file() and (trained / "curve.csv").is_file()
    assert (trained / "provenance.json").is_file()


def test_eval_every_method(trained, tmp_path):
    out = tmp_path / "mqar" / "eval" / "mqar_gdn.csv"
    call(mqar_eval, ["--model", str(trained), "--out", str(out), "--settings", json.dumps(EVAL)])
    df = pd.read_csv(out)
    assert list(df.columns) == mqar_stage.COLUMNS
    from lapr.pruning.channels import ALL_METHODS
    rec = df[df["metric"] == "recall"]
    assert set(rec[rec["kind"] == "channel"]["method"]) == set(ALL_METHODS)
    assert set(rec[rec["kind"] == "head"]["method"]) == set(head_methods.METHODS)
    assert set(rec["noise"]) == {0.0, 0.5} and rec["value"].between(0, 1).all()
    ch = rec[rec["kind"] == "channel"]
    assert (ch["d_k"] == 8).all() and (ch["state_saved_frac"] == 0.5).all()
    hd = rec[rec["kind"] == "head"]
    assert (hd["heads_removed"] == 2).all() and (hd["state_saved_frac"] == 0.5).all()
    assert set(hd["application"]) <= {"structural", "masked"}
    base = rec[rec["kind"] == "none"]
    assert len(base) == 2 and (base["state_bytes"] == base["state_bytes_full"]).all()
    assert (tmp_path / "mqar" / "eval" / "mqar_gdn.provenance.json").is_file()
    # the MQAR figures read results/<profile>/mqar/eval/*.csv
    from lapr.heads import plots
    names = {p.name for p in plots.make_figures(tmp_path, tmp_path / "fig")}
    assert {"heads_mqar.png", "mqar_dk.pdf", "mqar_noise.png", "heads_state.png"} <= names


def test_settings_errors(tmp_path):
    with pytest.raises(ValueError, match="^mqar.train.task: mqar.num_kv_pairs=8 exceeds"):
        mqar_stage.resolve_train_settings({"task": {"vocab_size": 8, "num_kv_pairs": 8}})
    with pytest.raises(ValueError, match="^mqar.train.modle: unknown key; allowed: device, model, seed, task, train$"):
        mqar_stage.resolve_train_settings({"modle": {}})
    with pytest.raises(ValueError, match="^mqar.train.model.family: expected one of 'delta_net', "):
        mqar_stage.resolve_train_settings({"model": {"family": "mamba"}})
    with pytest.raises(ValueError, match="^mqar.eval.noise.0: expected a number >= 0, got -1$"):
        mqar_stage.resolve_eval_settings({"noise": [-1]})
    with pytest.raises(ValueError, match="^mqar.eval.channel.methods: expected one of 'all', 'none' or a list of "
                                         "values among 'l1', .* got \\['magic'\\]$"):
        mqar_stage.resolve_eval_settings({"channel": {"methods": ["magic"]}})
    with pytest.raises(ValueError, match=r"^mqar.eval.heads.budgets.0: expected a number in \(0, 1\), got 1.2$"):
        mqar_stage.resolve_eval_settings({"heads": {"budgets": [1.2]}})
    with pytest.raises(FileNotFoundError, match="config.json"):
        mqar_stage.load_mqar(tmp_path)


def test_train_outputs_record_decay_and_attempts(trained):
    m = json.loads((trained / "metrics.json").read_text())
    assert m["decay_redrawn"] is True and [a["seed"] for a in m["attempts"]] == [0]


def test_plateau_restarts_from_a_fresh_seed(tmp_path):
    """A run below restart_below at restart_at restarts from seed + 1000; the last attempt runs to the end."""
    settings = {**TRAIN, "train": {**TRAIN["train"], "steps": 6, "eval_every": 3, "restart_at": 2,
                                   "restart_below": 1.0, "attempts": 3, "target_recall": None}}
    out = tmp_path / "m"
    call(mqar_train, ["--out", str(out), "--seed", "5", "--settings", json.dumps(settings)])
    m = json.loads((out / "metrics.json").read_text())
    assert [a["seed"] for a in m["attempts"]] == [5, 1005, 2005]
    assert [a["stopped"] for a in m["attempts"]] == ["plateau", "plateau", "steps"]
    assert [a["steps"] for a in m["attempts"]] == [2, 2, 6]
    assert m["seed"] == 2005 and m["steps"] == 6 and m["stopped"] == "steps"
    assert m["decay_redrawn"] is False  # DeltaNet has no decay gate
    # a run at or above the bar is not restarted
    settings["train"]["restart_below"] = 0.0
    call(mqar_train, ["--out", str(tmp_path / "n"), "--seed", "5", "--settings", json.dumps(settings)])
    assert [a["seed"] for a in json.loads((tmp_path / "n" / "metrics.json").read_text())["attempts"]] == [5]


def test_decay_init_draws_gdn_rates_in_range():
    import torch

    from lapr.models import build_model, family

    spec = {"family": "gated_deltanet", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "head_k_dim": 16,
            "head_v_dim": 16, "vocab_size": 16}
    model = build_model(spec, seed=0)
    assert family(model).init_decay(model, 0.5, 2.0, torch.Generator().manual_seed(0))
    rates = torch.cat([m.A_log.detach().exp() for m in model.modules() if hasattr(m, "A_log")])
    assert rates.numel() == 4 and bool(((rates >= 0.5) & (rates <= 2.0)).all())
    dn = build_model({**spec, "family": "delta_net"}, seed=0)
    assert family(dn).init_decay(dn, 0.5, 2.0, torch.Generator()) is False
    with pytest.raises(Exception, match="decay_init"):
        mqar_stage.resolve_train_settings({"model": {"decay_init": [0.5]}})
