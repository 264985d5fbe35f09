"""Fixtures for lapr.data tests: a per-session cache dir, never the user's ~/.cache."""
import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lapr_cache")


@pytest.fixture(autouse=True)
def _isolated_cache(session_cache, monkeypatch):
    monkeypatch.setenv("LAPR_CACHE", str(session_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def bpe8k():
    from lapr.data import load_tokenizer
    return load_tokenizer("gutenberg-bpe-8k")


@pytest.fixture(scope="session")
def gpt2():
    from lapr.data import load_tokenizer
    return load_tokenizer("gpt2")
