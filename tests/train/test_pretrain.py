"""Pretraining with a weight average (EMA): the update's closed form, and that the checkpoint and
metrics are the average's, not the last step's."""
import json

import numpy as np
import pytest
import torch

from lapr.models import build_model
from lapr.train import stage
from lapr.train.pretrain import ema_update, pretrain

SPEC = {"family": "delta_net", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "head_k_dim": 16,
        "head_v_dim": 16, "mlp_ratio": 2, "vocab_size": 64}


def test_ema_update_matches_closed_form():
    g = torch.Generator().manual_seed(7)
    ema, model = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    for p in [*ema.parameters(), *model.parameters()]:
        p.data = torch.randn(p.shape, generator=g)
    before = [p.clone() for p in ema.parameters()]
    for step, decay, expect_d in [(0, 0.99, 0.1), (20, 0.99, 21 / 30), (2000, 0.99, 0.99), (500, 0.5, 0.5)]:
        old = [p.clone() for p in ema.parameters()]
        d = ema_update(ema, model, decay, step)
        assert d == pytest.approx(expect_d)
        for e, o, m in zip(ema.parameters(), old, model.parameters()):
            torch.testing.assert_close(e, d * o + (1 - d) * m, rtol=1e-6, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(before, ema.parameters()))


def _run(tmp_path, name, ema):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 64, 20_000).astype(np.int32)
    valid = rng.integers(0, 64, 2_000).astype(np.int32)
    settings = {**stage.Pretrain.defaults(), "steps": 6, "batch_size": 2, "seq_len": 16, "warmup": 1, "eval_every": 3,
                "eval_seq_len": 16, "eval_windows": 2, "final_eval_windows": 4, "ema": ema}
    metrics = pretrain(SPEC, settings, train, {"valid": valid}, tmp_path / name, seed=0, device="cpu")
    return metrics, tmp_path / name


def test_checkpoint_is_the_weight_average(tmp_path):
    from transformers import AutoModelForCausalLM

    plain, plain_dir = _run(tmp_path, "plain", 0.0)
    avg, avg_dir = _run(tmp_path, "ema", 0.9)
    assert plain["ema"] == 0.0 and avg["ema"] == 0.9
    a = AutoModelForCausalLM.from_pretrained(plain_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(avg_dir).state_dict()
    # same seed, same batches: the raw trajectories agree, so any difference is the average
    assert any(not torch.equal(a[k], b[k]) for k in a)
    init = build_model(SPEC, seed=0).state_dict()
    # the average lies between the initial and the last weights: closer to init than the last step is
    k = next(k for k in a if k.endswith("q_proj.weight"))
    assert (b[k] - init[k]).norm() < (a[k] - init[k]).norm()
    curve = (avg_dir / "loss_curve.csv").read_text().splitlines()
    assert "valid_loss_ema" in curve[0] and "valid_loss_ema" not in (plain_dir / "loss_curve.csv").read_text()
    saved = json.loads((avg_dir / "metrics.json").read_text())
    assert saved["ema"] == 0.9 and saved["provenance"]["settings"]["train"]["ema"] == 0.9


def test_stage_rejects_bad_ema(tmp_path):
    import argparse

    args = argparse.Namespace(settings={"ema": 1.0}, spec={}, eval=[], train="x", tokenizer="gutenberg-bpe-8k",
                              seed=0, device=None, out=str(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"^pretrain.ema: expected a number in \[0, 1\), got 1.0$"):
        stage.run(args)
    assert not (tmp_path / "m").exists()
