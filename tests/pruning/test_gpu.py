"""Pruned models on fla's Triton kernels (CUDA): odd key dims run, match the float32 reference,
train (recovery backward), and reload. Skipped without a GPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SPEC = dict(hidden_size=256, num_layers=2, num_heads=4, head_k_dim=64, vocab_size=512,
            mlp_ratio=2)


def build(fam):
    from lapr.models import build_model

    spec = dict(SPEC, family=fam, head_v_dim=64 if fam == "delta_net" else 128)
    model = build_model(spec, seed=0).float().eval()
    with torch.no_grad():  # larger q/k/v so attention matters in a random model
        for name, p in model.named_parameters():
            if any(k in name for k in ("q_proj", "k_proj", "v_proj")):
                p.mul_(4)
    return model


def logits_cpu(model, x):
    from lapr.backends import use_cpu_backend

    use_cpu_backend(True)
    try:
        with torch.no_grad():
            return model.cpu()(x.cpu()).logits.float()
    finally:
        use_cpu_backend(False)


def logits_gpu(model, x):
    from lapr.backends import use_cpu_backend

    use_cpu_backend(False)
    with torch.no_grad():
        return model.cuda().to(torch.bfloat16)(x.cuda()).logits.float().cpu()


def rel(a, b):
    return float((a - b).norm() / b.norm())


# Seen on an H100 (fla 0.6.0, triton 3.6, torch 2.11): every case below passed; in addition
# DeltaNet with d_k' = 16 on the chunk path (T > 64) hit an illegal memory access in fla's
# delta_rule/wy_fast.py recompute_w_u kernel, although a bare chunk_delta_rule call with
# K = 16 ran. It is left out here because the crash poisons the CUDA context for every later
# test; see the pruning report.
@pytest.mark.parametrize("fam", ["delta_net", "gated_deltanet"])
@pytest.mark.parametrize("kept", [44, 37, 16])
@pytest.mark.parametrize("seq", [48, 200])  # fused_recurrent (<= 64 tokens) and chunk paths
def test_pruned_model_on_triton_matches_reference(fam, kept, seq, tmp_path):
    if (fam, kept) == ("delta_net", 16) and seq > 64:
        pytest.skip("fla 0.6.0 DeltaNet chunk kernel crashes at d_k=16 on Hopper (see above)")
    from lapr.pruning.select import choose
    from lapr.pruning.surgery import prune_channels

    model = build(fam)
    pruned = prune_channels(model, choose(model, "l2", kept))
    x = torch.randint(0, 512, (2, seq), generator=torch.Generator().manual_seed(0))
    ref_full, ref = logits_cpu(model, x), logits_cpu(pruned, x)
    got_full, got = logits_gpu(model, x), logits_gpu(pruned, x)
    # the pruned model's bf16 Triton error is of the same order as the unpruned model's
    assert rel(got, ref) < max(3 * rel(got_full, ref_full), 2e-2), (rel(got, ref),
                                                                     rel(got_full, ref_full))
    print(f"{fam} d_k'={kept} T={seq}: rel err pruned {rel(got, ref):.2e}, "
          f"unpruned {rel(got_full, ref_full):.2e}")


@pytest.mark.parametrize("fam", ["delta_net", "gated_deltanet"])
def test_recovery_backward_on_triton(fam):
    from lapr.backends import use_cpu_backend
    from lapr.pruning.recovery import recover
    from lapr.pruning.select import choose
    from lapr.pruning.surgery import prune_channels

    use_cpu_backend(False)
    model = build(fam)
    pruned = prune_channels(model, choose(model, "l2", 37))
    x = torch.randint(0, 512, (2, 128), generator=torch.Generator().manual_seed(1))
    try:
        merged, log = recover(pruned, [x], {"steps": 4, "lr": 1e-3, "warmup": 1,
                                            "distill": True},
                              teacher=model.cuda(), device="cuda", progress=False)
    except RuntimeError as err:  # fla refuses GDN backward with Triton 3.4-3.7.0 on Hopper
        if "Please upgrade Triton" in str(err):
            pytest.skip(str(err).splitlines()[0])
        raise
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    print(fam, [round(r["loss"], 4) for r in log])
