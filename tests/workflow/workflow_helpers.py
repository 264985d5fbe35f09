"""Run this repo's workflow from tests (shared by the workflow tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def snakemake(*args, cwd=None, timeout=1800):
    """Run this repo's workflow with the test interpreter's snakemake; returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def scheduled(dry_run_stdout: str) -> list[str]:
    """Rule names in a dry run's "Job stats" table, in its order, ending with 'total'."""
    table = dry_run_stdout.split("Job stats:")[1].split("\n\n")[0].strip().splitlines()[2:]
    return [line.split()[0] for line in table]


def set_key(path, value):
    """An edit of a config dict that sets the key at `path` (a list of keys) to `value`."""
    def edit(cfg):
        node = cfg
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit
