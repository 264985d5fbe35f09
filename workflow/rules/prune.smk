# Query/key channel pruning (paper A): every method x ratio x model, one loadable checkpoint each.
PRUNE = config["prune"]
METHODS = PRUNE["methods"]
RATIOS = [ratio_name(r) for r in PRUNE["ratios"]]


rule prune:
    input:
        model=lambda w: checkpoint(w.model),
        calib=f"{R}/profile/{{model}}/calib.pt",
    output:
        directory(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}"),
    params:
        settings=settings("prune"),
    log:
        f"{R}/logs/prune/{{model}}/{{method}}/{{ratio}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr prune --model {input.model} --calib {input.calib} "
        "--method {wildcards.method} --ratio {wildcards.ratio} --settings {params.settings:q} "
        "--seed {SEED} {DEVICE} --out {output} > {log} 2>&1"


PRUNED = expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", model=MODELS, method=METHODS, ratio=RATIOS)


rule pruned:
    input:
        PRUNED,


TARGETS["prune"] = PRUNED
