"""The bench rules' device (cpu | cuda) comes from the config alone, never from the machine that
parses the workflow: `device: cuda` -> cuda, `cpu` -> cpu, `auto` -> cpu (file names are fixed at
parse time, possibly on a GPU-less login node); a bench section's own `device` wins. Checked with
and without an `nvidia-smi` on PATH. A CPU benchmark of a local run takes every core (`threads` =
--cores), so that no other job runs beside it."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from workflow_helpers import ROOT, ahead, set_key

# one op benchmark, and per trained model an unpruned and a pruned model benchmark
TINY = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
N_MODELS = len(TINY["models"])
CORES = TINY["threads"] + 2  # more than any other job's threads


def _path_without_nvidia_smi() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "nvidia-smi")))


def _dry_run(config, workdir, fake_smi_dir=None):
    path = _path_without_nvidia_smi()
    if fake_smi_dir is not None:
        fake_smi_dir.mkdir(exist_ok=True)
        smi = fake_smi_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-fake)'\n")
        smi.chmod(0o755)
        path = f"{fake_smi_dir}{os.pathsep}{path}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "-p", "--configfile", str(config),
           "--directory", str(workdir), "--cores", str(CORES), "benchmarks"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": path})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def _bench_jobs(stdout):
    """(rule, output, settings passed to the stage, gpu resource) of the bench jobs of a dry run; checks
    each job's threads: every core on the CPU, the profile's threads on a GPU."""
    jobs = []
    for rule, body in re.findall(r"^rule (bench_\w+):\n(.*?)(?=^\[|\Z)", stdout, flags=re.M | re.S):
        out = re.search(r"^\s+output: (.*)$", body, re.M).group(1)
        settings = json.loads(re.search(r"--settings '([^']*)'", body).group(1))
        gpu = int(re.search(r"resources:.*\bgpu=(\d+)", body).group(1))
        threads = re.search(r"^\s+threads: (\d+)$", body, re.M)
        assert int(threads.group(1) if threads else 1) == (TINY["threads"] if gpu else CORES), body
        assert f"OMP_NUM_THREADS={TINY['threads']} " in body  # the benchmark itself: the profile's threads
        jobs.append((rule, out, settings, gpu))
    return jobs


def _tiny_config(tmp_path, edit):
    """The tiny profile with `edit` applied, written under tmp_path (as the config_file fixture does)."""
    cfg = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
    edit(cfg)
    path = tmp_path / "tiny-edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _section_wins(cfg):
    cfg["device"] = "auto"
    cfg["bench"]["ops"]["device"] = "cuda"


DEVICES = [("auto", "cpu"), ("cpu", "cpu"), ("cuda", "cuda")]


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Every test's dry run, two at a time ahead of the tests: (device, smi) or "section" -> Future of stdout."""
    calls = {}
    for device, _ in DEVICES:
        for smi in (False, True):
            tmp = tmp_path_factory.mktemp("bench_device")
            config = _tiny_config(tmp, set_key(["device"], device))
            calls[device, smi] = (lambda config=config, tmp=tmp, smi=smi:
                                  _dry_run(config, tmp / "work", tmp / "bin" if smi else None))
    tmp = tmp_path_factory.mktemp("bench_device")
    config = _tiny_config(tmp, _section_wins)
    calls["section"] = lambda: _dry_run(config, tmp / "work")
    with ahead(calls) as futures:
        yield futures


@pytest.mark.parametrize("smi", [False, True], ids=["no-nvidia-smi", "fake-nvidia-smi"])
@pytest.mark.parametrize("device,expected", DEVICES)
def test_bench_file_names_follow_the_config(device, expected, smi, dry_runs):
    jobs = _bench_jobs(dry_runs[device, smi].result())
    assert {rule for rule, *_ in jobs} == {"bench_ops", "bench_model"} and len(jobs) == 1 + 2 * N_MODELS
    for rule, out, settings, gpu in jobs:
        assert out.endswith(f"_{expected}.csv"), out
        assert settings["device"] == expected  # the stage measures what the file name says
        assert gpu == (expected == "cuda")


def test_bench_section_device_wins(dry_runs):
    jobs = _bench_jobs(dry_runs["section"].result())  # _section_wins: device auto, bench.ops.device cuda
    assert len(jobs) == 1 + 2 * N_MODELS
    for rule, out, settings, gpu in jobs:
        expected = "cuda" if rule == "bench_ops" else "cpu"
        assert out.endswith(f"_{expected}.csv") and settings["device"] == expected and gpu == (expected == "cuda")


def _stage_devices(stdout):
    """{stage: [(device seen by the job)]} of the jobs whose stage takes its device in --settings."""
    found = {}
    for stage, rest in re.findall(r"-m lapr (evaluate|heads|mqar-train|mqar-eval) (.*)", stdout):
        settings = json.loads(re.search(r"--settings '([^']*)'", rest).group(1))
        found.setdefault(stage, []).append(settings.get("device"))
    return found


@pytest.mark.parametrize("device,expected", [("auto", None), ("cpu", "cpu"), ("cuda", "cuda")])
def test_top_level_device_reaches_every_stage(device, expected, config_file, tmp_path):
    """`device: cpu` holds for evaluate, heads and the MQAR stages too (they take the device in their
    settings and would otherwise pick cuda on a GPU machine); `auto` leaves the choice to them."""
    config = config_file("tiny", set_key(["device"], device))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "-p", "--configfile", str(config),
           "--directory", str(tmp_path / "work")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PATH": _path_without_nvidia_smi()})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    found = _stage_devices(res.stdout)
    assert set(found) == {"evaluate", "heads", "mqar-train", "mqar-eval"}, set(found)
    assert all(d == expected for devices in found.values() for d in devices), found
