"""Fixtures for the head-pruning tests."""
import pytest
import torch

from heads_helpers import FAMILIES


@pytest.fixture(params=FAMILIES)
def family_name(request):
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
