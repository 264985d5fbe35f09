# Tables, figures and the claims check, from results/ only: `snakemake --cores 1 figures` rebuilds
# them from committed results without any training, profiling or evaluation job.
from lapr.report.stage import fixed_outputs

CAPTIONS = "../../lapr/report/captions"


def _out(rel, name):
    ext = rel.rsplit(".", 1)[-1]
    if name and ext in ("png", "csv"):
        return report(f"{F}/{rel}", caption=f"{CAPTIONS}/{name}.rst",
                      category={"png": "Figures", "csv": "Tables"}[ext])
    return f"{F}/{rel}"


# Everything but the git-ignored calib.pt: checkpoint folders keep their committed metrics/records
# after a fresh clone, so the figures job finds all its inputs without rerunning their producers.
RESULT_TABLES = [t for ts in TARGETS.values() for t in ts if not t.endswith("calib.pt")]


rule figures:
    input:
        RESULT_TABLES,
    output:
        [_out(rel, name) for rel, name in fixed_outputs().items()],
    params:
        settings=settings("figures"),
    log:
        f"{R}/logs/figures.log",
    threads: 1
    shell:
        "{PY} -m lapr figures --results {R} --out {F} --settings {params.settings:q} > {log} 2>&1"


TARGETS["figures"] = [f"{F}/README.md"]
