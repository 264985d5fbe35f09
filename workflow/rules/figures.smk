# Tables, figures and the claims check, from results/ only. `figures` is the DAG's last job;
# `redraw` (`snakemake --cores 1 redraw`) rebuilds the same outputs from whatever is in results/
# and never schedules an upstream job: after a fresh clone file times are checkout order, so
# Snakemake would see committed results as older than their inputs and redo them for `figures`.
# `figures` also tabulates the jobs' benchmark files into results/<p>/dag_timing.csv: every job of the
# DAG but `figures` itself, whose benchmark is written after it ends (and not `redraw`, no part of
# the DAG); `redraw` leaves that table as it is.


rule figures:
    input:
        RESULT_TABLES,
    output:
        figures=FIGURE_OUTPUTS,
        timing=DAG_TIMING,
    params:
        settings=settings("figures"),
        results=results_dir,
        out=figure_dir,
        py=PY,
    log:
        f"{R}/logs/figures.log",
    benchmark:
        benchmark_tsv("figures")
    threads: 1
    conda:
        "../envs/lapr.yaml"
    shell:
        "{params.py} -m lapr figures --results {params.results} --out {params.out} --settings {params.settings:q} "
        "> {log} 2>&1 && {params.py} -m lapr.report.dag_timing {params.results}/benchmarks --exclude figures redraw "
        "--out {output.timing} >> {log} 2>&1"


rule redraw:
    output:
        figures=FIGURE_OUTPUTS,
    params:
        settings=settings("figures"),
        results=R,
        out=figure_dir,
        py=PY,
    log:
        f"{R}/logs/redraw.log",
    benchmark:
        benchmark_tsv("redraw")
    threads: 1
    conda:
        "../envs/lapr.yaml"
    shell:
        "{params.py} -m lapr figures --results {params.results} --out {params.out} --settings {params.settings:q} "
        "> {log} 2>&1"


ruleorder: figures > redraw
