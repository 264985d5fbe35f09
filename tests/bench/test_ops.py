"""Op-level grid expansion, inputs and the CPU harness (lapr.bench.ops)."""
import pytest
import torch

from lapr.bench import ops, timing

TINY = {"B": 1, "T": 16, "H": 1, "d_v": 8, "d_k": [16, 8], "extra_d_k": [12]}


def test_default_grid_expansion():
    shapes = ops.expand_grid({}, "cpu")
    assert len(shapes) == len(ops.FAMILIES) * 2 * 8       # families x phases x default d_k
    assert [s.d_k for s in shapes[:8]] == list(ops.DEFAULT_D_K)
    d = ops.GRID_DEFAULTS["cpu"]
    assert {(s.B, s.H, s.d_v) for s in shapes} == {(d["B"][0], d["H"][0], d["d_v"][0])}
    assert {s.T for s in shapes if s.phase == "decode"} == {1}
    assert {s.T for s in shapes if s.phase == "prefill"} == set(d["T"])


def test_grid_extras_dedupe_and_decode_collapse():
    settings = {"families": "gated_deltanet", "d_k": [128, 64], "extra_d_k": [100, 64, 37], "B": [1, 2],
                "T": [64, 128], "H": 4, "d_v": 32}
    assert ops.d_k_values(settings) == [128, 100, 64, 37]
    shapes = ops.expand_grid(settings, "cpu")
    prefill = [s for s in shapes if s.phase == "prefill"]
    decode = [s for s in shapes if s.phase == "decode"]
    assert len(prefill) == 2 * 2 * 4                      # B x T x d_k
    assert len(decode) == 2 * 4                           # T collapses to one decode token
    assert len(set(shapes)) == len(shapes)
    assert {s.family for s in shapes} == {"gated_deltanet"}
    assert shapes[0].state_bytes() == 1 * 4 * 128 * 32 * 4


@pytest.mark.parametrize("bad", [{"d_k": [0]}, {"d_k": []}, {"B": [1.5]}, {"H": [True]},
                                 {"families": ["mamba"]}, {"phases": "train"}])
def test_grid_validation(bad):
    with pytest.raises(ValueError):
        ops.expand_grid(bad, "cpu")


def test_inputs_random_rotating_and_shaped():
    dn = ops.make_inputs(ops.Shape("delta_net", "decode", 2, 1, 3, 16, 8), seed=0)
    assert dn["q"].shape == (2, 1, 3, 16) and dn["v"].shape == (2, 1, 3, 8)
    assert dn["initial_state"].shape == (2, 3, 16, 8) and dn["initial_state"].dtype == torch.float32
    assert ((dn["beta"] > 0) & (dn["beta"] < 1)).all()
    gdn = ops.make_inputs(ops.Shape("gated_deltanet", "decode", 2, 1, 3, 16, 8), seed=0)
    assert gdn["initial_state"].shape == (2, 3, 8, 16)    # value-first, as fla's GDN layer keeps it
    assert {"g", "A_log", "dt_bias"} <= set(gdn)
    for x in gdn.values():
        assert x.abs().sum() > 0                          # random, not zero
    other = ops.make_inputs(ops.Shape("gated_deltanet", "decode", 2, 1, 3, 16, 8), seed=1)
    assert not torch.equal(gdn["q"], other["q"])          # rotated sets differ


def test_cpu_grid_rows():
    shapes = ops.expand_grid(TINY, "cpu")
    logged = []
    with timing.torch_threads(1):
        rows = ops.run_grid(shapes, ["torch"], repeats=3, warmup=1, log=logged.append)
    assert len(rows) == len(shapes) == len(ops.FAMILIES) * 2 * 3 and len(logged) == len(rows)
    for row, shape in zip(rows, shapes):
        assert row["error"] == ""
        assert set(ops.COLUMNS) <= set(row)
        assert (row["device"], row["impl"], row["level"], row["dtype"]) == ("cpu", "torch", "op", "float32")
        assert row["state_bytes"] == shape.B * shape.H * shape.d_k * shape.d_v * 4
        assert row["tokens_per_s"] == pytest.approx(shape.B * shape.T / (row["ms_median"] / 1e3))
        assert row["ms_iqr"] >= 0 and row["n_repeats"] == 3 and row["n_warmup"] == 1
        inputs = timing.tensor_bytes(ops.make_inputs(shape))
        assert row["peak_mem_bytes"] > inputs               # inputs + outputs at least
        assert row["mem_method"] == timing.MEM_METHOD_CPU


