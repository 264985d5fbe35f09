"""Shared fixtures for the eval tests: the shipped 8k BPE and a tiny random DeltaNet of that vocabulary."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test machine is 2 shared cores: one intra-op thread is several times faster than two
    # under contention (OpenMP spin-waiting); restored afterwards so other test modules are unaffected.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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
