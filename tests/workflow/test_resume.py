"""Resumability: SIGKILL a run mid-job, rerun, and only the killed job is redone.

The tiny profile's `models` target is a chain of 5 jobs (3 `tokens`, then `pretrain` of the two
models, trained for 60 steps here). We kill Snakemake's whole process group while the second `pretrain` runs,
as a lost node or an OOM kill would, then check that
- the killed job left no output: stages write through lapr.provenance.atomic_path / atomic_dir, so a
  result appears whole or not at all (at most a hidden `.NAME.*.tmp` sibling is left behind);
- Snakemake's lock survives a SIGKILL (nothing can remove it): the rerun refuses to start until
  `snakemake --unlock`, which is the documented recovery, and is safe here because we know that no
  other Snakemake is running in this directory;
- the rerun reruns only the killed job and leaves every finished output untouched (same mtime and
  bytes). No `--rerun-incomplete` is needed because the killed job's output is missing; a stage that
  wrote its output in place would leave it marked incomplete and stop the rerun with
  IncompleteFilesException (checked by hand: mkdir of --out at the start of `lapr pretrain` fails this test).
"""
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow_helpers import ROOT, snakemake

MODELS = ("deltanet", "gdn")


def sm_cmd(work, config, *args):
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", config,
            "--directory", str(work), *args]


def pgroup_cmdlines(pgid):
    """Command lines of the live processes of a process group."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ProcessLookupError):
            continue
    return found


def snapshot(paths):
    """path -> (mtime_ns, sha256) of every file under the given files / directories."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files}


def log_text(path):
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.mark.slow
def test_sigkill_mid_job_then_rerun_redoes_only_that_job(tmp_path, config_file):
    # 60 training steps instead of 8: a few seconds of training in which to kill the second job
    # and the tiny profile's first two models only (the chain this test reasons about)
    def edit(cfg):
        cfg["pretrain"].update(steps=60)
        cfg["models"] = {m: cfg["models"][m] for m in MODELS}

    config = str(config_file("tiny", edit))
    work = tmp_path / "run"
    work.mkdir()
    r = work / "results/tiny"
    first_log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(sm_cmd(work, config, "--cores", "1", "models"), stdout=first_log,
                             stderr=subprocess.STDOUT, start_new_session=True)  # own process group: killpg
    pgid = first.pid
    killed = None
    deadline = time.monotonic() + 240
    try:
        while killed is None:
            assert first.poll() is None, "the run ended before it could be killed:\n" + log_text(tmp_path / "first.log")[-3000:]
            assert time.monotonic() < deadline, "no moment with one model trained and the other training"
            done = [m for m in MODELS if (r / "models" / m / "metrics.json").exists()]
            # mid-job: its training loop is running (tqdm's bar is in its log) and so is its process
            training = [m for m in MODELS if m not in done
                        and re.search(r"pretrain \w+:", log_text(r / "logs/pretrain" / f"{m}.log"))]
            if len(done) == 1 and training and any(
                    "-m lapr pretrain" in c and f"models/{training[0]}" in c for c in pgroup_cmdlines(pgid)):
                os.killpg(pgid, signal.SIGKILL)
                killed, finished = training[0], done[0]
            time.sleep(0.02)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            first.wait()
        first_log.close()
    assert first.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while pgroup_cmdlines(pgid) and time.monotonic() < deadline:  # the job died with Snakemake
        time.sleep(0.1)
    assert not pgroup_cmdlines(pgid)

    # No half-written output: the killed job's checkpoint folder is empty (Snakemake creates the folder
    # of its declared output, the weights file, before the job starts) or absent, and whatever the job
    # left is a hidden temporary sibling, never a file at a final output path.
    folder = r / "models" / killed
    assert not folder.exists() or not any(folder.iterdir()), sorted(folder.iterdir())
    leftovers = sorted(p.name for p in (r / "models").iterdir() if p.name not in (finished, killed))
    assert all(re.fullmatch(rf"\.{killed}\..+\.tmp", name) for name in leftovers), leftovers
    assert (r / "models" / finished / "config.json").exists() and (r / "models" / finished / "metrics.json").exists()
    kept = snapshot([*sorted((r / "data").glob("*.npy")), r / "models" / finished,
                     r / "logs/pretrain" / f"{finished}.log"])
    assert len([k for k in kept if k.endswith(".npy")]) == 3 and any(k.endswith(".safetensors") for k in kept)

    # SIGKILL leaves Snakemake's lock behind: the rerun refuses to start until --unlock.
    locked = snakemake("--cores", "1", "--configfile", config, "--directory", str(work), "models", timeout=120)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr, locked.stderr[-2000:]
    unlock = snakemake("--unlock", "--configfile", config, "--directory", str(work), timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-2000:]

    rerun = snakemake("--cores", "1", "--configfile", config, "--directory", str(work), "models", timeout=300)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    ran = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out)
    assert sorted(ran) == ["models", "pretrain"], out[-3000:]  # only the killed job, then the target
    assert f"models/{killed}" in out

    assert snapshot([Path(k) for k in kept]) == kept  # finished outputs untouched
    assert (r / "models" / killed / "metrics.json").exists() and (r / "models" / killed / "config.json").exists()
    again = snakemake("-n", "--configfile", config, "--directory", str(work), "models", timeout=120)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