def test_torch_impl_decode_matches_prefill_step():
    """The decode kernel is the delta rule: one step from a state equals the recurrent reference."""
    from lapr.backends.delta_rule import delta_rule_recurrent

    shape = ops.Shape("gated_deltanet", "decode", 1, 1, 2, 8, 4)
    kw = ops.make_inputs(shape)
    o, s = ops.kernel("gated_deltanet", "decode", "torch")(**kw)
    ref_o, ref_s = delta_rule_recurrent(kw["q"], kw["k"], kw["v"], kw["beta"], kw["g"],
                                        initial_state=kw["initial_state"], output_final_state=True,
                                        use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=kw["A_log"],
                                        dt_bias=kw["dt_bias"], use_beta_sigmoid_in_kernel=True, state_v_first=True)
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=0)
    torch.testing.assert_close(s, ref_s, atol=1e-5, rtol=0)


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_gla_torch_impl_is_the_gla_recurrence(phase):
    """GLA's op rows call lapr's chunked GLA as the layer calls fla's (key-wise gate, value-first
    state): equal to the token-by-token recurrence."""
    from lapr.backends.gla import gla_recurrent

    shape = ops.Shape("gla", phase, 1, 1 if phase == "decode" else 40, 2, 8, 4)
    kw = ops.make_inputs(shape)
    assert kw["gk"].shape == (1, shape.T, 2, 8) and (kw["gk"] <= 0).all()
    o, s = ops.kernel("gla", phase, "torch")(**kw)
    ref_o, ref_s = gla_recurrent(kw["q"], kw["k"], kw["v"], gk=kw["gk"], initial_state=kw.get("initial_state"),
                                 output_final_state=True, state_v_first=True)
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=0)
    torch.testing.assert_close(s, ref_s, atol=1e-5, rtol=0)


def test_failing_shape_becomes_error_row(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("kernel exploded\nsecond line")
    monkeypatch.setattr(ops, "bench_shape", broken)
    shapes = ops.expand_grid({**TINY, "families": "delta_net", "phases": "prefill"}, "cpu")
    rows = ops.run_grid(shapes, ["torch"], log=lambda *_: None)
    assert len(rows) == 3
    assert all(r["error"] == "RuntimeError: kernel exploded" for r in rows)
    assert all(r["state_bytes"] > 0 and r["device"] == "cpu" for r in rows)


def test_deadline_skips_and_fla_needs_known_impl():
    shapes = ops.expand_grid({**TINY, "families": "delta_net"}, "cpu")
    rows = ops.run_grid(shapes, ["torch"], deadline=0.0, log=lambda *_: None)
    assert all(r["error"].startswith("skipped") for r in rows)
    with pytest.raises(ValueError):
        ops.kernel("delta_net", "prefill", "cuda-magic")


def test_rounds_pool_every_round_and_spread_a_slow_spell(monkeypatch):
    """rounds=R: the grid is timed R times in turn and each row pools its calls. A slow spell that
    falls on the first shape's calls of one pass moves that shape alone; spread over rounds it moves
    both shapes' medians alike, and their ratio (claim A3's measure) stays the true 2x."""
    shapes = [ops.Shape("delta_net", "prefill", 1, 32, 2, d_k, 8) for d_k in (16, 8)]
    true_ms = {16: 2.0, 8: 1.0}
    order = []

    def fake_bench(shape, impl, device, dtype, seed, n_inputs, repeats, **kw):
        order.append(shape.d_k)
        slow = 3.0 if len(order) == 1 else 1.0             # the machine is slow for the very first shape only
        times = [true_ms[shape.d_k] * slow] * repeats
        res = timing.TimingResult(times_ms=times, first_call_ms=9.0, warmup_ms=[1.0], clock="perf_counter")
        return {**ops.base_row(shape, impl, device, torch.float32, **kw),
                **ops.measured_columns(res, shape.tokens, 1, "fake")}

    monkeypatch.setattr(ops, "bench_shape", fake_bench)
    rows = ops.run_grid(shapes, ["torch"], repeats=7, rounds=3, log=lambda *_: None)
    assert order == [16, 8] * 3                             # whole grid per round, in turn
    by_dk = {r["d_k"]: r for r in rows}
    assert [by_dk[d]["n_repeats"] for d in (16, 8)] == [7, 7] and by_dk[16]["n_warmup"] == 3  # 3 + 2 + 2 calls
    assert by_dk[16]["ms_median"] / by_dk[8]["ms_median"] == pytest.approx(2.0)  # the slow round is outvoted
    assert by_dk[8]["tokens_per_s"] == pytest.approx(shapes[0].tokens / 1e-3)
    assert all(ops.TIMING not in r for r in rows)            # raw calls never reach the CSV
    order.clear()
    single = {r["d_k"]: r for r in ops.run_grid(shapes, ["torch"], repeats=7, log=lambda *_: None)}
    assert single[16]["ms_median"] / single[8]["ms_median"] == pytest.approx(6.0)  # one pass: the spell decides
    with pytest.raises(ValueError, match="rounds"):
        ops.run_grid(shapes, ["torch"], rounds=0)
