"""Tiny random models for the head-pruning tests (hidden 32, 2 layers, 2-4 heads)."""
import torch

from lapr.models import FAMILIES as ADAPTERS
from lapr.models import build_model

FAMILIES = list(ADAPTERS)  # every family lapr adapts: a new family module is tested here unasked


def tiny_spec(family: str, heads: int = 2, vocab: int = 128, **extra) -> dict:
    return dict(family=family, hidden_size=32, num_layers=2, num_heads=heads, head_k_dim=8,
                head_v_dim=8, vocab_size=vocab, mlp_ratio=2, **extra)


def tiny_model(family: str, heads: int = 2, seed: int = 0, **extra):
    model = build_model(tiny_spec(family, heads, **extra), seed=seed).eval()
    with torch.no_grad():   # O(1) states, so a wrongly kept head would show in the outputs
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")):
                p.mul_(10)
    return model


