# State-rank profiling (papers A and B) and the calibration statistics pruning reuses.


rule profile:
    # critical path first (every other stage waits on the models); mqar_* / bench_ops only fill free cores
    priority: 10
    input:
        model=base_model,
    output:
        [f"{R}/profile/{{model}}/{name}" for name in PROFILE_FILES],
    params:
        out=profile_dir,
        model=input_folder,
        settings=settings("profiling"),
        seed=SEED,
        device=DEVICE,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/profile/{{model}}.log",
    benchmark:
        benchmark_tsv("profile", "model")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr profile --model {params.model} --out {params.out} "
        "--settings {params.settings:q} --seed {params.seed} {params.device} > {log} 2>&1"


rule profiles:
    input:
        TARGETS["profiles"],
