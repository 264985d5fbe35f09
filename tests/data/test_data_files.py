"""The shipped files are exactly what the manifest and SOURCES.md say (hashed here independently)."""
import hashlib
import json
import lzma
from pathlib import Path

import lapr.data

FILES = Path(lapr.data.__file__).parent / "files"
MANIFEST = json.loads((FILES / "manifest.json").read_text())
NAMES = ["wikitext2_test_raw", "lambada_openai_test", "piqa_valid", "piqa_valid_labels", "hellaswag_val",
         "winogrande_dev", "arc_easy_test", "arc_challenge_test", "gutenberg_train", "gutenberg_valid",
         "gutenberg_manifest"]
ENTRIES = {**MANIFEST["datasets"], **{f"tokenizer:{k}": v for k, v in MANIFEST["tokenizers"].items()}}


def _digest(path, decompress):
    data = (lzma.open if decompress else open)(path, "rb").read()
    return hashlib.sha256(data).hexdigest(), len(data)


def test_dataset_names_and_public_dict():
    assert list(MANIFEST["datasets"]) == NAMES
    assert lapr.data.DATASETS == MANIFEST["datasets"]
    assert set(MANIFEST["tokenizers"]) == {"gpt2", "gutenberg-bpe-8k"}


def test_every_shipped_file_matches_manifest():
    for name, e in ENTRIES.items():
        stored = FILES / e["stored"]
        assert stored.is_file(), name
        assert _digest(stored, False) == (e["stored_sha256"], e["stored_bytes"]), name
        assert e["stored"] == e["path"] + (".xz" if e["compression"] == "xz" else ""), name
        assert _digest(stored, e["compression"] == "xz") == (e["sha256"], e["bytes"]), name
        assert e["licence"], name


def test_source_hashes_documented_and_known_values():
    sources = (FILES / "SOURCES.md").read_text()
    for name, e in ENTRIES.items():
        if name != "tokenizer:gutenberg-bpe-8k":  # retrainable; its hash lives in manifest.json
            assert e["sha256"] in sources, name
    # canonical hashes published for these files (see SOURCES.md)
    assert ENTRIES["wikitext2_test_raw"]["sha256"].startswith("173c87a5")
    assert ENTRIES["lambada_openai_test"]["sha256"].startswith("4aa8d02c")


def test_no_stray_files_and_size_budget():
    listed = {e["stored"] for e in ENTRIES.values()} | {"manifest.json", "SOURCES.md", "piqa/README.piqa.md"}
    present = {p.relative_to(FILES).as_posix() for p in FILES.rglob("*") if p.is_file()}
    assert present == listed
    total = sum((FILES / p).stat().st_size for p in present)
    assert total < 40e6, f"{total / 1e6:.1f} MB shipped"
