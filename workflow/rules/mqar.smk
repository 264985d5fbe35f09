# MQAR probes (paper A's theory claim A4, and head pruning's recall): a small model per family trained
# on multi-query associative recall (mqar-train), then its recall under channel / head pruning and query
# noise (mqar-eval). Rules named as their CLI stages (`python -m lapr mqar-train | mqar-eval`).

rule mqar_train:
    # the probes first: each family's train -> eval is the longest chain after pretraining (~6 min of
    # one embedded core), and started last it ran alone at the end of the DAG, beside an idle core
    priority: 9
    input:
        after_pretraining,
    output:
        weights(f"{R}/mqar/models/{{family}}"),
    wildcard_constraints:
        family="|".join(MQAR_FAMILIES),
    params:
        settings=json.dumps(with_device(MQAR.get("train", {}))),
        out=output_folders,
        seed=SEED,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/mqar/train_{{family}}.log",
    benchmark:
        benchmark_tsv("mqar_train", "family")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr mqar-train --family {wildcards.family} "
        "--settings {params.settings:q} --seed {params.seed} --out {params.out} > {log} 2>&1"


rule mqar_eval:
    priority: 7
    input:
        model=weights(f"{R}/mqar/models/{{family}}"),
    output:
        f"{R}/mqar/eval/{{family}}.csv",
    wildcard_constraints:
        family="|".join(MQAR_FAMILIES),
    params:
        settings=json.dumps(with_device(MQAR.get("eval", {}))),
        model=input_folder,
        seed=SEED,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/mqar/eval_{{family}}.log",
    benchmark:
        benchmark_tsv("mqar_eval", "family")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr mqar-eval --model {params.model} "
        "--model-name {wildcards.family} --settings {params.settings:q} --seed {params.seed} --out {output} "
        "> {log} 2>&1"
