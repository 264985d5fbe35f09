"""Fixtures for the probe tests: one torch thread (the machine is small and shared)."""
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
