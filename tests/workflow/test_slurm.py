"""The SLURM profile (workflow/profiles/slurm) end to end on a throwaway single-node cluster.

`workflow/scripts/slurm_local.sh` starts munged, slurmctld and slurmd under a temporary directory; the
whole `tiny` profile (both models, every method, head method and MQAR family: every job of the DAG
a sbatch job) goes through the SLURM executor, and its deterministic results must equal a local
run's of the same config (the local side runs only the jobs the comparison reads: one model's
pretraining, profile, one pruned checkpoint and two evaluations). Needs root, Debian's slurm-wlm
and munge, and the `slurm` extra (snakemake-executor-plugin-slurm); skipped otherwise, or failed
when LAPR_REQUIRE_SLURM=1 (CI). About 10-15 minutes on 2 busy cores.
"""
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

from workflow_helpers import ROOT

pytestmark = pytest.mark.slurm

SCRIPT = ROOT / "workflow/scripts/slurm_local.sh"
PROFILE = ROOT / "workflow/profiles/slurm"
NAME = "tiny_slurm"  # results/tiny_slurm: never the results/tiny of the other workflow tests
MODEL, METHOD, RATIO = "gdn", "l2", "0.5"
STAGE_RULES = {"tokens", "pretrain", "profile", "prune", "prune_recovered", "evaluate", "evaluate_unpruned",
               "evaluate_recovered", "heads", "heads_unpruned", "mqar_train", "mqar_eval", "bench_ops",
               "bench_model", "figures"}
RTOL = 1e-6  # same machine, one thread per job: the runs agree to float rounding (in fact exactly)
PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None


def _missing() -> list[str]:
    why = [f"`{t}` not found" for t in ("sbatch", "srun", "squeue", "slurmctld", "slurmd", "munged", "mungekey")
           if shutil.which(t) is None]
    if os.geteuid() != 0:
        why.append("not root (the test cluster's daemons run as root)")
    if not PLUGIN:
        why.append("snakemake-executor-plugin-slurm not installed (pip install '.[slurm]')")
    return why


def _require(why: list[str]):
    if not why:
        return
    msg = "SLURM test cluster unavailable: " + "; ".join(why)
    if os.environ.get("LAPR_REQUIRE_SLURM") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _snakemake(*args, cwd, env=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        out += f"\n[killed after {timeout} s]"
    return proc.returncode, out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running local cluster; yields the environment its clients need. Always stopped afterwards."""
    _require(_missing())
    d = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "LAPR_SLURMCTLD_PORT": str(_free_port()), "LAPR_SLURMD_PORT": str(_free_port())}
    try:
        start = subprocess.run(["bash", str(SCRIPT), "start", str(d)], env=env, capture_output=True,
                               text=True, timeout=180)
        assert start.returncode == 0, start.stdout + start.stderr
        # DIR/bin wraps the client commands with SLURM_CONF: the plugin's job step drops SLURM_* vars
        yield {**env, "PATH": f"{d}/bin:{env['PATH']}", "SLURM_CONF": str(d / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(d)], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The tiny DAG through SLURM (all targets) and, alongside, the local subset it is compared with
    (tokens, pretrain, profile, prune, evaluate). Returns (slurm dir, local dir, slurm log)."""
    cfg = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
    cfg["name"] = NAME  # the tiny profile unchanged but for where its results go
    assert MODEL in cfg["models"] and METHOD in cfg["prune"]["methods"] and float(RATIO) in cfg["prune"]["ratios"]
    base = tmp_path_factory.mktemp("runs")
    cfg_path = base / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    slurm_dir, local_dir = base / "slurm", base / "local"
    slurm_dir.mkdir()
    local_dir.mkdir()

    t0 = time.monotonic()
    r = f"results/{NAME}/eval/{MODEL}"
    local = _snakemake(f"{r}/none/0.csv", f"{r}/{METHOD}/{RATIO}.csv", "--cores", "1",
                       "--configfile", str(cfg_path), cwd=local_dir)
    slurm = _snakemake("--profile", str(PROFILE), "--configfile", str(cfg_path),
                       "--slurm-no-account",  # no slurmdbd here, so no accounts
                       "--slurm-status-command", "squeue",  # and no sacct; MinJobAge=3600 keeps jobs
                       "--slurm-init-seconds-before-status-checks", "1",
                       "--slurm-keep-successful-logs", "--retries", "0", cwd=slurm_dir, env=cluster)
    rc, out = _finish(slurm, 2400)
    lrc, lout = _finish(local, 600)
    print(f"SLURM run and local subset: {time.monotonic() - t0:.0f} s")
    assert rc == 0, out[-6000:]
    assert lrc == 0, lout[-4000:]
    return slurm_dir, local_dir, out


@pytest.mark.slow  # the whole tiny profile through SLURM: README (c) where SLURM is installed, and .ci/run
def test_every_stage_rule_ran_as_a_slurm_job(runs, cluster):
    slurm_dir, _, out = runs
    logs = slurm_dir / ".snakemake/slurm_logs"
    ran = {p.name.removeprefix("rule_") for p in logs.iterdir() if p.is_dir()}
    assert ran == STAGE_RULES, out[-3000:]
    assert (slurm_dir / f"figures/{NAME}/README.md").exists()
    jobs = _jobs(cluster)
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}
    assert set(jobs) == STAGE_RULES


