# Query/key channel pruning (paper A): every method x ratio x model, one loadable checkpoint each,
# plus the LoRA-recovered checkpoints (`prune.recovery`, named METHOD+lora).


rule prune:
    # priorities: what the claims need first (pretrain/profile 10, prune 8, evaluate 6, heads 5,
    # benchmarks 4), so a run cut short by a machine's time limit keeps the evidence; the MQAR probes'
    # long chains (train 9, eval 7) go first, so that they do not end the run alone (mqar.smk)
    priority: 8
    # one job per (model, method): the ratios share the model load, the calibration statistics and
    # the imports (~10 s of CPU per process on 2 cores); asking for one checkpoint reruns its group
    input:
        model=base_model,
        calib=f"{R}/profile/{{model}}/calib.pt",
    output:
        [weights(p) for p in expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", ratio=RATIOS, allow_missing=True)],
    wildcard_constraints:
        method=one_of(METHODS),
    params:
        settings=prune_settings,
        method=pruning_method,
        ratios=RATIOS,
        model=input_folder,
        outs=output_folders,
        seed=SEED,
        device=DEVICE,
        gpu=GPU,
        py=PY,
    log:
        f"{R}/logs/prune/{{model}}/{{method}}.log",
    benchmark:
        benchmark_tsv("prune", "model", "method")
    threads: config["threads"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/lapr.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.gpu}{params.py} -m lapr prune --model {params.model} --calib {input.calib} "
        "--method {params.method} --ratio {params.ratios} --settings {params.settings:q} "
        "--seed {params.seed} {params.device} --out {params.outs} > {log} 2>&1"


use rule prune as prune_recovered with:
    output:
        [weights(p) for p in expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", ratio=RECOVER_RATIOS, allow_missing=True)],
    wildcard_constraints:
        method=one_of(RECOVERED),
    params:
        settings=prune_settings,
        method=pruning_method,
        ratios=RECOVER_RATIOS,
        model=input_folder,
        outs=output_folders,
        seed=SEED,
        device=DEVICE,
        gpu=GPU,
        py=PY,
    benchmark:
        benchmark_tsv("prune_recovered", "model", "method")


rule pruned:
    input:
        TARGETS["pruned"],
