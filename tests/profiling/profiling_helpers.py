"""Tiny random models of both families for the profiling tests (hidden 32, 2 layers)."""
import torch

from lapr.models import FAMILIES as ADAPTERS
from lapr.models import build_model

FAMILIES = list(ADAPTERS)  # every family lapr adapts: a new family module is tested here unasked


def tiny_spec(family: str, vocab: int = 256, **extra) -> dict:
    # GDN: use_gate defaults to True in config_from_spec (output gate on); its decay gate
    # (A_log, dt_bias, a_proj) and beta are always on
    return dict(family=family, hidden_size=32, num_layers=2, num_heads=2, head_k_dim=16,
                head_v_dim=16, vocab_size=vocab, mlp_ratio=2, **extra)


def tiny_model(family: str, vocab: int = 256, seed: int = 0, **extra):
    model = build_model(tiny_spec(family, vocab, **extra), seed=seed).eval()
    # random init gives tiny weights (std 0.02) and near-zero states; scale q/k/v up so the states
    # have O(1) entries and many nonzero singular values (a sharper test of the recurrence)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                p.mul_(10)
    return model
