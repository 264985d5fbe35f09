"""The `bench` stage on CPU: ops and model modes, file naming, provenance, validation."""
import argparse
import json

import pytest

from lapr.bench import models, ops, stage
from lapr.bench.tables import read_rows

OPS = {"mode": "ops", "families": "delta_net", "B": 1, "T": 16, "H": 1, "d_v": 8, "d_k": [16, 8],
       "repeats": 3, "warmup": 1, "threads": 1}
MODEL = {"mode": "model", "prefill_batch": [2], "prefill_len": [16], "decode_batch": [2], "prompt_len": 4,
         "repeats": 3, "warmup": 1, "threads": 1}
SPEC = dict(family="gated_deltanet", hidden_size=32, num_layers=1, num_heads=2, head_k_dim=8, head_v_dim=16,
            vocab_size=64)


def _args(settings, out, model=None):
    return argparse.Namespace(settings=json.dumps(settings), out=str(out), model=model and str(model), seed=0)


def test_ops_mode_writes_csv_and_provenance(tmp_path):
    stage.run(_args(OPS, tmp_path / "bench" / "ops_{device}.csv"))
    out = tmp_path / "bench" / "ops_cpu.csv"
    df = read_rows(out)
    assert list(df.columns[: len(ops.COLUMNS)]) == ops.COLUMNS
    assert len(df) == 4 and set(df["device"]) == {"cpu"} and set(df["error"]) == {""}
    meta = json.loads((tmp_path / "bench" / "ops_cpu.provenance.json").read_text())
    assert meta["settings"]["d_k"] == [16, 8] and meta["result"] == "ops_cpu.csv"
    assert meta["hardware"]["device"] == "cpu" and meta["bench"]["device_label"] == "cpu"
    assert meta["bench"]["torch_threads"] == 1
    assert {"torch", "triton", "fla-core"} <= set(meta["versions"]) and meta["git_commit"]
    assert meta["rows"] == 4 and meta["errors"] == 0
    resolved = meta["resolved"]                                    # defaults filled in
    assert resolved["d_k"] == [16, 8] and resolved["families"] == ["delta_net"] and resolved["impls"] == ["torch"]
    assert resolved["timing"]["repeats"] == 3 and resolved["dtype"] == "float32"


@pytest.mark.parametrize("settings,out,model,exc", [
    (OPS, "ops.csv", None, ValueError),                          # file name does not name the device
    ({**OPS, "dk": [3]}, "ops_cpu.csv", None, ValueError),        # unknown key
    ({"mode": "train"}, "ops_cpu.csv", None, ValueError),
    ({**OPS, "impls": ["fla"]}, "ops_cpu.csv", None, ValueError),  # Triton kernels need CUDA
    (OPS, "ops_cpu.csv", "somewhere", ValueError),                # --model in ops mode
    (MODEL, "m_cpu.csv", None, ValueError),                       # model mode without --model
    (MODEL, "m_cpu.csv", "missing", FileNotFoundError),
    ({**OPS, "dtype": "int8"}, "ops_cpu.csv", None, ValueError),
])
def test_stage_validates(tmp_path, settings, out, model, exc):
    with pytest.raises(exc):
        stage.run(_args(settings, tmp_path / out, model and tmp_path / model))
    assert not list(tmp_path.glob("*.csv"))


def test_model_mode_rows_and_state_memory(tmp_path):
    from lapr.models import build_model

    ckpt = tmp_path / "pruned" / "gdn" / "wanda" / "0.5"
    build_model(SPEC, seed=0).save_pretrained(ckpt)
    stage.run(_args(MODEL, tmp_path / "0.5_{device}.csv", ckpt))
    df = read_rows(tmp_path / "0.5_cpu.csv")
    assert list(df["phase"]) == ["prefill", "decode"] and set(df["error"]) == {""}
    assert set(df["level"]) == {"model"} and set(df["impl"]) == {"torch"}
    assert (df["model"].iloc[0], df["method"].iloc[0], df["ratio"].iloc[0]) == ("gdn", "wanda", 0.5)
    per_seq = 1 * 2 * 8 * 16 * 4                                  # layers x heads x d_k x d_v x fp32
    assert set(df["state_bytes_per_seq"]) == {per_seq} and set(df["state_bytes"]) == {2 * per_seq}
    decode = df[df["phase"] == "decode"].iloc[0]
    assert decode["cache_bytes_per_seq"] >= per_seq               # + short-conv states
    assert decode["tokens_per_s"] == pytest.approx(2 / (decode["ms_median"] / 1e3))
    prefill = df[df["phase"] == "prefill"].iloc[0]
    assert prefill["tokens_per_s"] == pytest.approx(2 * 16 / (prefill["ms_median"] / 1e3))
    assert (df["peak_mem_bytes"] > 0).all() and (df["d_k"] == 8).all()
    meta = json.loads((tmp_path / "0.5_cpu.provenance.json").read_text())
    assert meta["model_dir"] == str(ckpt) and meta["settings"]["mode"] == "model"


def test_checkpoint_labels(tmp_path):
    ckpt = tmp_path / "results" / "tiny" / "pruned" / "gdn-small" / "taylor" / "0.25"
    ckpt.mkdir(parents=True)
    assert models.checkpoint_labels(ckpt) == {"model": "gdn-small", "method": "taylor", "ratio": 0.25}
    (ckpt / "pruning.json").write_text(json.dumps({"method": "taylor-v2", "n_tokens": 5}))
    assert models.checkpoint_labels(ckpt)["method"] == "taylor-v2"
    # the prune stage records the directory it pruned: the label is that model's id, not its path
    (ckpt / "pruning.json").write_text(json.dumps({"model": "results/tiny/models/gdn-small", "method": "taylor"}))
    assert models.checkpoint_labels(ckpt)["model"] == "gdn-small"
    base = tmp_path / "results" / "tiny" / "models" / "gdn-small"
    assert models.checkpoint_labels(base) == {"model": "gdn-small", "method": "none", "ratio": 0.0}


def test_cache_bytes_counts_state_and_conv():
    import torch
    from lapr.models import build_model

    model = build_model({**SPEC, "family": "delta_net"}, seed=0).eval()
    with torch.inference_mode():
        cache = model(input_ids=torch.zeros(3, 5, dtype=torch.long), use_cache=True).past_key_values
    info = models.describe(model)
    assert info["d_k"] == 8 and info["d_v"] == 16 and info["num_layers"] == 1
    state = 3 * info["state_bytes_per_seq"]
    conv = 3 * (2 * 2 * 8 + 2 * 16) * 4 * 4                       # B x (q, k, v channels) x kernel 4 x fp32
    assert models.cache_bytes(cache) == state + conv
