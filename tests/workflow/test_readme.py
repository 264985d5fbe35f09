"""Every command the README shows is run, exactly as written: here (as a dry run where it would start
the whole reproduction), or by .ci/run. A command added to the README without a line in COMMANDS
fails the first test."""
import importlib.util
import re
import subprocess
import sys

import pytest

from workflow_helpers import ROOT, ahead

PROFILES = ["tiny", "embedded", "gpu", "paper"]
# command -> how it is checked: 'dry' = run with -n appended (it would start hours of work),
# 'run' = run as written, 'ci' = .ci/run runs it verbatim, 'slurm' = dry run with the SLURM plugin,
# or a reason it is not a command one can run here.
COMMANDS = {
    "python -m pip install torch==2.13.0 -e . && snakemake --cores all": "ci",  # (a): its install is (b)'s
    "python -m pip install torch==2.13.0 -e '.[test]' && python -m pytest": "ci",
    "python -m pytest -m slow": "ci",  # (c): the `slow` tests that (b) deselects (pyproject addopts)
    "python -m pip install torch==2.13.0 -e '.[slurm]'": "ci",
    "conda env create -f environment.yml && conda activate lapr": "not here: CI has no conda",
    "python -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu":
        "not here: the CPU-only route elsewhere (this machine's pip installs a local CPU wheel; CI has no "
        "PyTorch index)",
    "snakemake --cores all": "dry",
    "snakemake -n": "run",
    "snakemake -n --profile workflow/profiles/paper": "run",
    "snakemake --cores all --configfile workflow/config/<profile>.yaml": "dry",
    "snakemake --profile workflow/profiles/<gpu|paper|tiny>": "dry",
    "snakemake --profile workflow/profiles/slurm --configfile workflow/config/paper.yaml": "slurm",
    "snakemake models --cores 2 --configfile workflow/config/paper.yaml": "dry",
    "snakemake --cores all evaluations": "dry",
    "snakemake --cores 1 redraw": "dry",
    "snakemake --cores all --rerun-incomplete": "dry",
    "snakemake --report report.html": "run",
    "snakemake --unlock": "run",
    "snakemake --lint": "ci",  # .ci/run: `python -m snakemake --lint`; tests/workflow/test_lint.py runs it too
    "python -m lapr --help": "run",
    "python workflow/scripts/wheelhouse.py --out wheelhouse --python 3.12 --have target-freeze.txt":
        "not here: minutes of PyPI downloads (tests/workflow/test_wheelhouse.py tests its logic offline)",
    "python -m pip install --no-index --find-links wheelhouse -r wheelhouse/requirements.txt":
        "not here: needs the wheelhouse (the recorded GPU run installed from one, results/gpu/README.md)",
    "python -m pip install --no-index --no-deps --no-build-isolation -e .":
        "not here: the target's install (CI installs lapr with README command (b))",
    "snakemake --profile workflow/profiles/gpu": "dry",
    "python -m lapr <stage> ...": "not here: a template (each stage's command is run by the workflow tests)",
    "python -m lapr.report.summary results/<profile>": "run",
    "python -m lapr --debug <stage> ...": "not here: a template (tests/test_bad_input_cli.py runs --debug)",
}


def readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    found = set()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        found.update(line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip())
    inline = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", inline):
        span = " ".join(span.split())
        if re.match(r"(snakemake|python|conda|pip)\b", span):
            found.add(span)
    return found


def expanded(command: str) -> list[str]:
    """A template's concrete commands: <profile> and <a|b|c> become each choice."""
    if "<profile>" in command:
        return [command.replace("<profile>", p) for p in PROFILES]
    if m := re.search(r"<([a-z|]+)>", command):
        return [command.replace(m.group(0), choice) for choice in m.group(1).split("|")]
    return [command]


def run(command: str, dry: bool):
    shell = re.sub(r"^snakemake\b", f'"{sys.executable}" -m snakemake', command)
    shell = re.sub(r"^python\b", f'"{sys.executable}"', shell)
    if dry:
        shell += " -n"
    return subprocess.run(shell, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_every_readme_command_has_a_check():
    assert readme_commands() == set(COMMANDS)


RUNNABLE = [c for c, how in COMMANDS.items() if how in ("dry", "run") for c in expanded(c)]
ALONE = ("--report", "--unlock")  # they read or clear ROOT's .snakemake: run by their test, with nothing beside


def how_checked(command: str) -> str:
    return next(h for c, h in COMMANDS.items() if command in expanded(c))


@pytest.fixture(scope="module")
def started():
    """The other commands, two at a time ahead of their tests (dry runs take no lock)."""
    calls = {c: (lambda c=c: run(c, dry=how_checked(c) == "dry")) for c in RUNNABLE
             if not any(flag in c for flag in ALONE)}
    with ahead(calls) as futures:
        yield futures


@pytest.mark.parametrize("command", RUNNABLE)
def test_readme_command_runs(command, started):
    how = how_checked(command)
    report = ROOT / "report.html"
    existed = report.exists()
    try:
        res = started[command].result() if command in started else run(command, dry=how == "dry")
    finally:
        if "--report" in command and not existed:
            report.unlink(missing_ok=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    if command.startswith("snakemake") and "--unlock" not in command and "--report" not in command:
        assert "Job stats" in out or "Nothing to be done" in out, out[-3000:]


def test_ci_runs_its_readme_commands_verbatim():
    ci = (ROOT / ".ci/run").read_text()
    for command, how in COMMANDS.items():
        if how == "ci" and "snakemake" not in command:
            assert command in ci, command


def test_ci_runs_its_readme_snakemake_commands():
    """A README `snakemake ...` command marked 'ci' is in .ci/run verbatim, through the venv's python."""
    ci = (ROOT / ".ci/run").read_text().splitlines()
    for command, how in COMMANDS.items():
        if how == "ci" and command.startswith("snakemake"):
            assert f"python -m {command}" in (line.strip() for line in ci), command


@pytest.mark.slurm
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="the slurm extra is not installed (.ci/run installs it and runs this)")
def test_readme_slurm_command_dry_runs():
    for command, how in COMMANDS.items():
        if how == "slurm":
            res = run(command, dry=True)
            assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
            assert "Job stats" in res.stdout
