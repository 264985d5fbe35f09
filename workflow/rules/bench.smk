# Throughput and memory vs key dimension: the op grid once per profile, and model level for the
# unpruned model and each ratio (targets in common.smk). The device (cpu or cuda) is decided by the
# config alone, never by the machine that parses the workflow: the bench section's own `device`, else
# the top-level one, and `auto` benchmarks the CPU (common.smk, bench_device). A GPU benchmark needs
# `device: cuda` (the gpu and paper profiles) or `bench.<ops|model>.device: cuda`. On a GPU a benchmark
# takes its device whole (every slot: see gpu_slots), and on the CPU of a local run every core
# (bench_threads), so that no other job runs in its timings.


rule bench_ops:
    priority: 4
    input:
        after_pretraining,
    output:
        f"{R}/bench/ops_{BENCH_OPS_DEVICE}.csv",
    params:
        settings=json.dumps({"mode": "ops", "extra_d_k": PRUNED_DK, **BENCH.get("ops", {}),
                             "device": BENCH_OPS_DEVICE}),
        seed=SEED,
        gpu=gpu_prefix(BENCH_OPS_DEVICE, whole=True),
        py=PY,
        omp=config["threads"],
    log:
        f"{R}/logs/bench/ops_{BENCH_OPS_DEVICE}.log",
    benchmark:
        benchmark_tsv("bench_ops", device=BENCH_OPS_DEVICE)
    threads: bench_threads(BENCH_OPS_DEVICE)
    resources:
        gpu=gpu_slots(BENCH_OPS_DEVICE, whole=True),
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={params.omp} {params.gpu}{params.py} -m lapr bench --settings {params.settings:q} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule bench_model:
    priority: 4
    input:
        model=at_ratio,
    output:
        f"{R}/bench/model/{{model}}/{{method}}/{{ratio}}_{BENCH_MODEL_DEVICE}.csv",
    params:
        settings=json.dumps({"mode": "model", **BENCH.get("model", {}), "device": BENCH_MODEL_DEVICE}),
        model=input_folder,
        seed=SEED,
        gpu=gpu_prefix(BENCH_MODEL_DEVICE, whole=True),
        py=PY,
        omp=config["threads"],
    log:
        f"{R}/logs/bench/model/{{model}}/{{method}}/{{ratio}}_{BENCH_MODEL_DEVICE}.log",
    benchmark:
        benchmark_tsv("bench_model", "model", "method", "ratio", device=BENCH_MODEL_DEVICE)
    threads: bench_threads(BENCH_MODEL_DEVICE)
    resources:
        gpu=gpu_slots(BENCH_MODEL_DEVICE, whole=True),
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={params.omp} {params.gpu}{params.py} -m lapr bench --settings {params.settings:q} "
        "--model {params.model} --seed {params.seed} --out {output} > {log} 2>&1"


rule benchmarks:
    input:
        TARGETS["benchmarks"],
