"""Fixtures for the profiling tests; model helpers live in profiling_helpers.py."""
import pytest
import torch
from profiling_helpers import FAMILIES


@pytest.fixture(params=FAMILIES)
def family_name(request):
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread for these tests, restored afterwards: on the shared 2-core machine, tiny
    ops with 2 threads under load ran ~20x slower (spin-waiting) than with one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
