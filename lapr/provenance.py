"""Provenance and atomic outputs: every result says where it came from, and appears whole or not at all."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "triton", "fla-core", "flash-linear-attention", "transformers", "lm-eval",
            "snakemake", "numpy", "pandas")


def git_commit() -> str:
    if os.environ.get("LAPR_GIT_COMMIT"):
        return os.environ["LAPR_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def device_info(device=None) -> dict:
    import torch

    info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads()}
    dev = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
        idx = dev.index or 0 if dev is not None else 0
        info.update(device="cuda", gpu=torch.cuda.get_device_name(idx), cuda=torch.version.cuda)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    else:
        info["device"] = "cpu"
    return info


def record(settings: dict | None = None, seed: int | None = None, device=None, **extra) -> dict:
    """The provenance block stored beside every result."""
    return {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "seed": seed, "settings": settings or {},
            "versions": versions(), "hardware": device_info(device), **extra}


def umask() -> int:
    """The process umask. Reading it means setting it: for that instant a file created by another
    thread gets the usual 022; lapr's stages create files from one thread."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_modes(path: Path) -> None:
    """Give `path` (and, for a folder, everything in it) the modes the umask gives a normally
    created file or folder. mkstemp / mkdtemp make them 0600 / 0700 whatever the umask, and so
    do some writers inside a temporary folder (safetensors writes 0600 files): the results were
    unreadable to the group on the shared file systems the SLURM profile assumes."""
    mask = umask()
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        if p.is_symlink():
            continue
        full = 0o777 if p.is_dir() or p.stat().st_mode & 0o100 else 0o666
        os.chmod(p, full & ~mask)


def _tmp_pattern(path: Path, suffix: str) -> re.Pattern:
    # mkstemp / mkdtemp names: prefix + 8 characters of [a-z0-9_] + suffix
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}\.tmp")


def clear_stale(path: Path, suffix: str = "") -> None:
    """Remove the temporaries that earlier, killed writers of `path` left beside it.

    Only temporaries of this exact target (the pattern `_tmp_beside` / atomic_dir use), removed
    when a new writer of that target starts: Snakemake never runs two jobs that write the same
    output (and its lock keeps a second Snakemake out of the directory), so a temporary of the
    target we are about to write belongs to no live job."""
    if not path.parent.is_dir():
        return
    pattern = _tmp_pattern(path, suffix)
    for p in [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _tmp_beside(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary file path beside `path`; on success it replaces `path` in one step, with
    the modes of a file created under the process umask."""
    path = Path(path)
    tmp = _tmp_beside(path, path.suffix)
    try:
        yield tmp
        open_modes(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary directory beside `path`; on success it is renamed to `path`, its files
    and folders given the modes of ones created under the process umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        open_modes(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_table(path: str | Path, df) -> Path:
    """CSV or parquet by suffix, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


def save_figure(fig, stem: str | Path, dpi: int = 200, **savefig) -> list[Path]:
    """Write `fig` as <stem>.png and <stem>.pdf, each atomically; returns the paths."""
    paths = []
    for ext in ("png", "pdf"):
        path = Path(f"{stem}.{ext}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, **savefig)
        paths.append(path)
    return paths
