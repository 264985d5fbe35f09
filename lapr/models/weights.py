"""A checkpoint's safetensors files: checked before loading, and fingerprinted for provenance.

`check_files` reads each file's header (8-byte length + JSON) and compares the tensor extents it
declares with the file size, so an empty or truncated file is named with its problem instead of
surfacing as a bare SafetensorError. `check_finite` refuses a loaded model with NaN / inf weights.

`fingerprint` identifies the weights, so that files derived from one model (calib.pt, heads.csv)
are refused for another (`check_source`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
BLOCKS, BLOCK = 64, 4096  # fingerprint samples: 64 blocks of 4 KiB per file


def weight_files(model_dir) -> list[Path]:
    """The safetensors files of a checkpoint directory (the shards of its index, else
    model.safetensors); [] when it has none (e.g. pytorch_model.bin only)."""
    model_dir = Path(model_dir)
    shards = _weight_map(model_dir)
    if shards is not None:
        return [model_dir / n for n in sorted(set(shards.values()))]
    return [model_dir / SINGLE] if (model_dir / SINGLE).exists() else []


def _weight_map(model_dir: Path) -> dict | None:
    """tensor name -> shard file of a sharded checkpoint's index; None without an index."""
    index = model_dir / INDEX
    if not index.is_file():
        return None
    try:
        shards = json.loads(index.read_text())["weight_map"]
        if not isinstance(shards, dict):
            raise TypeError("weight_map is not an object")
        return shards
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None


def read_header(path) -> tuple[bytes, int]:
    """(header bytes, file size) of a safetensors file whose declared tensors fit the file exactly;
    ValueError naming the file and the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file missing")
    size = path.stat().st_size
    bad = f"{path}: truncated or corrupt safetensors file"
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a safetensors file")
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise ValueError(f"{bad} ({size} bytes, too short for its header)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{bad} (unreadable header: {type(e).__name__}: {e})") from None
    if 8 + n + end != size:
        raise ValueError(f"{bad} (its header declares {8 + n + end} bytes, the file has {size})")
    return raw, size


def check_files(model_dir) -> list[Path]:
    """Every safetensors file of the checkpoint, each checked by read_header."""
    files = weight_files(model_dir)
    for path in files:
        read_header(path)
    return files


def fingerprint(model_dir) -> str | None:
    """sha256 over each weights file's header, size and 64 evenly spaced 4 KiB blocks of its
    tensor data; None for a checkpoint without safetensors files.

    Why not a hash of the whole files: that reads every byte (seconds per GB for the paper
    models) in each job that checks an input's source. The header pins tensor names, dtypes and
    shapes (a pruned or differently sized model differs there), and two models of the same shape
    trained separately differ in every sampled block; it depends only on the contents, so copies
    and moves of a checkpoint (new mtime, new path) keep it.
    """
    files = weight_files(model_dir)
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        raw, size = read_header(path)
        h.update(len(raw).to_bytes(8, "little") + raw + size.to_bytes(8, "little"))
        start = 8 + len(raw)
        span = size - start
        with open(path, "rb") as f:
            if span <= BLOCKS * BLOCK:
                f.seek(start)
                h.update(f.read())
                continue
            for i in range(BLOCKS):
                f.seek(start + i * (span - BLOCK) // (BLOCKS - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()


def tensor_file(model_dir, name: str) -> Path:
    """The weights file that stores tensor `name` (the checkpoint directory if unknown)."""
    model_dir = Path(model_dir)
    shards = _weight_map(model_dir)
    if shards is not None:
        return model_dir / shards[name] if name in shards else model_dir
    return model_dir / SINGLE if (model_dir / SINGLE).is_file() else model_dir


def check_finite(model, model_dir) -> None:
    """ValueError naming the file and the first parameter that holds NaN or inf."""
    import torch

    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            bad = int((~torch.isfinite(p)).sum())
            raise ValueError(f"{tensor_file(model_dir, name)}: tensor {name} holds {bad} non-finite "
                             f"value(s) (NaN / inf) of {p.numel()}: corrupt weights")


def check_source(recorded_model, recorded_fp, model_dir, what: str) -> None:
    """Refuse `what` (a file derived from a model: calib.pt, heads.csv) when it was recorded for
    another model than `model_dir`: by weights fingerprint when both are known; else (files
    written before fingerprints were recorded, checkpoints without safetensors) when the
    recorded model path is another existing checkpoint whose weights differ."""
    model_dir = Path(model_dir)
    mine = fingerprint(model_dir)
    if recorded_fp and mine:
        if recorded_fp == mine:
            return
    else:
        if not recorded_model:
            return
        other = Path(recorded_model)
        if other.resolve() == model_dir.resolve() or not (other / "config.json").is_file():
            return  # same path, or the recorded model is gone: nothing to compare with
        recorded_fp = fingerprint(other)
        if recorded_fp is not None and recorded_fp == mine:
            return  # a copy of the recorded model
    def named(path, fp):
        return f"{path} (weights {fp[:12]})" if fp else str(path)

    raise ValueError(f"{what} was recorded for model {named(recorded_model, recorded_fp)}, not for --model "
                     f"{named(model_dir, mine)}: use the file made from this model")


__all__ = ["check_files", "check_finite", "check_source", "fingerprint", "read_header", "tensor_file",
           "weight_files"]
