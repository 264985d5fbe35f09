# Token streams of the shipped corpora (sha256-checked on first use), one .npy per corpus.


rule tokens:
    # critical path first (every other stage waits on the models); mqar_* / bench_ops only fill free cores
    priority: 10
    output:
        f"{R}/data/{{corpus}}.npy",
    params:
        dataset=corpus_dataset,
        settings=corpus_settings,
        tokenizer=config["tokenizer"],
        py=PY,
    log:
        f"{R}/logs/tokens/{{corpus}}.log",
    benchmark:
        benchmark_tsv("tokens", "corpus")
    threads: 1
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.py} -m lapr tokens --dataset {params.dataset} "
        "--tokenizer {params.tokenizer} --settings {params.settings:q} --out {output} > {log} 2>&1"
