# Embedded models: train a small DeltaNet and GatedDeltaNet from scratch (source: train), or fetch
# hub checkpoints in a dedicated rule so that offline failures are early and clear (source: hub).


rule pretrain:
    # critical path first (every other stage waits on the models); mqar_* / bench_ops only fill free cores
    priority: 10
    input:
        train=f"{R}/data/train.npy",
        evals=expand(f"{R}/data/{{corpus}}.npy", corpus=EVAL_CORPORA),
    output:
        weights(f"{R}/models/{{model}}"),
    wildcard_constraints:
        model="|".join(TRAINED) or "^$",
    params:
        out=output_folders,
        spec=model_spec,
        settings=settings("pretrain"),
        evals=eval_streams,
        tokenizer=config["tokenizer"],
        seed=SEED,
        device=DEVICE,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/pretrain/{{model}}.log",
    benchmark:
        benchmark_tsv("pretrain", "model")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr pretrain --spec {params.spec:q} "
        "--settings {params.settings:q} --train {input.train} --eval {params.evals} "
        "--tokenizer {params.tokenizer} --seed {params.seed} {params.device} --out {params.out} > {log} 2>&1"


rule fetch:
    output:
        directory(f"{R}/models/{{model}}"),
    wildcard_constraints:
        model="|".join(FETCHED) or "^$",
    params:
        path=hub_repo,
        py=PY,
    log:
        f"{R}/logs/fetch/{{model}}.log",
    benchmark:
        benchmark_tsv("fetch", "model")
    threads: 1
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.py} -m lapr fetch --repo {params.path} --out {output} > {log} 2>&1"


rule models:
    input:
        TARGETS["models"],
