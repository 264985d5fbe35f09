"""CUDA-graph decode (lapr.bench.graph_decode): the static-buffer decode path equals plain eager
decode exactly on CPU (capture=False, float32), captured replays equal eager decode on a GPU
(bf16, marked gpu), and the graph / eager decode rows of the op- and model-level benches."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lapr.bench import graph_decode as gd
from lapr.bench import models, ops, plots, stage

SPEC = dict(hidden_size=32, num_layers=2, num_heads=2, head_k_dim=8, head_v_dim=16, vocab_size=64)
FAMILY_SPECS = {"delta_net": {"family": "delta_net", "use_gate": True}, "gated_deltanet": {"family": "gated_deltanet"}}
CUDA = torch.cuda.is_available()


def tiny(family, device="cpu", dtype=torch.float32, spec=SPEC):
    from lapr.models import build_model

    model = build_model({**spec, **FAMILY_SPECS[family]}, seed=0).to(device=device, dtype=dtype).eval()
    with torch.no_grad():   # larger q/k/v so the state and the attention output matter in a random model
        for name, p in model.named_parameters():
            if any(k in name for k in ("q_proj", "k_proj", "v_proj")):
                p.mul_(4)
    return model


def prompt_cache(model, B=3, T=5, seed=0):
    ids = gd.random_ids(model.config.vocab_size, B, T, next(model.parameters()).device, seed)
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=True).past_key_values


# ---------------------------------------------------------------------------------------------
# CPU: the static-buffer path (capture=False) is eager decode, exactly

@pytest.mark.parametrize("family", list(FAMILY_SPECS))
def test_static_buffer_decode_equals_eager_decode(family):
    model = tiny(family)
    cache = prompt_cache(model)
    before = [s["recurrent_state"].clone() for s in gd.cache_states(cache)]
    ref_cache = gd.clone_cache(cache)
    dec = gd.GraphDecoder(model, cache, capture=False)
    assert dec.graph is None and len(dec.slots) == 2 * 4           # layers x (recurrent + q/k/v conv)
    logits = []
    with torch.inference_mode():
        for t in range(4):
            ids = gd.random_ids(64, 3, 1, "cpu", 10 + t)
            ref = model(input_ids=ids, past_key_values=ref_cache, use_cache=True, logits_to_keep=1).logits
            got = dec.step(ids)
            assert got.shape == (3, 1, 64)
            assert torch.equal(got, ref)                            # float32, same ops: bit for bit
            logits.append(got.clone())
    assert not torch.equal(logits[0], logits[-1])
    # the cache afterwards holds the decoder's buffers, equal to eager decode's states
    for i, (mine, ref) in enumerate(zip(gd.cache_states(cache), gd.cache_states(ref_cache))):
        assert mine["recurrent_state"] is dec.buffers[dec.slots.index((i, "recurrent_state", None))]
        assert torch.equal(mine["recurrent_state"], ref["recurrent_state"])
        assert not torch.equal(mine["recurrent_state"], before[i])  # the state moved on
        assert all(torch.equal(a, b) for a, b in zip(mine["conv_state"], ref["conv_state"]))
    assert cache.get_seq_length() == ref_cache.get_seq_length() == 5 + 4


def test_compare_decode_reports_equality_and_catches_a_missing_copy_back(monkeypatch):
    model = tiny("gated_deltanet")
    check, dec = gd.compare_decode(model, prompt_cache(model), steps=3, capture=False)
    assert check["equal"] and check["logits_max_abs_diff"] == 0 and check["state_max_abs_diff"] == 0
    assert check["logits_max_abs"] > 0 and dec.cache.get_seq_length() == 8
    # without the copy-back of the new recurrent state the decoder would decode from a stale state
    def no_copy_back(self):
        logits = self.model(input_ids=self.ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1).logits
        self._point_cache()
        return logits

    monkeypatch.setattr(gd.GraphDecoder, "_step", no_copy_back)
    broken, _ = gd.compare_decode(model, prompt_cache(model), steps=3, capture=False)
    assert not broken["equal"] and broken["logits_max_abs_diff"] > 0


def test_decoder_refuses_attention_caches():
    model = tiny("delta_net")
    cache = prompt_cache(model)
    cache[0]["attn_state"] = (torch.zeros(3, 5, 2, 8),)
    with pytest.raises(ValueError, match="attn_state"):
        gd.GraphDecoder(model, cache, capture=False)


@pytest.mark.parametrize("family", ops.FAMILIES)
def test_op_step_static_path_equals_eager_chain(family):
    shape = ops.Shape(family, "decode", 2, 1, 3, 8, 4)
    inputs = ops.make_inputs(shape, seed=0)
    fn = ops.kernel(family, "decode", "torch")
    step = gd.capture_decode_step(family, inputs, impl="torch", capture=False)
    assert step.graph is None and step.state is not inputs["initial_state"]
    state = inputs["initial_state"].clone()
    for t in range(3):
        new = {k: v for k, v in ops.make_inputs(shape, seed=t + 1).items()
               if k not in ("initial_state", "A_log", "dt_bias")}   # parameters stay fixed
        ref_o, state = fn(**{**inputs, **new, "initial_state": state})
        o = step(**new)
        assert torch.equal(o, ref_o) and torch.equal(step.state, state)
    assert not torch.equal(state, inputs["initial_state"])        # the inputs were not touched


# ---------------------------------------------------------------------------------------------
# CPU: rows, settings, driver

def test_decode_rows_carry_mode_and_bandwidth():
    shapes = ops.expand_grid({"families": "delta_net", "B": 2, "T": 8, "H": 2, "d_v": 8, "d_k": [16, 8]}, "cpu")
    rows = ops.run_grid(shapes, ["torch"], repeats=3, warmup=1, log=lambda *_: None, d_k_unpruned=16)
    assert len(rows) == len(shapes) == 4                           # one mode on CPU: eager
    for row in rows:
        assert set(ops.COLUMNS) <= set(row) and row["error"] == "" and row["d_k_unpruned"] == 16
        assert row["decode_mode"] == "eager"
        if row["phase"] == "decode":
            assert row["state_bytes_read"] == row["state_bytes"] == 2 * 2 * row["d_k"] * 8 * 4
            assert row["achieved_gbps"] == pytest.approx(2 * row["state_bytes"] / (row["ms_median"] / 1e3) / 1e9)
            assert row["peak_gbps"] is None and row["roofline_frac"] is None
        else:
            assert row["state_bytes_read"] is None
    # 'graph' on a CPU: the static-buffer path (capture=False) gives a row; the grid refuses it
    shape = ops.Shape("gated_deltanet", "decode", 2, 1, 2, 8, 8)
    row = ops.bench_shape(shape, "torch", decode_mode="graph", capture=False, repeats=3, warmup=1)
    assert row["decode_mode"] == "graph" and row["error"] == "" and row["ms_median"] > 0
    assert row["state_bytes_read"] == shape.state_bytes() and row["first_call_ms"] > 0
    with pytest.raises(ValueError, match="CUDA"):
        ops.run_grid(shapes, ["torch"], decode_modes=["graph"], log=lambda *_: None)
    assert ops.peak_gbps("NVIDIA H200") == 4800 and ops.peak_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert ops.bandwidth_columns(10**9, 1.0, "NVIDIA H200")["roofline_frac"] == pytest.approx(2000 / 4800)


def test_stage_decode_modes_setting():
    assert "decode_modes" in set(stage.Ops.keys()) & set(stage.ModelBench.keys())
    plan = stage.resolve(stage.parse_settings({"mode": "ops"}), torch.device("cpu"))
    assert plan["decode_modes"] == ["eager"]
    with pytest.raises(ValueError, match="CUDA"):
        stage.resolve(stage.parse_settings({"mode": "model", "decode_modes": ["graph", "eager"]}), torch.device("cpu"))
    with pytest.raises(ValueError):
        stage.resolve(stage.parse_settings({"mode": "ops", "decode_modes": ["lazy"]}), torch.device("cpu"))
    assert ops.default_decode_modes("cuda") == ["graph", "eager"]


def test_model_rows_graph_and_eager_on_cpu():
    model = tiny("delta_net")
    rows = models.bench_model(model, prefill_batch=[2], prefill_len=[8], decode_batch=[2], prompt_len=4,
                              decode_modes=["graph", "eager"], capture=False, verify_steps=2, repeats=3,
                              warmup=1, labels={"method": "none"}, log=lambda *_: None)
    assert [(r["phase"], r["decode_mode"]) for r in rows] == [("prefill", "eager"), ("decode", "graph"),
                                                                ("decode", "eager")]
    assert all(r["error"] == "" for r in rows)
    assert all(set(models.MODEL_COLUMNS) - {"prompt_len", "cache_bytes_per_seq"} <= set(r) for r in rows)
    assert all(set(models.MODEL_COLUMNS) <= set(r) for r in rows[1:])
    graph = rows[1]
    assert graph["verify_equal"] and graph["verify_logits_max_abs_diff"] == 0
    per_seq = models.describe(model)["state_bytes_per_seq"]
    assert graph["state_bytes_read"] == 2 * per_seq and graph["d_k_unpruned"] == 8
    assert graph["weight_bytes"] == sum(p.numel() * 4 for p in model.parameters())
    assert graph["achieved_gbps"] == pytest.approx(2 * 2 * per_seq / (graph["ms_median"] / 1e3) / 1e9)


def test_driver_dry_on_cpu(tmp_path):
    meta = gd.main(["--out", str(tmp_path), "--dry", "--device", "cpu", "--families", "gated_deltanet"])
    assert meta["complete"] and meta["errors"] == 0
    ops_rows = pd.read_csv(tmp_path / "ops_decode_cpu.csv")
    model_rows = pd.read_csv(tmp_path / "model_decode_cpu.csv")
    assert len(ops_rows) == 2 * 2 and set(ops_rows["decode_mode"]) == {"eager"}   # B x d_k
    assert len(model_rows) == 2 * 2 and set(model_rows["d_k_unpruned"]) == {32}    # d_k x B
    assert set(model_rows["ratio"]) == {0.0, 0.5} and set(model_rows["method"]) == {"random-init"}
    assert len(meta["verification"]) == 4 and all(v["verify_equal"] for v in meta["verification"])
    saved = json.loads((tmp_path / "provenance.json").read_text())
    assert saved["settings"]["dry"] and saved["git_commit"] and saved["complete"]


def test_driver_shapes_are_the_gpu_profile_and_its_pruned_d_k():
    config = yaml.safe_load((Path(__file__).parents[2] / "workflow" / "config" / "gpu.yaml").read_text())
    for name, family in (("deltanet", "delta_net"), ("gdn", "gated_deltanet")):
        spec = config["models"][name]
        assert spec["family"] == family and spec["head_k_dim"] == gd.UNPRUNED_D_K
        assert {k: spec[k] for k in ("hidden_size", "num_layers", "num_heads", "head_v_dim", "mlp_ratio")} == \
            {k: gd.GPU_SPEC[k] for k in ("hidden_size", "num_layers", "num_heads", "head_v_dim", "mlp_ratio")}
    assert gd.GPU_SPEC["vocab_size"] == 8192 and config["tokenizer"].endswith("8k")
    assert gd.pruned_d_ks() == [128, 96, 64, 32]
    assert gd.OPS_GRID["H"] == gd.GPU_SPEC["num_heads"] and gd.OPS_GRID["d_v"] == gd.GPU_SPEC["head_v_dim"]


def test_plots_keep_graph_and_eager_apart(tmp_path):
    rows = []
    for mode, scale in (("graph", 1.0), ("eager", 100.0)):
        for d_k in (128, 64):
            ms = scale * (d_k / 128 if mode == "graph" else 1.0)
            rows.append(dict(level="op", family="delta_net", impl="fla", device="cuda", device_name="X",
                             phase="decode", decode_mode=mode, B=8, T=1, H=6, d_k=d_k, d_v=128, ms_median=ms,
                             ms_q25=ms, ms_q75=ms, tokens_per_s=8 / ms * 1e3, error=""))
    rows.append({**rows[0], "phase": "prefill", "T": 64, "decode_mode": "eager"})
    path = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    sp = plots.speedup_table(plots.load_rows([path])).set_index(["phase", "decode_mode", "d_k"])
    assert sp.loc[("decode", "graph", 64), "speedup"] == pytest.approx(2.0)
    assert sp.loc[("decode", "eager", 64), "speedup"] == pytest.approx(1.0)
    assert plots.make_figures([path], tmp_path / "fig")


# ---------------------------------------------------------------------------------------------
# GPU: captured replays equal eager decode
#
# Tolerance: a replay runs the very kernels eager decode launches, on the same inputs, so the
# results are expected to be bit-identical (the tests print the differences); the bound allows one
# or two bf16 roundings (bf16 keeps 8 significant bits: relative spacing 2^-7 = 0.0078) in case
# cuBLAS picks another GEMM algorithm or split inside a capture: atol 2e-2, rtol 1.6e-2 for bf16
# outputs / logits; float32 states 1e-4 / 1e-4 (a bf16 rounding upstream changes them by ~1e-3
# relative at most, at |state| ~ 1e-1).

BF16_TOL = dict(atol=2e-2, rtol=1.6e-2)
STATE_TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("family", ops.FAMILIES)
def test_op_graph_replay_equals_eager_gpu(family):
    shape = ops.Shape(family, "decode", 4, 1, 6, 64, 128)
    inputs = ops.make_inputs(shape, "cuda", torch.bfloat16, seed=0)
    fn = ops.kernel(family, "decode", "fla")
    step = gd.OpDecodeStep(family, inputs, "fla", capture=True)
    assert step.graph is not None
    state = inputs["initial_state"].clone()
    worst_o = worst_s = 0.0
    with torch.inference_mode():
        for t in range(8):
            new = {k: v for k, v in ops.make_inputs(shape, "cuda", torch.bfloat16, seed=t + 1).items()
                   if k not in ("initial_state", "A_log", "dt_bias")}
            ref_o, state = fn(**{**inputs, **new, "initial_state": state})
            o = step(**new).clone()
            torch.testing.assert_close(o, ref_o, **BF16_TOL)
            torch.testing.assert_close(step.state, state, **STATE_TOL)
            worst_o = max(worst_o, float((o.float() - ref_o.float()).abs().max()))
            worst_s = max(worst_s, float((step.state - state).abs().max()))
    print(f"{family} op graph vs eager over 8 steps: max |do| {worst_o:.3g}, max |dstate| {worst_s:.3g}")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("family", list(FAMILY_SPECS))
def test_model_graph_replay_equals_eager_gpu(family):
    spec = dict(hidden_size=256, num_layers=2, num_heads=4, head_k_dim=64, head_v_dim=64, vocab_size=512)
    model = tiny(family, "cuda", torch.bfloat16, spec)
    cache = prompt_cache(model, B=4, T=16)
    ref_cache = gd.clone_cache(cache)
    dec = gd.GraphDecoder(model, cache, capture=True)
    assert dec.graph is not None
    with torch.inference_mode():
        for t in range(8):
            ids = gd.random_ids(512, 4, 1, "cuda", 100 + t)
            ref = model(input_ids=ids, past_key_values=ref_cache, use_cache=True, logits_to_keep=1).logits
            got = dec.step(ids)
            torch.testing.assert_close(got, ref, **BF16_TOL)
    for slot, buf in zip(dec.slots, dec.buffers):
        i, key, j = slot
        ref_value = ref_cache[i][key] if j is None else ref_cache[i][key][j]
        tol = STATE_TOL if buf.dtype == torch.float32 else BF16_TOL
        torch.testing.assert_close(buf, ref_value, **tol)
    assert cache.get_seq_length() == ref_cache.get_seq_length() == 16 + 8
    check, _ = gd.compare_decode(model, prompt_cache(model, B=4, T=16), steps=8, capture=True)
    print(f"{family} model graph vs eager: {check}")
    assert check["logits_max_abs_diff"] <= 2e-2 + 1.6e-2 * check["logits_max_abs"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_graph_rows_on_gpu():
    shape = ops.Shape("gated_deltanet", "decode", 8, 1, 6, 64, 128)
    row = ops.bench_shape(shape, "fla", "cuda", decode_mode="graph", repeats=10, max_warmup=5)
    eager = ops.bench_shape(shape, "fla", "cuda", decode_mode="eager", repeats=10, max_warmup=5)
    print("graph", row["ms_median"], row["host_ms"], row["achieved_gbps"], "eager", eager["ms_median"])
    assert row["error"] == "" and row["clock"] == "cuda_events_queued" and row["host_ms"] > 0
    assert 0 < row["ms_median"] < eager["ms_median"] and row["peak_gbps"] and row["roofline_frac"] > 0
    model = tiny("delta_net", "cuda", torch.bfloat16,
                 dict(hidden_size=256, num_layers=2, num_heads=4, head_k_dim=64, head_v_dim=64, vocab_size=512))
    rows = models.bench_model(model, prefill_batch=(), prefill_len=(), decode_batch=[4], prompt_len=8,
                              verify_steps=4, repeats=10, max_warmup=5, log=print)
    assert [r["decode_mode"] for r in rows] == ["graph", "eager"] and all(r["error"] == "" for r in rows)
    assert rows[0]["verify_logits_max_abs_diff"] <= 0.05 and rows[0]["ms_median"] < rows[1]["ms_median"]
