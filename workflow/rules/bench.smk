# Throughput and memory vs key dimension: the op grid once per profile, and model level for the
# unpruned model and each ratio. Shapes (hence speed) depend on the ratio, not on the method, so the
# model-level bench uses the first configured method's checkpoint for every ratio.
import shutil

BENCH = config.get("bench", {})
BENCH_DEVICE = config["device"] if config["device"] != "auto" else ("cuda" if shutil.which("nvidia-smi") else "cpu")
BENCH_GPU = gpu_prefix(BENCH_DEVICE)
PRUNED_DK = sorted({math.floor(s["head_k_dim"] * (1 - r)) // PRUNE.get("multiple", 1) * PRUNE.get("multiple", 1)
                    for s in config["models"].values() if "head_k_dim" in s for r in PRUNE["ratios"]})


rule bench_ops:
    output:
        f"{R}/bench/ops_{BENCH_DEVICE}.csv",
    params:
        settings=json.dumps({"mode": "ops", "extra_d_k": PRUNED_DK, **BENCH.get("ops", {})}),
    log:
        f"{R}/logs/bench/ops_{BENCH_DEVICE}.log",
    threads: config["threads"]
    resources:
        gpu=1 if BENCH_DEVICE == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {BENCH_GPU}{PY} -m lapr bench --settings {params.settings:q} --seed {SEED} "
        "--out {output} > {log} 2>&1"


def benched(w):
    if w.method == "none":
        return model_input(w.model)
    return weights(f"{R}/pruned/{w.model}/{w.method}/{w.ratio}")


rule bench_model:
    input:
        model=benched,
    output:
        f"{R}/bench/model/{{model}}/{{method}}/{{ratio}}_{BENCH_DEVICE}.csv",
    params:
        settings=json.dumps({"mode": "model", **BENCH.get("model", {})}),
        model=lambda w, input: folder(input.model),
    log:
        f"{R}/logs/bench/model/{{model}}/{{method}}/{{ratio}}_{BENCH_DEVICE}.log",
    threads: config["threads"]
    resources:
        gpu=1 if BENCH_DEVICE == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {BENCH_GPU}{PY} -m lapr bench --settings {params.settings:q} --model {params.model} "
        "--seed {SEED} --out {output} > {log} 2>&1"


BENCHES = [f"{R}/bench/ops_{BENCH_DEVICE}.csv"]
BENCHES += expand(f"{R}/bench/model/{{model}}/none/0_{BENCH_DEVICE}.csv", model=MODELS)
BENCHES += expand(f"{R}/bench/model/{{model}}/{METHODS[0]}/{{ratio}}_{BENCH_DEVICE}.csv", model=MODELS, ratio=RATIOS)


rule benchmarks:
    input:
        BENCHES,


TARGETS["bench"] = BENCHES
