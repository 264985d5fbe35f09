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


def test_rule_file_rules_and_command_share_the_stage_name():
    """workflow/rules/<stage>.smk holds the rules `<stage>...` that run `python -m lapr <stage>[-...]`
    and log to logs/<stage>...; the two other names: pretrain.smk's `fetch` (hub models instead of
    pretraining) and figures.smk's `redraw` (the figures from results/ alone), README "The workflow"."""
    import re

    seen = set()
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        stage = smk.stem
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), flags=re.M | re.S):
            cmd = re.search(r"-m lapr ([a-z-]+)", body)
            if not cmd:
                continue  # an aggregate rule
            name = cmd.group(1)
            seen.add(name)
            if (stage, rule) in (("pretrain", "fetch"), ("figures", "redraw")):
                continue
            assert name.split("-")[0] == stage and rule.startswith(stage), (smk.name, rule, name)
            log = re.search(r'^\s+log:\n\s+f?"\{R\}/logs/([a-z_]+)', body, re.M)
            assert log is None or log.group(1).startswith(stage), (smk.name, rule, log.group(1))
    assert len(seen) >= 10  # every stage command is run by some rule
