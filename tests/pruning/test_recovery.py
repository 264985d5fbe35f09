"""Recovery: LoRA (+ KL distillation) runs, lowers the loss, and merges into a plain model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import math

import pytest
import torch
from pruning_helpers import FAMILIES, one_thread, tiny_model, tokens  # noqa: F401

from lapr.pruning.recovery import (Recovery, add_lora, build_optimizer, distill_loss, lr_factor,
                                   merge, recover, recovery_settings, unfreeze)
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
    # LoRA on q/k/v; conv1d, norm and *bias (GDN's dt_bias too) train in full, as LAP's
    # train.py unfreezes every parameter whose name contains one of those words
    assert changed and all(k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj")
                           or any(w in k for w in ("conv1d", "norm", "bias")) for k in changed)
    assert any("conv1d" in k for k in changed) and any("norm" in k for k in changed)
    torch.testing.assert_close(logits(merged, x), adapted, rtol=1e-4, atol=1e-5)
    merged.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    torch.testing.assert_close(logits(back, x), logits(merged, x), rtol=0, atol=0)
    assert all(p.requires_grad for p in merged.parameters())


def test_plain_lora_without_teacher():
    model = tiny_model("delta_net", num_layers=1)
    merged, log = recover(model, [tokens(2, 16, seed=3)],
                          {**SETTINGS, "steps": 3, "distill": False}, progress=False)
    assert [r["kl"] for r in log] == [0.0, 0.0, 0.0]
    assert torch.isfinite(logits(merged, tokens(1, 8))).all()


def test_distill_loss_zero_for_identical_logits():
    x = torch.randn(2, 5, 11)
    assert distill_loss(x, x.clone(), 2.0).abs() < 1e-6
    assert distill_loss(x, torch.randn(2, 5, 11), 1.0) > 0


def test_settings_defaults_and_errors():
    s = recovery_settings(None)
    assert (s["lora_r"], s["lora_alpha"], s["targets"]) == (32, 64, ["q_proj", "k_proj", "v_proj"])
    assert s["enabled"] is False and s["distill"] is True
    for bad, message in [({"lora_rank": 8}, "^prune.recovery.lora_rank: unknown key; allowed: batch_size, "),
                         ({"steps": 0}, "recovery.steps"), ({"lr": -1}, "recovery.lr"),
                         ({"distill": "yes"}, "recovery.distill"), ({"targets": []}, "targets"),
                         ({"schedule": "step"}, "recovery.schedule"),
                         ({"min_lr_ratio": 1.5}, "recovery.min_lr_ratio"),
                         ({"eps": -1e-8}, "recovery.eps"), ({"betas": [0.9]}, r"^prune.recovery.betas: expected a list of 2 numbers in \[0, 1\), got \[0.9\]$"),
                         ({"warmup": 0.5}, "recovery.warmup"), ({"unfreeze": "norm"}, "unfreeze")]:
        with pytest.raises(ValueError, match=message):
            recovery_settings(bad)
    with pytest.raises(ValueError, match="no teacher"):
        recover(tiny_model("delta_net", num_layers=1), [tokens(2, 8)],
                {**SETTINGS, "distill": True}, progress=False)


# ---- paper A's recipe (LAP scripts/finetuning/run_lora.sh + flame train.py) ------------------

def test_defaults_are_laps_recipe():
    # every number of run_lora.sh / flame's defaults; steps, batch and length are the profiles'
    recipe = {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-15, "weight_decay": 0.1,
              "schedule": "cosine", "warmup": 1, "min_lr_ratio": 0.1, "grad_clip": 1.0,
              "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.0,
              "targets": ["q_proj", "k_proj", "v_proj"], "unfreeze": ["conv1d", "norm", "bias"],
              "distill": True, "distill_weight": 1.0, "temperature": 2.0}
    s = recovery_settings(None)
    assert {k: s[k] for k in recipe} == recipe
    assert {k: Recovery.defaults()[k] for k in recipe} == recipe


def torchtitan_factor(step, steps, warmup, low):
    """torchtitan linear_warmup_stable_decay, decay_ratio None, cosine, typed in independently."""
    decay = steps - warmup
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = ((step + 1) - warmup) / (decay + 1)
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("steps", [40, 2000])
def test_cosine_schedule_decays_to_a_tenth(steps):
    s = recovery_settings({"steps": steps})
    factors = [lr_factor(i, s) for i in range(steps)]
    assert factors == pytest.approx([torchtitan_factor(i, steps, 1, 0.1) for i in range(steps)],
                                    rel=1e-12)
    assert factors[0] == 0.5 and max(factors) == pytest.approx(1.0, abs=2e-3)  # 1-step warm-up
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))                 # then decays
    assert factors[-1] == pytest.approx(0.1, rel=0.02 if steps == 40 else 1e-5)
    assert factors[steps // 2] == pytest.approx(0.55, abs=0.05)                  # cosine midpoint
    assert lr_factor(steps - 1, {**s, "schedule": "constant"}) == 1.0


def test_recover_logs_the_scheduled_lr():
    model = tiny_model("delta_net", num_layers=1)
    settings = {**SETTINGS, "steps": 5, "lr": 1e-3, "distill": False}
    _, log = recover(model, [tokens(2, 16, seed=3)], settings, progress=False)
    full = recovery_settings(settings)
    assert [r["lr"] for r in log] == pytest.approx([1e-3 * lr_factor(i, full) for i in range(5)])
    assert log[-1]["lr"] < 0.2e-3


def test_distillation_runs_at_temperature_two():
    # LoRA's B starts at zero, so step 1's student is the pruned model itself: its logged KL
    # must be distill_loss at T = 2 (the default), which differs from T = 1 here
    teacher = tiny_model("gated_deltanet", num_layers=1)
    with torch.no_grad():  # larger logits: T^2 KL at tiny logits is nearly T-independent
        teacher.lm_head.weight.mul_(30)
    student = prune_channels(teacher, choose(teacher, "l2", 6))
    x = tokens(2, 16, seed=4)
    s_logits, t_logits = logits(student, x), logits(teacher, x)
    at2 = distill_loss(s_logits, t_logits, 2.0).item()
    at1 = distill_loss(s_logits, t_logits, 1.0).item()
    assert abs(at2 - at1) > 0.05 * at2
    _, log = recover(student, [x], {**SETTINGS, "steps": 1, "distill_weight": 1.0},
                     teacher=teacher, progress=False)
    assert log[0]["kl"] == pytest.approx(at2, rel=1e-4)
    assert log[0]["loss"] == pytest.approx(log[0]["ce"] + at2, rel=1e-4)


def test_distill_loss_is_laps_kd_term():
    # LAP train.py: kl_div(log_softmax(s/T), softmax(t/T), 'batchmean') * T^2 over [B*L, V]
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    want = torch.nn.functional.kl_div(torch.log_softmax(s.view(-1, 11) / 2, -1),
                                      torch.softmax(t.view(-1, 11) / 2, -1),
                                      reduction="batchmean") * 4
    torch.testing.assert_close(distill_loss(s, t, 2.0), want)


def test_weight_decay_on_every_trainable_parameter_as_torchtitan():
    model = tiny_model("delta_net", num_layers=1)
    settings = recovery_settings({"lora_r": 4, "lora_alpha": 8})
    peft_model = add_lora(model, settings)
    names = unfreeze(peft_model, settings)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("conv1d" in n for n in names) and any("norm" in n for n in names)
    assert {n for n in trainable if "lora_" not in n} == set(names)
    assert all("base_layer" not in n and "embed" not in n for n in trainable)
    opt = build_optimizer(peft_model, settings)
    (group,) = opt.param_groups  # one group: LAP has no no-decay group for norms or biases
    assert group["weight_decay"] == 0.1 and group["eps"] == 1e-15
    assert group["betas"] == (0.9, 0.95) and group["lr"] == 1e-4
    ids = {id(p) for p in group["params"]}
    assert ids == {id(p) for n, p in peft_model.named_parameters() if n in trainable}
    # with no unfreezing only the adapters train (and decay)
    plain = add_lora(tiny_model("delta_net", num_layers=1), settings)
    unfreeze(plain, {**settings, "unfreeze": []})
    assert all("lora_" in n for n, p in plain.named_parameters() if p.requires_grad)
