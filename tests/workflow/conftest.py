import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def snakemake(*args, cwd=None, timeout=1200):
    """Run this repo's workflow with the test interpreter's snakemake; returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def config_file(tmp_path):
    """Write a modified copy of a profile config; returns its path."""
    def make(profile="tiny", edit=None):
        cfg = yaml.safe_load((ROOT / "workflow" / "config" / f"{profile}.yaml").read_text())
        if edit:
            edit(cfg)
        path = tmp_path / f"{profile}-edited.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path
    return make
