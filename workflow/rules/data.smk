# Token streams of the shipped corpora (sha256-checked on first use), one .npy per corpus.
CORPORA = list(config["corpora"])
EVAL_CORPORA = [c for c in CORPORA if c != "train"]


rule tokens:
    # critical path first (every other stage waits on the models); mqar_* / bench_ops only fill free cores
    priority: 10
    output:
        f"{R}/data/{{corpus}}.npy",
    params:
        dataset=lambda w: config["corpora"][w.corpus]["dataset"],
        settings=lambda w: json.dumps({"max_chars": config["corpora"][w.corpus].get("max_chars")}),
    log:
        f"{R}/logs/tokens/{{corpus}}.log",
    threads: 1
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m lapr tokens --dataset {params.dataset} --tokenizer {config[tokenizer]} "
        "--settings {params.settings:q} --out {output} > {log} 2>&1"
