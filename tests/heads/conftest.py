"""Fixtures for the head-pruning tests."""
import pytest

from heads_helpers import FAMILIES


@pytest.fixture(params=FAMILIES)
def family_name(request):
    return request.param
