# Paper B: whole-head pruning by state rank and norm on the LMs, and the MQAR retrieval probe
# (small models trained here, then channel- and head-pruned by every method).


rule heads:
    priority: 5
    # one job per (model, method) over the budgets (one model load, one set of imports)
    input:
        model=base_model,
        heads=f"{R}/profile/{{model}}/heads.csv",
    output:
        expand(f"{R}/heads/{{model}}/{{hmethod}}/{{budget}}.csv", budget=BUDGETS, allow_missing=True),
    wildcard_constraints:
        hmethod=one_of(HEAD_METHODS),
    params:
        budgets=BUDGETS,
        settings=HEAD_SETTINGS,
        model=input_folder,
        seed=SEED,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/heads/{{model}}/{{hmethod}}.log",
    benchmark:
        benchmark_tsv("heads", "model", "hmethod")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr heads --model {params.model} "
        "--heads-csv {input.heads} --method {wildcards.hmethod} --budget {params.budgets} "
        "--model-name {wildcards.model} --settings {params.settings:q} --seed {params.seed} --out {output} "
        "> {log} 2>&1"


rule heads_unpruned:
    priority: 5
    # the unpruned model, and in the same process paper B's disjoint low / high / random arms
    # (heads.arms; null: none) on the same NIAH samples
    input:
        model=base_model,
        heads=f"{R}/profile/{{model}}/heads.csv",
    output:
        main=f"{R}/heads/{{model}}/none/0.csv",
        arms=[f"{R}/heads/{{model}}/arms/0.csv"] if HEAD_ARMS else [],
    params:
        settings=HEAD_SETTINGS,
        model=input_folder,
        arms=arms_out,
        seed=SEED,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/heads/{{model}}/none.log",
    benchmark:
        benchmark_tsv("heads_unpruned", "model", hmethod="none")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr heads --model {params.model} "
        "--heads-csv {input.heads} --method none --budget 0 {params.arms}"
        "--model-name {wildcards.model} --settings {params.settings:q} --seed {params.seed} --out {output.main} "
        "> {log} 2>&1"


rule head_pruning:
    input:
        TARGETS["head_pruning"],
