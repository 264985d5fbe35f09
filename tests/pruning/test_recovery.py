"""Recovery: LoRA (+ KL distillation) runs, lowers the loss, and merges into a plain model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from pruning_helpers import FAMILIES, one_thread, tiny_model, tokens  # noqa: F401

from lapr.pruning.recovery import distill_loss, merge, recover, recovery_settings
from lapr.pruning.select import choose
from lapr.pruning.surgery import prune_channels

SETTINGS = {"enabled": True, "steps": 6, "lr": 1e-2, "warmup": 1, "lora_r": 4,
            "lora_alpha": 8, "seq_len": 16, "batch_size": 2}


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.mark.parametrize("fam", FAMILIES)
def test_lora_with_distillation_lowers_loss_and_merges(fam, tmp_path):
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    teacher = tiny_model(fam, num_layers=1)
    student = prune_channels(teacher, choose(teacher, "l2", 6))
    keys = {k: v.shape for k, v in student.state_dict().items()}
    before = {k: v.clone() for k, v in student.state_dict().items()}
    batch = [tokens(2, 16, seed=1)]  # one batch, repeated: the loss must go down
    settings = {**SETTINGS, "distill": True, "distill_weight": 0.5}
    peft_model, log = recover(student, batch, settings, teacher=teacher, merge_adapters=False,
                              progress=False)
    assert len(log) == 6 and all(r["kl"] > 0 for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    x = tokens(1, 16, seed=2)
    adapted = logits(peft_model, x)
    merged = merge(peft_model)
    assert type(merged) is type(teacher)
    assert not any("lora" in name for name, _ in merged.named_modules())
    state = merged.state_dict()
    assert {k: v.shape for k, v in state.items()} == keys
    changed = {k for k in keys if not torch.equal(state[k], before[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj")
                           for k in changed)
    torch.testing.assert_close(logits(merged, x), adapted, rtol=1e-4, atol=1e-5)
    merged.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    torch.testing.assert_close(logits(back, x), logits(merged, x), rtol=0, atol=0)
    assert all(p.requires_grad for p in merged.parameters())


def test_plain_lora_without_teacher():
    model = tiny_model("delta_net", num_layers=1)
    merged, log = recover(model, [tokens(2, 16, seed=3)], {**SETTINGS, "steps": 3},
                          progress=False)
    assert [r["kl"] for r in log] == [0.0, 0.0, 0.0]
    assert torch.isfinite(logits(merged, tokens(1, 8))).all()


def test_distill_loss_zero_for_identical_logits():
    x = torch.randn(2, 5, 11)
    assert distill_loss(x, x.clone(), 2.0).abs() < 1e-6
    assert distill_loss(x, torch.randn(2, 5, 11), 1.0) > 0


def test_settings_defaults_and_errors():
    s = recovery_settings(None)
    assert (s["lora_r"], s["lora_alpha"], s["targets"]) == (32, 64, ["q_proj", "k_proj", "v_proj"])
    assert s["enabled"] is False and s["distill"] is False
    for bad, message in [({"lora_rank": 8}, "unknown recovery setting.*lora_rank"),
                         ({"steps": 0}, "recovery.steps"), ({"lr": -1}, "recovery.lr"),
                         ({"distill": "yes"}, "recovery.distill"), ({"targets": []}, "targets")]:
        with pytest.raises(ValueError, match=message):
            recovery_settings(bad)
    with pytest.raises(ValueError, match="no teacher"):
        recover(tiny_model("delta_net", num_layers=1), [tokens(2, 8)],
                {**SETTINGS, "distill": True}, progress=False)
