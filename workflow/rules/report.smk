# Tables, figures and the claims check, from results/ only. `figures` is the DAG's last job;
# `redraw` (`snakemake --cores 1 redraw`) rebuilds the same outputs from whatever is in results/
# and never schedules an upstream job: after a fresh clone file times are checkout order, so
# Snakemake would see committed results as older than their inputs and redo them for `figures`.
from lapr.report.stage import fixed_outputs

CAPTIONS = "../../lapr/report/captions"


def _out(rel, name):
    ext = rel.rsplit(".", 1)[-1]
    if name and ext in ("png", "csv"):
        return report(f"{F}/{rel}", caption=f"{CAPTIONS}/{name}.rst",
                      category={"png": "Figures", "csv": "Tables"}[ext])
    return f"{F}/{rel}"


# Every stage's final outputs but the git-ignored calib.pt: `figures` is the end of the full run. After
# a fresh clone checkpoints have no weights, so `figures` would rerun the DAG; `redraw` does not.
RESULT_TABLES = [t for ts in TARGETS.values() for t in ts if not t.endswith("calib.pt")]


FIGURE_OUTPUTS = [_out(rel, name) for rel, name in fixed_outputs().items()]
DRAW = "{PY} -m lapr figures --results {R} --out {F} --settings {params.settings:q} > {log} 2>&1"


rule figures:
    input:
        RESULT_TABLES,
    output:
        FIGURE_OUTPUTS,
    params:
        settings=settings("figures"),
    log:
        f"{R}/logs/figures.log",
    threads: 1
    shell:
        DRAW


rule redraw:
    output:
        FIGURE_OUTPUTS,
    params:
        settings=settings("figures"),
    log:
        f"{R}/logs/redraw.log",
    threads: 1
    shell:
        DRAW


ruleorder: figures > redraw


TARGETS["figures"] = [f"{F}/README.md"]
