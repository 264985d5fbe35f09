"""MQAR: deterministic, verifiable generator; query noise hook; a tiny run learns above chance."""
import numpy as np
import pytest
import torch

from lapr.models import build_model
from lapr.probes import mqar

SHAPE = dict(vocab_size=32, seq_len=40, num_kv_pairs=6)


def test_deterministic_per_seed():
    a, b = mqar.make_batch(16, seed=3, **SHAPE), mqar.make_batch(16, seed=3, **SHAPE)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    c = mqar.make_batch(16, seed=4, **SHAPE)
    assert not torch.equal(a.inputs, c.inputs)


def test_answers_verifiable():
    b = mqar.make_batch(64, seed=0, **SHAPE)
    assert torch.equal(mqar.solve(b.inputs, SHAPE["num_kv_pairs"]), b.targets)
    x, y = b.inputs.numpy(), b.targets.numpy()
    N, half = SHAPE["num_kv_pairs"], SHAPE["vocab_size"] // 2
    keys, values = x[:, 0:2 * N:2], x[:, 1:2 * N:2]
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < 32)).all()
    assert all(len(set(row)) == N for row in keys)                 # distinct keys per sequence
    assert ((y != mqar.IGNORE).sum(1) == N).all()                   # every key queried once
    for r in range(len(x)):
        table = dict(zip(keys[r], values[r]))
        for t in np.flatnonzero(y[r] != mqar.IGNORE):
            assert y[r, t] == table[x[r, t]] and x[r, t + 1] == y[r, t]   # answer follows the query
    assert b.n_queries == 64 * N


def test_num_queries_and_errors():
    b = mqar.make_batch(8, seed=1, vocab_size=32, seq_len=40, num_kv_pairs=6, num_queries=2)
    assert ((b.targets != mqar.IGNORE).sum(1) == 2).all()
    with pytest.raises(ValueError, match="num_kv_pairs"):
        mqar.make_batch(2, 0, vocab_size=16, seq_len=64, num_kv_pairs=8)   # only 7 keys
    with pytest.raises(ValueError, match="too short"):
        mqar.make_batch(2, 0, vocab_size=64, seq_len=20, num_kv_pairs=8)
    with pytest.raises(ValueError, match="num_queries"):
        mqar.make_batch(2, 0, vocab_size=64, seq_len=64, num_kv_pairs=4, num_queries=5)
    assert mqar.chance(64) == 1 / 32


@pytest.mark.parametrize("family", ["delta_net", "gated_deltanet"])
def test_query_noise_hook(family):
    model = build_model(dict(family=family, hidden_size=32, num_layers=1, num_heads=2, head_k_dim=16,
                             head_v_dim=16, vocab_size=32, mlp_ratio=2), seed=0).eval()
    b = mqar.make_batch(4, seed=0, **SHAPE)
    base = mqar._forward(model, b.inputs)
    with mqar.query_noise(model, 0.0):
        torch.testing.assert_close(mqar._forward(model, b.inputs), base)
    with mqar.query_noise(model, 1.0, seed=1):
        noisy = mqar._forward(model, b.inputs)
    with mqar.query_noise(model, 1.0, seed=1):
        torch.testing.assert_close(mqar._forward(model, b.inputs), noisy)   # seeded
    assert (noisy - base).abs().max() > 1e-5
    torch.testing.assert_close(mqar._forward(model, b.inputs), base)         # hook removed
    with pytest.raises(ValueError, match="sigma"):
        with mqar.query_noise(model, -1.0):
            pass


def test_tiny_training_beats_chance():
    shape = dict(vocab_size=16, seq_len=16, num_kv_pairs=2)    # 8 values: chance 0.125
    model = build_model(dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=16,
                             head_v_dim=16, vocab_size=16, mlp_ratio=2), seed=0)
    valid = mqar.make_batch(256, seed=99, **shape)
    before = mqar.recall(model, valid)["recall"]
    out = mqar.train(model, {"steps": 120, "batch_size": 32, "lr": 1e-2, "warmup": 10, "eval_every": 40,
                             "eval_n": 128, "target_recall": 0.9}, shape, seed=0, progress=False)
    after = mqar.recall(model, valid)["recall"]
    assert after > max(2.5 * mqar.chance(16), before + 0.2), (before, after, out["stopped"])
    assert out["train_time_s"] > 0 and out["curve"][-1]["step"] == out["steps"]
