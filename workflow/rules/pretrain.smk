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
        out=lambda w, output: folder(output[0]),
        spec=lambda w: json.dumps({k: v for k, v in config["models"][w.model].items() if k != "source"}),
        settings=settings("pretrain"),
        evals=lambda w, input: " ".join(f"{c}={p}" for c, p in zip(EVAL_CORPORA, input.evals)),
    log:
        f"{R}/logs/pretrain/{{model}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr pretrain --spec {params.spec:q} --settings {params.settings:q} --train {input.train} "
        "--eval {params.evals} --tokenizer {config[tokenizer]} --seed {SEED} {DEVICE} --out {params.out} "
        "> {log} 2>&1"


rule fetch:
    output:
        directory(f"{R}/models/{{model}}"),
    wildcard_constraints:
        model="|".join(FETCHED) or "^$",
    params:
        path=lambda w: config["models"][w.model]["path"],
    log:
        f"{R}/logs/fetch/{{model}}.log",
    threads: 1
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m lapr fetch --repo {params.path} --out {output} > {log} 2>&1"


rule models:
    input:
        [model_input(m) for m in MODELS],


TARGETS["models"] = [model_input(m) for m in MODELS]