def _jobs(env) -> dict[str, dict]:
    """This cluster's jobs (kept MinJobAge=3600 s after they end) by rule: the last job's fields."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], env=env, capture_output=True, text=True,
                         check=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        m = re.match(r"rule_([a-z_]+?)(_wildcards|$)", fields.get("Comment", ""))
        if m:
            jobs[m.group(1)] = fields
    return jobs


@pytest.mark.slow  # the whole tiny profile through SLURM: README (c) where SLURM is installed, and .ci/run
def test_profile_resources_reach_sbatch(runs, cluster):
    """Per-rule memory and runtime of the profile (tiny: threads 1, attempt 1); no GPU on a cpu config."""
    jobs = _jobs(cluster)
    expect = {"tokens": ("4000M", "00:30:00"), "pretrain": ("6000M", "1-00:00:00"),
              "evaluate": ("6000M", "12:00:00"), "evaluate_unpruned": ("6000M", "06:00:00"),
              "prune": ("4000M", "04:00:00"), "figures": ("8000M", "00:30:00")}
    for rule, (mem, limit) in expect.items():
        assert (jobs[rule]["MinMemoryNode"], jobs[rule]["TimeLimit"], jobs[rule]["NumCPUs"]) == (mem, limit, "1")
    assert not any("gpu" in j.get("TRES", "") + j.get("TresPerJob", "") for j in jobs.values())  # device: cpu


def _close(a, b):
    return a == b or abs(a - b) <= RTOL * max(abs(a), abs(b))


@pytest.mark.slow  # the whole tiny profile through SLURM: README (c) where SLURM is installed, and .ci/run
def test_results_equal_a_local_run(runs):
    import pandas as pd

    slurm_dir, local_dir, _ = runs
    rel = f"results/{NAME}"
    s, l = slurm_dir / rel, local_dir / rel
    # pretraining: the same losses (timings differ)
    ms, ml = (json.loads((d / "models" / MODEL / "metrics.json").read_text()) for d in (s, l))
    for corpus in ("gutenberg_valid", "wikitext2_test_raw"):
        assert _close(ms[corpus]["nll"], ml[corpus]["nll"]), corpus
    cs, cl = (pd.read_csv(d / "models" / MODEL / "loss_curve.csv") for d in (s, l))
    assert list(cs.step) == list(cl.step)
    assert all(_close(a, b) for a, b in zip(cs.train_loss, cl.train_loss))
    # pruning: the same kept channels in every layer and head, the same state sizes
    ps, pl = (json.loads((d / "pruned" / MODEL / METHOD / RATIO / "pruning.json").read_text()) for d in (s, l))
    assert [x["kept"] for x in ps["layers"]] == [x["kept"] for x in pl["layers"]]
    assert ps["layers"][0]["kept"] is not None
    assert ps["state_bytes_per_sequence"] == pl["state_bytes_per_sequence"]
    # evaluation: every (task, metric) value within RTOL, unpruned and pruned
    for name in ("none/0.csv", f"{METHOD}/{RATIO}.csv"):
        es, el = (pd.read_csv(d / "eval" / MODEL / name).set_index(["task", "metric"]).sort_index()
                  for d in (s, l))
        assert list(es.index) == list(el.index) and len(es) > 5, name
        assert all(_close(a, b) for a, b in zip(es.value, el.value)), (name, es.value, el.value)


@pytest.mark.skipif(not PLUGIN, reason="snakemake-executor-plugin-slurm not installed (pip install '.[slurm]')")
@pytest.mark.parametrize("profile,gpus", [("paper", True), ("tiny", False)])
def test_dry_run_resolves_every_resource(tmp_path, profile, gpus):
    """No cluster needed: every job's resources evaluate; GPU rules ask for a GPU only on cuda configs."""
    proc = _snakemake("-n", "--profile", str(PROFILE), "--configfile", str(ROOT / f"workflow/config/{profile}.yaml"),
                      "--cores", "8", "--directory", str(tmp_path), cwd=tmp_path)
    rc, out = _finish(proc, 300)
    assert rc == 0, out[-3000:]
    blocks = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", out, flags=re.M | re.S)
    resources = {}
    for rule, body in blocks:
        m = re.search(r"resources: (.*)", body)
        if m:
            resources.setdefault(rule, m.group(1))
    stage = set(resources) - {"all"}
    assert stage >= {"prune", "evaluate", "profile", "heads", "figures"}
    for rule in stage:
        # disk_mb is the size of inputs that do not exist yet; everything the profile sets must resolve
        assert "<TBD>" not in re.sub(r"disk\w*=<TBD>", "", resources[rule]), (rule, resources[rule])
        assert re.search(r"mem_mb=\d+", resources[rule]) and re.search(r"runtime=\d+", resources[rule]), rule
        wants_gpu = "gpu=1" in resources[rule]
        assert wants_gpu == (gpus and rule not in {"fetch", "tokens", "figures"}), (rule, resources[rule])
