"""One name per stage: every key of common.smk's TARGETS is the aggregate rule that asks for that
stage's outputs, so `snakemake <key>` makes it (README "Named targets")."""
from workflow_helpers import ROOT, scheduled, snakemake

TINY = str(ROOT / "workflow/config/tiny.yaml")


def test_every_targets_key_is_a_rule(tmp_path):
    # the workflow itself names its keys and rules (a wrapper that includes it prints them)
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(f'include: "{ROOT}/Snakefile"\n'
                       'print("keys:", *TARGETS)\n'
                       'print("rules:", *(r.name for r in workflow.rules))\n')
    res = snakemake("-s", str(wrapper), "-n", "--configfile", TINY, "--directory", str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in res.stdout.splitlines() if line.startswith(("keys: ", "rules: ")))
    keys, rules = lines["keys"].split(), lines["rules"].split()
    assert keys == ["models", "profiles", "pruned", "evaluations", "head_pruning", "benchmarks", "figures"]
    assert set(keys) <= set(rules)
    # and each works as a target: asking for all of them schedules each one's rule
    res = snakemake("-n", "--configfile", TINY, "--directory", str(tmp_path), *keys, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(keys) <= set(scheduled(res.stdout))
