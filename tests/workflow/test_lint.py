"""Snakemake habits: `snakemake --lint` is clean (.ci/run runs it too), every rule's conda environment
lists the same packages as environment.yml, every job declares a benchmark file, and the rule files
read nothing from one another (only from common.smk), so their include order does not matter, and hold
no lambdas (their input and params functions are named in common.smk)."""
import re
from pathlib import Path

import yaml

from workflow_helpers import ROOT, snakemake


def test_lint_is_clean():
    res = snakemake("--lint", timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]


def test_stage_files_hold_no_lambdas():
    stages = [p for p in (ROOT / "workflow/rules").glob("*.smk") if p.name != "common.smk"]
    assert len(stages) > 5
    for smk in stages:
        assert not re.search(r"\blambda\b", smk.read_text()), smk.name


def _packages(path: Path) -> dict:
    """channels, conda dependencies and pip requirements of a conda environment file; a pip path
    (`-e DIR[extras]`) resolved the way conda's pip step reads it: relative to the file's folder."""
    env = yaml.safe_load(path.read_text())
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for req in dep["pip"]:
                if m := re.fullmatch(r"-e\s+(\S+?)(\[[\w,]+\])?", req):
                    req = f"-e {(path.parent / m.group(1)).resolve()}{m.group(2) or ''}"
                pip.append(req)
        else:
            conda.append(dep)
    return {"name": env.get("name"), "channels": env.get("channels"), "conda": sorted(conda), "pip": sorted(pip)}


def test_rule_environment_matches_environment_yml():
    rules_env = ROOT / "workflow/envs/lapr.yaml"
    assert _packages(rules_env) == _packages(ROOT / "environment.yml")
    assert f"-e {ROOT}[test]" in _packages(rules_env)["pip"]  # lapr itself, from this checkout
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        for env in re.findall(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", smk.read_text(), re.M):
            assert (smk.parent / env).resolve() == rules_env, (smk.name, env)


def _dry_run_jobs(stdout: str) -> list[tuple[str, str | None, bool]]:
    """(rule, benchmark file or None, has a shell command) of every job of a `snakemake -n -p` listing."""
    jobs = []
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^(?:local)?rule |\Z)", stdout, flags=re.M | re.S):
        bench = re.search(r"^\s+benchmark: (.*)$", body, re.M)
        shell = re.search(r"^Shell command: (?!None$)", body, re.M)
        jobs.append((rule, bench.group(1) if bench else None, shell is not None))
    return jobs


def test_every_job_declares_its_benchmark(tmp_path):
    for profile in ("tiny", "paper"):  # paper: the fetch rule of hub models
        res = snakemake("-n", "-p", "-F", "--configfile", str(ROOT / f"workflow/config/{profile}.yaml"),
                        "--directory", str(tmp_path), timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        jobs = _dry_run_jobs(res.stdout)
        assert len(jobs) > 60
        benchmarks = [b for _, b, _ in jobs if b]
        assert len(benchmarks) == len(set(benchmarks))  # one file per job
        for rule, bench, shell in jobs:
            if rule == "all":
                assert bench is None and not shell
                continue
            assert shell and bench, (rule, bench)
            # results/<p>/benchmarks/<rule>/<name=value,...>.tsv (lapr/report/dag_timing.py reads the rule back)
            assert re.fullmatch(rf"results/{profile}/benchmarks/{rule}(/[^/]+=[^/]+)?\.tsv", bench), (rule, bench)


def test_include_order_does_not_matter(tmp_path):
    """The stage files in reverse order (common.smk still first) give the same jobs."""
    text = (ROOT / "Snakefile").read_text()
    includes = re.findall(r'^include: "workflow/rules/(\w+)\.smk"$', text, re.M)
    assert includes[0] == "common" and len(includes) > 5
    lines = [f'include: "{ROOT}/workflow/rules/{name}.smk"' for name in ["common", *includes[:0:-1]]]
    body = re.sub(r'^include: .*\n', "", text, flags=re.M)
    body = body.replace('configfile: "workflow/config/embedded.yaml"', f'configfile: "{ROOT}/workflow/config/embedded.yaml"')
    reordered = tmp_path / "Snakefile"
    reordered.write_text("\n".join(lines) + "\n" + body)

    def listing(snakefile):
        res = snakemake("-n", "-p", "-F", "-s", str(snakefile), "--directory", str(tmp_path / "work"),
                        "--configfile", str(ROOT / "workflow/config/tiny.yaml"), timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        blocks = re.findall(r"^((?:local)?rule \w+:\n.*?)(?=^\[|\Z)", res.stdout, flags=re.M | re.S)
        return sorted(re.sub(r"^\s+(jobid|reason): .*\n", "", b, flags=re.M) for b in blocks)

    original = listing(ROOT / "Snakefile")
    assert len(original) == 109  # the tiny DAG: 76 jobs for DeltaNet and GDN, 33 more for GLA
    assert listing(reordered) == original
