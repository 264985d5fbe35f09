"""Rebuild `lapr/data/files/` and its `manifest.json` from a source folder.

The suite must run offline and stand alone, so every dataset it evaluates on is
shipped inside the package. This script is how those files were made; it is
kept so the shipped bytes can be reproduced and audited:

    python -m lapr.data.pack /path/to/shared/data   # copy/compress the sources
    python -m lapr.data.pack --tokenizer            # retrain gutenberg-bpe-8k (needs `tokenizers`)

Text files are xz-compressed (preset 9|extreme) when that saves at least 10%;
files already stored as `.xz` are copied byte for byte. The manifest records the
sha256 of the *decompressed* bytes (what users read) and of the stored bytes
(so a shipped file can be checked without decompressing it). Stdlib only.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import sys
from pathlib import Path

FILES_DIR = Path(__file__).resolve().parent / "files"
MANIFEST = FILES_DIR / "manifest.json"
XZ_PRESET = 9 | lzma.PRESET_EXTREME
MIN_SAVING = 0.10  # compress only where it pays...
MIN_BYTES = 64_000  # ...and keep small files (labels, manifests) plain and greppable

# name -> (relative path of the plain file, licence, hub fallback or None)
DATASETS = {
    "wikitext2_test_raw": ("wikitext-2-raw/wiki.test.raw", "CC BY-SA 3.0 (and GFDL)",
                           {"path": "Salesforce/wikitext", "name": "wikitext-2-raw-v1", "split": "test"}),
    "lambada_openai_test": ("lambada_openai/lambada_test.jsonl", "CC BY 4.0 (OpenAI preprocessing: MIT)",
                            {"path": "EleutherAI/lambada_openai", "name": "default", "split": "test"}),
    "piqa_valid": ("piqa/valid.jsonl", "AFL 3.0",
                   {"path": "ybisk/piqa", "name": None, "split": "validation"}),
    "piqa_valid_labels": ("piqa/valid-labels.lst", "AFL 3.0",
                          {"path": "ybisk/piqa", "name": None, "split": "validation"}),
    "hellaswag_val": ("hellaswag/hellaswag_val_full.txt", "MIT",
                      {"path": "Rowan/hellaswag", "name": None, "split": "validation"}),
    "winogrande_dev": ("winogrande/winogrande_dev_llmfoundry.jsonl", "CC-BY (AllenAI); conversion Apache-2.0",
                       {"path": "allenai/winogrande", "name": "winogrande_xl", "split": "validation"}),
    "arc_easy_test": ("arc/arc_easy_test_llmfoundry.jsonl", "CC BY-SA 4.0",
                      {"path": "allenai/ai2_arc", "name": "ARC-Easy", "split": "test"}),
    "arc_challenge_test": ("arc/arc_challenge_test_llmfoundry.jsonl", "CC BY-SA 4.0",
                           {"path": "allenai/ai2_arc", "name": "ARC-Challenge", "split": "test"}),
    "gutenberg_train": ("gutenberg/train.txt", "Public domain in the US (Project Gutenberg)", None),
    "gutenberg_valid": ("gutenberg/valid.txt", "Public domain in the US (Project Gutenberg)", None),
    "gutenberg_manifest": ("gutenberg/manifest.tsv", "metadata (lapr)", None),
}
# Shipped alongside, not a dataset: the PIQA data README carries its licence statement.
EXTRA_FILES = ["piqa/README.piqa.md"]

TOKENIZERS = {
    "gpt2": ("tokenizers/gpt2/tokenizer.json", "MIT (openai/gpt-2)",
             {"path": "openai-community/gpt2", "name": None, "split": None}),
    # Trained by lapr.data.tokenizer.train_tokenizer; shipped plain (small, reviewable).
    "gutenberg-bpe-8k": ("tokenizers/gutenberg-bpe-8k/tokenizer.json",
                         "MIT (lapr); trained on public-domain text", None),
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, decompress: bool = False) -> tuple[str, int]:
    """sha256 and byte count of a file, optionally of its xz-decompressed content."""
    h, n = hashlib.sha256(), 0
    opener = lzma.open if decompress else open
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _ship(rel: str, source: Path) -> None:
    """Copy or compress one file from `source` into FILES_DIR (no-op if it is already there)."""
    plain, packed = source / rel, source / (rel + ".xz")
    if packed.exists():  # already xz: keep the bytes as they are
        dest = FILES_DIR / (rel + ".xz")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(packed, dest)
        return
    if not plain.exists():
        raise FileNotFoundError(f"no source for {rel} under {source}")
    data = plain.read_bytes()
    xz = lzma.compress(data, preset=XZ_PRESET)
    if len(data) >= MIN_BYTES and len(xz) <= (1 - MIN_SAVING) * len(data):
        _write_atomic(FILES_DIR / (rel + ".xz"), xz)
        (FILES_DIR / rel).unlink(missing_ok=True)
    else:
        _write_atomic(FILES_DIR / rel, data)
        (FILES_DIR / (rel + ".xz")).unlink(missing_ok=True)


def entry(rel: str, licence: str, hub: dict | None) -> dict:
    """Manifest entry for a file already in FILES_DIR (plain or .xz)."""
    if (FILES_DIR / (rel + ".xz")).exists():
        stored, compression = rel + ".xz", "xz"
    elif (FILES_DIR / rel).exists():
        stored, compression = rel, None
    else:
        raise FileNotFoundError(f"{FILES_DIR / rel}(.xz) missing")
    sha, size = sha256_file(FILES_DIR / stored, decompress=compression == "xz")
    stored_sha, stored_size = sha256_file(FILES_DIR / stored)
    return {"path": rel, "stored": stored, "compression": compression,
            "sha256": sha, "bytes": size, "stored_sha256": stored_sha,
            "stored_bytes": stored_size, "licence": licence, "hub": hub}


def write_manifest() -> dict:
    manifest = {
        "version": 1,
        "note": "sha256/bytes are of the decompressed file; stored_* of the shipped file",
        "datasets": {n: entry(*spec) for n, spec in DATASETS.items()},
        "tokenizers": {n: entry(*spec) for n, spec in TOKENIZERS.items()
                       if (FILES_DIR / spec[0]).exists() or (FILES_DIR / (spec[0] + ".xz")).exists()},
    }
    _write_atomic(MANIFEST, (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode())
    return manifest


def pack(source: Path) -> dict:
    for rel, _, _ in DATASETS.values():
        _ship(rel, source)
    for rel in EXTRA_FILES:
        dest = FILES_DIR / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, dest)
    _ship(TOKENIZERS["gpt2"][0], source)
    return write_manifest()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--tokenizer" in args:
        from lapr.data.tokenizer import train_tokenizer

        print(f"trained {train_tokenizer()}")
        m = write_manifest()
    else:
        m = pack(Path(args[0] if args else "/work/shared/data"))
    total = sum(p.stat().st_size for p in FILES_DIR.rglob("*") if p.is_file())
    for name, e in {**m["datasets"], **m["tokenizers"]}.items():
        print(f"{name:24s} {e['stored']:48s} {e['stored_bytes']:>10,d} <- {e['bytes']:>11,d}")
    print(f"total shipped: {total / 1e6:.2f} MB")
