"""Fixtures for the profiling tests; model helpers live in profiling_helpers.py."""
import pytest
from profiling_helpers import FAMILIES


@pytest.fixture(params=FAMILIES)
def family_name(request):
    return request.param
