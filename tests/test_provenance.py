"""Atomic outputs (lapr.provenance): modes follow the umask, and killed writers' temporaries go."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lapr import provenance
from lapr.data.streams import save_tokens

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=[0o002, 0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_modes_follow_the_umask(tmp_path, umask):
    provenance.write_json(tmp_path / "a.json", {"x": 1})
    save_tokens(tmp_path / "t.npy", np.arange(5))
    with provenance.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.safetensors").write_bytes(b"x")
        os.chmod(tmp / "sub" / "w.safetensors", 0o600)   # as safetensors writes its files
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o700)
    assert mode(tmp_path / "a.json") == mode(tmp_path / "t.npy") == 0o666 & ~umask
    assert mode(tmp_path / "ckpt") == mode(tmp_path / "ckpt" / "sub") == 0o777 & ~umask
    assert mode(tmp_path / "ckpt" / "sub" / "w.safetensors") == 0o666 & ~umask
    assert mode(tmp_path / "ckpt" / "run.sh") == 0o777 & ~umask   # executable stays executable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "ckpt", "t.npy"]


KILLED = """
import os, sys
from lapr import provenance
with provenance.atomic_dir(sys.argv[1]) as tmp:
    (tmp / "half.bin").write_bytes(b"x")
    with provenance.atomic_path(sys.argv[2]) as f:
        f.write_text("half")
        os._exit(9)   # killed: no finally, no clean-up
"""


def test_a_killed_writers_temporaries_go_when_its_target_is_written_again(tmp_path):
    out_dir, out_csv = tmp_path / "0.5", tmp_path / "0.5.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED, str(out_dir), str(out_csv)], env=env)
    assert proc.returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(name.startswith((".0.5.", ".0.5.csv.")) and name.endswith(".tmp")
                                  for name in left), left
    other = tmp_path / ".0.5.csv.keep.tmp"   # not a name our writers make: left alone
    other.write_text("")

    with provenance.atomic_dir(out_dir) as tmp:   # the directory's temporary only
        (tmp / "done").write_text("")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["0.5", ".0.5.csv.keep.tmp", *(n for n in left if n.startswith(".0.5.csv."))])
    provenance.write_json(out_csv, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".0.5.csv.keep.tmp", "0.5", "0.5.csv"]
