# State-rank profiling (papers A and B) and the calibration statistics pruning reuses.
PROFILE_FILES = ["ranks.parquet", "spectrum.parquet", "heads.csv", "consistency.csv", "calib.pt",
                 "timing.json"]


rule profile:
    # critical path first (every other stage waits on the models); mqar_* / bench_ops only fill free cores
    priority: 10
    input:
        model=lambda w: model_input(w.model),
    output:
        [f"{R}/profile/{{model}}/{name}" for name in PROFILE_FILES],
    params:
        out=lambda w: f"{R}/profile/{w.model}",
        model=lambda w: checkpoint(w.model),
        settings=settings("profiling"),
    log:
        f"{R}/logs/profile/{{model}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr profile --model {params.model} --out {params.out} "
        "--settings {params.settings:q} --seed {SEED} {DEVICE} > {log} 2>&1"


rule profiles:
    input:
        expand(f"{R}/profile/{{model}}/heads.csv", model=MODELS),


TARGETS["profile"] = expand(f"{R}/profile/{{model}}/{{name}}", model=MODELS, name=PROFILE_FILES)
