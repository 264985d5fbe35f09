# Paper B: whole-head pruning by state rank and norm on the LMs, and the MQAR retrieval probe
# (small models trained here, then channel- and head-pruned by every method).
HEADS = config.get("heads", {})
HEAD_METHODS = HEADS.get("methods", ["joint_rank_norm", "low_rank_first", "high_rank_first", "norm_only", "random"])
BUDGETS = [ratio_name(b) for b in HEADS.get("budgets", [0.25, 0.5, 0.75])]
HEAD_SETTINGS = json.dumps({k: v for k, v in HEADS.items() if k not in ("methods", "budgets")})
MQAR = config.get("mqar", {})
MQAR_FAMILIES = MQAR.get("families", ["delta_net", "gated_deltanet"])


rule heads:
    # one job per (model, method) over the budgets (one model load, one set of imports)
    input:
        model=lambda w: model_input(w.model),
        heads=f"{R}/profile/{{model}}/heads.csv",
    output:
        expand(f"{R}/heads/{{model}}/{{hmethod}}/{{budget}}.csv", budget=BUDGETS, allow_missing=True),
    wildcard_constraints:
        hmethod=one_of(HEAD_METHODS),
    params:
        budgets=BUDGETS,
        settings=HEAD_SETTINGS,
        model=lambda w: checkpoint(w.model),
    log:
        f"{R}/logs/heads/{{model}}/{{hmethod}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr heads --model {params.model} --heads-csv {input.heads} "
        "--method {wildcards.hmethod} --budget {params.budgets} --model-name {wildcards.model} "
        "--settings {params.settings:q} --seed {SEED} --out {output} > {log} 2>&1"


use rule heads as heads_unpruned with:
    output:
        f"{R}/heads/{{model}}/{{hmethod}}/0.csv",
    wildcard_constraints:
        hmethod="none",
    params:
        budgets=["0"],
        settings=HEAD_SETTINGS,
        model=lambda w: checkpoint(w.model),


rule mqar_train:
    output:
        weights(f"{R}/mqar/models/{{family}}"),
    wildcard_constraints:
        family="|".join(MQAR_FAMILIES),
    params:
        settings=json.dumps(MQAR.get("train", {})),
        out=lambda w, output: folder(output[0]),
    log:
        f"{R}/logs/mqar/train_{{family}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr mqar-train --family {wildcards.family} "
        "--settings {params.settings:q} --seed {SEED} --out {params.out} > {log} 2>&1"


rule mqar_eval:
    input:
        weights(f"{R}/mqar/models/{{family}}"),
    output:
        f"{R}/mqar/eval/{{family}}.csv",
    wildcard_constraints:
        family="|".join(MQAR_FAMILIES),
    params:
        settings=json.dumps(MQAR.get("eval", {})),
        model=lambda w, input: folder(input[0]),
    log:
        f"{R}/logs/mqar/eval_{{family}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr mqar-eval --model {params.model} --model-name {wildcards.family} "
        "--settings {params.settings:q} --seed {SEED} --out {output} > {log} 2>&1"


HEAD_RESULTS = expand(f"{R}/heads/{{model}}/none/0.csv", model=MODELS) + expand(
    f"{R}/heads/{{model}}/{{hmethod}}/{{budget}}.csv", model=MODELS, hmethod=HEAD_METHODS, budget=BUDGETS)
# the probe models' weights too: after a fresh clone (committed eval tables, no weights) they retrain
MQAR_RESULTS = expand(f"{R}/mqar/eval/{{family}}.csv", family=MQAR_FAMILIES) + [
    weights(f"{R}/mqar/models/{family}") for family in MQAR_FAMILIES]


rule head_pruning:
    input:
        HEAD_RESULTS + MQAR_RESULTS,


TARGETS["heads"] = HEAD_RESULTS + MQAR_RESULTS
