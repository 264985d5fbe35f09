# Perplexity and offline lm-eval tasks of every checkpoint: the unpruned model is method 'none', ratio 0.
# One job per (model, method) evaluates all its ratios in one process: imports cost ~10 s of CPU per
# process on 2 cores, more than a small checkpoint's evaluation. Asking for one CSV reruns its group.


rule evaluate:
    priority: 6
    input:
        model=at_ratios(RATIOS),
    output:
        expand(f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv", ratio=RATIOS, allow_missing=True),
    wildcard_constraints:
        method=one_of(METHODS),
    params:
        ratios=RATIOS,
        settings=EVAL_SETTINGS,
        models=input_folders,
        seed=SEED,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/evaluate/{{model}}/{{method}}.log",
    benchmark:
        benchmark_tsv("evaluate", "model", "method")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr evaluate --model {params.models} "
        "--model-name {wildcards.model} --method {wildcards.method} --ratio {params.ratios} "
        "--settings {params.settings:q} --seed {params.seed} --out {output} > {log} 2>&1"


use rule evaluate as evaluate_recovered with:
    input:
        model=at_ratios(RECOVER_RATIOS),
    output:
        expand(f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv", ratio=RECOVER_RATIOS, allow_missing=True),
    wildcard_constraints:
        method=one_of(RECOVERED),
    params:
        ratios=RECOVER_RATIOS,
        settings=EVAL_SETTINGS,
        models=input_folders,
        seed=SEED,
        gpu=GPU,
        py=PY,
    benchmark:
        benchmark_tsv("evaluate_recovered", "model", "method")


use rule evaluate as evaluate_unpruned with:
    input:
        model=at_ratios(["0"]),
    output:
        f"{R}/eval/{{model}}/{{method}}/0.csv",
    wildcard_constraints:
        method="none",
    params:
        ratios=["0"],
        settings=EVAL_SETTINGS,
        models=input_folders,
        seed=SEED,
        gpu=GPU,
        py=PY,
    benchmark:
        benchmark_tsv("evaluate_unpruned", "model", "method")


rule evaluations:
    input:
        TARGETS["evaluations"],
