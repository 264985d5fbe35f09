"""Shipped files: look up, decompress into a cache, verify by sha256.

Everything the suite reads is shipped in `lapr/data/files/` (see SOURCES.md
there) and described by `files/manifest.json`. Large text is stored xz-compressed;
`materialize` turns an entry into a plain, checksum-verified file in a cache dir
(`$LAPR_CACHE`, else `~/.cache/lapr/data`), writing via a temp file and
`os.replace` so concurrent workers never see a half-written file. Stdlib only, so
importing it is cheap.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import tempfile
import warnings
from pathlib import Path

from lapr.provenance import open_modes

FILES_DIR = Path(__file__).resolve().parent / "files"
MANIFEST_PATH = FILES_DIR / "manifest.json"
TOKENIZER_PREFIX = "tokenizer:"  # materialize("tokenizer:gpt2") reaches tokenizer files

_MANIFEST = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
DATASETS: dict = _MANIFEST["datasets"]
TOKENIZERS: dict = _MANIFEST["tokenizers"]

# Files already hashed in this process, keyed by (path, size, mtime, expected sha256)
# so a rewrite or corruption after the check is still caught on the next call.
_verified: set[tuple[str, int, int, str]] = set()


def cache_dir() -> Path:
    return Path(os.environ.get("LAPR_CACHE") or Path.home() / ".cache" / "lapr" / "data")


def known_names() -> list[str]:
    return list(DATASETS) + [TOKENIZER_PREFIX + n for n in TOKENIZERS]


def entry(name: str) -> dict:
    """Manifest entry for a dataset name or `tokenizer:<name>`."""
    if name in DATASETS:
        return DATASETS[name]
    if name.startswith(TOKENIZER_PREFIX) and name[len(TOKENIZER_PREFIX):] in TOKENIZERS:
        return TOKENIZERS[name[len(TOKENIZER_PREFIX):]]
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(known_names())}")


def shipped_path(name: str) -> Path:
    """Path of the file as shipped (possibly .xz); raises if it is missing."""
    e = entry(name)
    path = FILES_DIR / e["stored"]
    if not path.is_file():
        hub = e.get("hub")
        hint = f" (online fallback: datasets.load_dataset{tuple(v for v in hub.values() if v)})" if hub else ""
        raise FileNotFoundError(f"dataset {name!r}: shipped file {path} is missing{hint}; "
                                "reinstall lapr or rebuild with `python -m lapr.data.pack`")
    return path


def _sha256(path: Path, decompress: bool = False) -> str:
    h = hashlib.sha256()
    with (lzma.open if decompress else open)(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path, sha256: str) -> tuple[str, int, int, str]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns, sha256


def _check(name: str, path: Path, expected: str, decompress: bool = False) -> None:
    if _stamp(path, expected) in _verified:
        return
    actual = _sha256(path, decompress)
    if actual != expected:
        raise ValueError(f"dataset {name!r}: sha256 mismatch for {path}: expected {expected}, got {actual}")
    _verified.add(_stamp(path, expected))


def materialize(name: str) -> Path:
    """Return the path of the plain, sha256-verified file for `name`.

    Uncompressed shipped files are returned in place. Compressed ones are
    decompressed once into `cache_dir()`; a cached copy that fails its checksum
    (corrupted, truncated, edited) is reported with a warning and rebuilt. A
    shipped file that fails its checksum raises ValueError.
    """
    e = entry(name)
    src = shipped_path(name)
    if e["compression"] is None:
        _check(name, src, e["sha256"])
        return src
    if e["compression"] != "xz":
        raise ValueError(f"dataset {name!r}: unsupported compression {e['compression']!r}")

    dest = cache_dir() / e["path"]
    if dest.is_file():
        try:
            _check(name, dest, e["sha256"])
            return dest
        except ValueError as err:
            warnings.warn(f"{err}; rebuilding the cached copy from {src}", stacklevel=2)

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, lzma.open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != e["sha256"]:
            raise ValueError(f"dataset {name!r}: shipped file {src} decompresses to sha256 "
                             f"{h.hexdigest()}, expected {e['sha256']}; the package is corrupted")
        open_modes(Path(tmp))  # mkstemp's 0600 would keep a shared $LAPR_CACHE to its first user
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _verified.add(_stamp(dest, e["sha256"]))
    return dest


def read_bytes(name: str) -> bytes:
    return materialize(name).read_bytes()


def read_text(name: str) -> str:
    """Decoded UTF-8 text, byte-exact (no newline translation)."""
    return read_bytes(name).decode("utf-8")


def verify_all(names: list[str] | None = None) -> dict[str, bool]:
    """Check shipped files (all by default; decompressing .xz) against the manifest: name -> ok."""
    result = {}
    for name in known_names() if names is None else names:
        e = entry(name)
        try:
            path = shipped_path(name)
            ok = _sha256(path) == e["stored_sha256"]
            if ok and e["compression"] == "xz":
                ok = _sha256(path, decompress=True) == e["sha256"]
            result[name] = ok
        except (FileNotFoundError, OSError, lzma.LZMAError):
            result[name] = False
    return result
