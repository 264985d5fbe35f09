"""Shared fixtures for the eval tests: the shipped 8k BPE and a tiny random DeltaNet of that vocabulary."""
import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from lapr.data import load_tokenizer
    return load_tokenizer("gutenberg-bpe-8k")


TINY = dict(family="delta_net", hidden_size=32, num_layers=1, num_heads=2, head_k_dim=16, head_v_dim=16,
            mlp_ratio=2, max_length=64)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    from lapr.models import build_model
    return build_model({**TINY, "vocab_size": len(tokenizer)}, seed=0).eval()
