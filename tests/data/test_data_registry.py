"""materialize/read_text/verify_all: cache location, checksums, atomic writes, clear errors."""
import hashlib
import lzma
import warnings

import pytest

from lapr.data import DATASETS, materialize, read_text, registry, verify_all


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPR_CACHE", str(tmp_path))
    return tmp_path


def test_materialize_decompresses_into_cache(fresh_cache):
    path = materialize("wikitext2_test_raw")
    assert path == fresh_cache / "wikitext-2-raw" / "wiki.test.raw"
    assert _sha(path) == DATASETS["wikitext2_test_raw"]["sha256"]
    assert [p.name for p in path.parent.iterdir()] == ["wiki.test.raw"]  # no temp files left
    assert materialize("wikitext2_test_raw") == path  # cached


def test_plain_files_served_in_place(fresh_cache):
    path = materialize("piqa_valid_labels")
    assert path.parent.name == "piqa" and fresh_cache not in path.parents
    assert read_text("piqa_valid_labels").split() == [l.strip() for l in path.open()]
    assert set(read_text("piqa_valid_labels").split()) == {"0", "1"}


def test_read_text_is_byte_exact(fresh_cache):
    text = read_text("wikitext2_test_raw")
    assert len(text.encode("utf-8")) == DATASETS["wikitext2_test_raw"]["bytes"]
    assert text.count("\n") == 4358


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_cache_detected_and_rebuilt(fresh_cache, damage):
    path = materialize("arc_challenge_test")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[-1]
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="arc_challenge_test.*sha256 mismatch"):
        again = materialize("arc_challenge_test")
    assert again == path and _sha(path) == DATASETS["arc_challenge_test"]["sha256"]


def test_interrupted_write_leaves_nothing(fresh_cache, monkeypatch):
    real_open = lzma.open

    class Boom:  # yields one chunk, then fails like a killed process / full disk
        def __init__(self, *a, **k):
            self.f, self.n = real_open(*a, **k), 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, size):
            self.n += 1
            if self.n > 1:
                raise OSError("disk full")
            return self.f.read(size)

    monkeypatch.setattr(registry.lzma, "open", Boom)
    with pytest.raises(OSError, match="disk full"):
        materialize("lambada_openai_test")
    folder = fresh_cache / "lambada_openai"
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(registry.lzma, "open", real_open)
    assert _sha(materialize("lambada_openai_test")) == DATASETS["lambada_openai_test"]["sha256"]


def test_shipped_checksum_mismatch_raises(fresh_cache, monkeypatch):
    bad = dict(DATASETS["winogrande_dev"], sha256="0" * 64)
    monkeypatch.setitem(registry.DATASETS, "winogrande_dev", bad)
    with pytest.raises(ValueError, match=r"winogrande_dev.*expected 0{64}"):
        materialize("winogrande_dev")
    assert list((fresh_cache / "winogrande").iterdir()) == []
    plain = dict(DATASETS["piqa_valid_labels"], sha256="f" * 64)
    monkeypatch.setitem(registry.DATASETS, "piqa_valid_labels", plain)
    with pytest.raises(ValueError, match="piqa_valid_labels.*sha256 mismatch"):
        materialize("piqa_valid_labels")


def test_missing_shipped_file_raises(fresh_cache, monkeypatch):
    gone = dict(DATASETS["piqa_valid"], stored="piqa/nope.jsonl.xz")
    monkeypatch.setitem(registry.DATASETS, "piqa_valid", gone)
    with pytest.raises(FileNotFoundError, match=r"piqa_valid.*nope\.jsonl\.xz.*ybisk/piqa"):
        materialize("piqa_valid")
    assert verify_all(["piqa_valid"]) == {"piqa_valid": False}


def test_unknown_name_lists_known():
    with pytest.raises(KeyError, match="wikitext2_test_raw.*gutenberg_manifest.*tokenizer:gpt2"):
        materialize("wikitext103")


def test_verify_all(monkeypatch):
    # the full pass (incl. 100 MB gutenberg_train) is covered by test_data_files; skip it here
    names = [n for n in registry.known_names() if n != "gutenberg_train"]
    assert verify_all(names) == dict.fromkeys(names, True)
    bad = dict(DATASETS["hellaswag_val"], sha256="0" * 64)
    monkeypatch.setitem(registry.DATASETS, "hellaswag_val", bad)
    assert verify_all(["hellaswag_val", "piqa_valid"]) == {"hellaswag_val": False, "piqa_valid": True}
