"""Run this repo's workflow from tests (shared by the workflow tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def snakemake(*args, cwd=None, timeout=1800):
    """Run this repo's workflow with the test interpreter's snakemake; returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)
