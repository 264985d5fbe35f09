"""Run this repo's workflow from tests (shared by the workflow tests)."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


@contextmanager
def ahead(calls: dict, workers: int = 2):
    """Start `calls` (key -> function of no arguments, e.g. one `snakemake -n`) in `workers` threads,
    in order, and yield key -> Future; each test takes its own `.result()` and asserts on it as before.
    A dry run is a second Python process that spends seconds importing and parsing while the test
    process waits, so the next one starting meanwhile uses the machine's other core. Calls not yet
    started when the block ends are cancelled; running ones are waited for."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(call) for key, call in calls.items()}
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()
