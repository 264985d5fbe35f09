"""GPU pinning (`python -m lapr.gpus -- CMD`), tested on CPU with LAPR_GPUS standing in for devices."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from lapr import gpus
from workflow_helpers import ROOT, snakemake

# Held by a wrapped command: write the device it was given, then wait for a release file.
HOLD = """import os, sys, time, pathlib
d, name = pathlib.Path(sys.argv[1]), sys.argv[2]
tmp = d / (name + '.tmp'); tmp.write_text(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')); tmp.rename(d / (name + '.dev'))
while not (d / (name + '.go')).exists():
    time.sleep(0.05)
"""


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "LAPR_GPUS", "LAPR_GPU_LOCKDIR", "SLURM_JOB_ID")}
    return {**env, **extra}


def wrapped(cmd, lockdir, gpus_="0,1", *opts, env=None):
    env = clean_env(LAPR_GPUS=gpus_) if env is None else env
    return subprocess.Popen([sys.executable, "-m", "lapr.gpus", "--lockdir", str(lockdir), "--poll", "0.05",
                             *opts, "--", *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def hold(tmp_path, name, *opts, gpus_="0,1"):
    return wrapped([sys.executable, "-c", HOLD, str(tmp_path), name], tmp_path / "locks", gpus_, *opts)


def device_of(tmp_path, name, proc, timeout=20.0):
    path = tmp_path / f"{name}.dev"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} got no device within {timeout} s")
        time.sleep(0.05)
    return path.read_text()


def release(tmp_path, name, proc):
    (tmp_path / f"{name}.go").touch()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err


def test_concurrent_jobs_get_distinct_devices_and_a_third_waits(tmp_path):
    a, b = hold(tmp_path, "a"), hold(tmp_path, "b")
    try:
        dev_a, dev_b = device_of(tmp_path, "a", a), device_of(tmp_path, "b", b)
        assert {dev_a, dev_b} == {"0", "1"}
        c = hold(tmp_path, "c")
        time.sleep(2.0)  # ample for c to start and try both locks
        assert c.poll() is None and not (tmp_path / "c.dev").exists(), "third job ran while both devices were held"
        err_a = release(tmp_path, "a", a)
        assert f"CUDA_VISIBLE_DEVICES={dev_a}" in err_a  # the wrapper logs the device it took
        assert device_of(tmp_path, "c", c) == dev_a  # c took the device a freed
        assert (tmp_path / "locks" / f"gpu{dev_a}.lock").exists()
        release(tmp_path, "c", c)
        release(tmp_path, "b", b)
    finally:
        for p in (a, b):
            p.kill()


def test_slots_spread_jobs_then_share_devices(tmp_path):
    """Two slots per device: jobs go to the emptiest device first; a fifth waits for a free slot."""
    names = ["a", "b", "c", "d"]
    procs = {}
    try:
        for n in names:  # one after another, so each sees the previous ones' locks
            procs[n] = hold(tmp_path, n, "--slots", "2")
            device_of(tmp_path, n, procs[n])
        devs = {n: device_of(tmp_path, n, procs[n]) for n in names}
        assert devs["a"] != devs["b"]  # spread before sharing
        assert sorted(devs.values()) == ["0", "0", "1", "1"]
        procs["e"] = hold(tmp_path, "e", "--slots", "2")
        time.sleep(2.0)
        assert procs["e"].poll() is None and not (tmp_path / "e.dev").exists(), "fifth job ran in four slots"
        release(tmp_path, "c", procs["c"])
        assert device_of(tmp_path, "e", procs["e"]) == devs["c"]
        for n in ("a", "b", "d", "e"):
            release(tmp_path, n, procs[n])
    finally:
        for p in procs.values():
            p.kill()


def test_whole_device_waits_for_every_slot(tmp_path):
    """`--whole` takes all slots of one device: it waits while each device has a job, and then keeps
    single-slot jobs off its device until it ends."""
    a = hold(tmp_path, "a", "--slots", "2")
    b = hold(tmp_path, "b", "--slots", "2")
    w = c = None
    try:
        dev_a, dev_b = device_of(tmp_path, "a", a), device_of(tmp_path, "b", b)
        w = hold(tmp_path, "w", "--slots", "2", "--whole")
        time.sleep(2.0)
        assert w.poll() is None and not (tmp_path / "w.dev").exists(), "whole-device job shared a device"
        release(tmp_path, "a", a)
        assert device_of(tmp_path, "w", w) == dev_a
        c = hold(tmp_path, "c", "--slots", "2")
        assert device_of(tmp_path, "c", c) == dev_b  # not on w's device, though that has 2 lock files
        err = release(tmp_path, "w", w)
        assert "2 of 2 slot(s)" in err
        release(tmp_path, "c", c)
        release(tmp_path, "b", b)
    finally:
        for p in (a, b, w, c):
            if p is not None:
                p.kill()


def test_killed_job_frees_its_device(tmp_path):
    a = hold(tmp_path, "a", gpus_="3")
    assert device_of(tmp_path, "a", a) == "3"
    a.send_signal(signal.SIGKILL)  # the wrapper exec'd CMD: same pid, and it held the lock
    a.wait(timeout=10)
    b = hold(tmp_path, "b", "--timeout", "10", gpus_="3")
    try:
        assert device_of(tmp_path, "b", b) == "3"
        release(tmp_path, "b", b)
    finally:
        b.kill()


def test_timeout_gives_up_without_running_the_command(tmp_path):
    a = hold(tmp_path, "a", gpus_="0")
    try:
        device_of(tmp_path, "a", a)
        t0 = time.monotonic()
        b = hold(tmp_path, "b", "--timeout", "0.5", gpus_="0")
        _, err = b.communicate(timeout=20)
        assert b.returncode == gpus.EX_TEMPFAIL and "no free GPU" in err
        assert time.monotonic() - t0 >= 0.5
        assert not (tmp_path / "b.dev").exists()
        release(tmp_path, "a", a)
    finally:
        a.kill()


@pytest.mark.parametrize("code", [0, 7])
def test_exit_code_propagates(tmp_path, code):
    p = wrapped([sys.executable, "-c", f"import sys; print('ran'); sys.exit({code})"], tmp_path / "locks")
    out, err = p.communicate(timeout=20)
    assert p.returncode == code and out == "ran\n", err


def test_missing_command_is_127(tmp_path):
    p = wrapped(["/nonexistent/lapr-no-such-command"], tmp_path / "locks")
    _, err = p.communicate(timeout=20)
    assert p.returncode == 127 and "cannot run" in err


SHOW = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"


@pytest.mark.parametrize("env", [{"LAPR_GPUS": ""}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"}],
                         ids=["LAPR_GPUS-empty", "CVD-empty", "CVD-minus-one"])
def test_no_gpu_runs_the_command_unchanged(tmp_path, env):
    p = wrapped([sys.executable, "-c", SHOW], tmp_path / "locks", env=clean_env(**env))
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert out.strip() == env.get("CUDA_VISIBLE_DEVICES", "unset")  # untouched
    assert not (tmp_path / "locks").exists() and "lapr.gpus" not in err


def test_cpu_machine_runs_the_command_unchanged(tmp_path):
    """Nothing set: the device count comes from torch, which is 0 on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA devices")
    p = wrapped([sys.executable, "-c", SHOW], tmp_path / "locks", env=clean_env())
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and out.strip() == "unset", err
    assert not (tmp_path / "locks").exists()


def test_visible_devices_and_lock_names():
    assert gpus.visible_devices({"LAPR_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "5"}) == ["0", "1"]
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": " 2, 3 "}) == ["2", "3"]
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at an invalid id
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-8a1b,GPU-77c0"}) == ["GPU-8a1b", "GPU-77c0"]
    assert gpus._lock_name("0", {}) == "gpu0.lock"
    assert gpus._lock_name("0", {"SLURM_JOB_ID": "42"}) == "slurm42.gpu0.lock"  # ids are per SLURM job
    assert gpus._lock_name("MIG-a/b", {}) == "gpuMIG-a_b.lock"
    assert gpus._lock_name("1", {}, slot=2) == "gpu1.slot2.lock"
    assert gpus.default_lockdir({"LAPR_GPU_LOCKDIR": "/x/locks"}).as_posix() == "/x/locks"


def test_usage_errors(tmp_path):
    for argv in (["python"], ["--"]):
        p = subprocess.run([sys.executable, "-m", "lapr.gpus", *argv], capture_output=True, text=True,
                           env=clean_env(LAPR_GPUS="0"), timeout=20)
        assert p.returncode == 2 and "--" in p.stderr


def dry_run_jobs(profile, tmp_path):
    """rule name, gpu resource and shell command of every job of a profile's full DAG (dry run)."""
    res = snakemake("-n", "-p", "--configfile", str(ROOT / f"workflow/config/{profile}.yaml"),
                    "--directory", str(tmp_path), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = []
    for block in res.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        gpu = re.search(r"resources:.*\bgpu=(\d+)", block)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        if shell:
            jobs.append((rule, int(gpu.group(1)) if gpu else 0, shell.group(1)))
    return jobs


def test_workflow_pins_exactly_the_gpu_jobs_of_cuda_profiles(tmp_path):
    """gpu.yaml: K slots per GPU; a job takes one slot, a benchmark all K of its GPU (`--whole`), and
    the `gpu` resource counts exactly the slots the wrapper takes."""
    slots = yaml.safe_load((ROOT / "workflow/config/gpu.yaml").read_text())["gpu_slots"]
    assert slots > 1  # the profile shares its GPUs, which this test is about
    jobs = dry_run_jobs("gpu", tmp_path)
    pinned = {rule for rule, _, cmd in jobs if f"-m lapr.gpus --slots {slots} " in cmd}
    on_gpu = {rule for rule, gpu, _ in jobs if gpu}
    assert pinned == on_gpu
    assert {"pretrain", "profile", "prune", "evaluate", "heads", "mqar_train", "mqar_eval", "bench_ops",
            "bench_model"} <= on_gpu
    assert "tokens" not in pinned
    for rule, gpu, cmd in jobs:
        if gpu:  # the wrapper goes right before the interpreter, after the environment assignment
            m = re.match(rf'OMP_NUM_THREADS=\d+ "[^"]+" -m lapr\.gpus --slots {slots}( --whole)? -- "[^"]+" -m lapr ', cmd)
            assert m, cmd
            whole = rule.startswith("bench")
            assert bool(m.group(1)) == whole and gpu == (slots if whole else 1), (rule, gpu, cmd)


def test_workflow_cpu_profile_is_not_wrapped(tmp_path):
    jobs = dry_run_jobs("tiny", tmp_path)
    assert jobs and not any("lapr.gpus" in cmd for _, _, cmd in jobs)
    assert not any(gpu for _, gpu, _ in jobs)


def test_pretraining_goes_first_where_the_profile_says(tmp_path):
    """pretrain_first (gpu.yaml, embedded.yaml): the jobs that read no model wait for the pretrained
    ones (so that pretraining starts at once: a model per GPU, or both models on 2 CPU cores); the tiny
    profile (pretrain_first unset) keeps them free to start."""
    for profile, first in (("gpu", True), ("embedded", True), ("tiny", False)):
        res = snakemake("-n", "--configfile", str(ROOT / f"workflow/config/{profile}.yaml"),
                        "--directory", str(tmp_path / profile), timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        for rule in ("mqar_train", "bench_ops"):
            block = next(b for b in res.stdout.split("\nrule ")[1:] if b.startswith(rule + ":"))
            waits = re.search(r"^\s+input: .*models/\w+/model\.safetensors", block, re.M) is not None
            assert waits == first, (profile, rule, block[:400])
