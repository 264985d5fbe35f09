"""Timer statistics, warm-up, input rotation and CPU memory accounting (lapr.bench.timing)."""
import time

import pytest
import torch

from lapr.bench import timing


def test_summarize_median_and_iqr():
    s = timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median_ms"] == 3.0
    assert (s["q25_ms"], s["q75_ms"], s["iqr_ms"]) == (2.0, 4.0, 2.0)
    assert s["min_ms"] == 1.0 and s["mean_ms"] == pytest.approx(22.0)
    with pytest.raises(ValueError):
        timing.summarize([])


def test_warmed_up_rule():
    assert not timing.warmed_up([1.0] * 9, window=5)                       # too few calls
    assert not timing.warmed_up([10, 9, 8, 7, 6, 1, 1, 1, 1, 1], window=5)  # still falling
    assert timing.warmed_up([1, 1, 1, 1, 1, 1, 1, 1, 1, 1.04], window=5, tol=0.05)
    assert not timing.warmed_up([1, 1, 1, 1, 1, 1.2, 1.2, 1.2, 1.2, 1.2], window=5, tol=0.05)


def test_inputs_rotate_and_counts():
    seen = []
    inputs = [(i,) for i in range(3)]
    res = timing.time_fn(seen.append, inputs, repeats=7, warmup=2)
    assert seen == [0, 1, 2] * 3 + [0]           # 1 first call + 2 warm-up + 7 timed, in rotation
    assert res.n_repeats == 7 and res.n_warmup == 2 and len(res.times_ms) == 7
    assert res.clock == "perf_counter"
    kw_seen = []
    timing.time_fn(lambda x: kw_seen.append(x), [{"x": "a"}, {"x": "b"}], repeats=2, warmup=0)
    assert kw_seen == ["a", "b", "a"]            # dict inputs are keyword arguments


def test_first_call_excluded_and_adaptive_warmup():
    calls = []

    def fn():
        calls.append(None)
        k = len(calls)
        if k == 1:
            time.sleep(0.15)                          # "compile + autotune"
        else:                                         # calls 2..7 slow and getting faster, then 2 ms
            time.sleep(0.002 + (0.04 / (k - 1) if k <= 7 else 0))
    res = timing.time_fn(fn, [()], repeats=10, min_warmup=3, max_warmup=40, window=3, tol=0.2)
    assert res.first_call_ms >= 150
    assert 9 <= res.n_warmup <= 40, res.warmup_ms                   # kept warming up until two windows agreed
    assert res.median_ms < 8
    row = res.row()
    assert {"median_ms", "iqr_ms", "first_call_ms", "n_repeats", "n_warmup"} <= set(row)
    assert "times_ms" not in row


def test_time_fn_validates():
    with pytest.raises(ValueError):
        timing.time_fn(lambda: None, [], repeats=3)
    with pytest.raises(ValueError):
        timing.time_fn(lambda: None, [()], repeats=0)


def test_cpu_peak_memory_counts_live_tensors_only():
    mib = 2**20
    x = torch.randn(mib // 4)                     # 1 MiB input

    def fn(x):
        y = x * 2                                 # +1 MiB
        z = y + 1                                 # +1 MiB (peak: 2 MiB above the inputs)
        del y
        w = z.exp()                               # y freed first: still 2 MiB
        w.add_(1)                                 # in place: nothing new
        return w.view(-1, 2).t()                  # a view: nothing new
    peak, method = timing.peak_memory(fn, (x,))
    assert method == timing.MEM_METHOD_CPU
    assert peak == 3 * mib


def test_tensor_bytes_dedupes_views():
    a = torch.zeros(256)
    assert timing.tensor_bytes({"a": a, "b": [a[:10], a.view(16, 16)], "n": 3}) == 1024


def test_input_sets_and_threads_on_cpu():
    assert timing.n_input_sets(10**9, "cpu") == 3
    assert timing.device_label("cpu") == "cpu"
    before = torch.get_num_threads()
    with timing.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
