"""One job per (model, method) for prune / evaluate / heads: every ratio (budget) of a method is an
output of the same job, the groups never overlap, and asking for one file runs its group."""
import re

from workflow_helpers import ROOT, snakemake

CONFIG = str(ROOT / "workflow/config/embedded.yaml")  # 3 ratios, 3 budgets, 2 recovered methods


def _jobs(stdout):
    """(rule, sorted outputs, shell command) of every job in a `snakemake -n -p` listing."""
    jobs = []
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^(?:local)?rule |\Z)", stdout, flags=re.M | re.S):
        out = re.search(r"^\s+output: (.*)$", body, re.M)
        cmd = re.search(r"^Shell command: (.*)$", body, re.M)
        jobs.append((rule, sorted(out.group(1).split(", ")) if out else [], cmd.group(1) if cmd else ""))
    return jobs


def test_each_method_is_one_job_over_its_ratios(tmp_path):
    res = snakemake("-n", "-p", "--configfile", CONFIG, "--directory", str(tmp_path), "evaluations", "pruned",
                    "head_pruning")
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = _jobs(res.stdout)
    by_rule = {}
    for rule, outs, cmd in jobs:
        by_rule.setdefault(rule, []).append((outs, cmd))
    # 2 models x 9 methods (paper A's 8 + lapr's pca_qk), each over ratios 0.25 0.5 0.75; recovered: 2 x 1
    # method (strong_rrqr) at 0.5; unpruned alone
    assert len(by_rule["evaluate"]) == 18 and len(by_rule["prune"]) == 18 and len(by_rule["heads"]) == 10
    for rule in ("evaluate", "prune"):
        for outs, cmd in by_rule[rule]:
            # prune declares each checkpoint by its weights file and passes the folders
            places = [o.removesuffix("/model.safetensors") for o in outs]
            assert [p.rsplit("/", 1)[-1] for p in places] == (
                ["0.25.csv", "0.5.csv", "0.75.csv"] if rule == "evaluate" else ["0.25", "0.5", "0.75"])
            assert "--ratio 0.25 0.5 0.75 " in cmd and "--out " + " ".join(places) in cmd, cmd
    for outs, cmd in by_rule["heads"]:
        assert len(outs) == 4 and "--budget 0.25 0.389 0.5 0.75 " in cmd, cmd
    assert len(by_rule["evaluate_recovered"]) == len(by_rule["prune_recovered"]) == 2
    for outs, cmd in by_rule["evaluate_recovered"] + by_rule["prune_recovered"]:
        assert len(outs) == 1 and "+lora" in outs[0] and "--ratio 0.5 " in cmd, cmd
    assert [len(o) for o, _ in by_rule["evaluate_unpruned"]] == [1] * 2
    assert [len(o) for o, _ in by_rule["heads_unpruned"]] == [2] * 2  # none/0.csv + arms/0.csv
    every = [o for rule, outs, _ in jobs for o in outs]
    assert len(every) == len(set(every))  # no file is made by two jobs


def test_one_file_runs_its_group(tmp_path):
    target = "results/embedded/eval/gdn/wanda/0.5.csv"
    res = snakemake("-n", "-p", "--configfile", CONFIG, "--directory", str(tmp_path), target)
    assert res.returncode == 0, res.stderr[-2000:]
    evals = [(outs, cmd) for rule, outs, cmd in _jobs(res.stdout) if rule == "evaluate"]
    assert len(evals) == 1
    outs, cmd = evals[0]
    assert target in outs and len(outs) == 3 and "--method wanda " in cmd
