# Perplexity and offline lm-eval tasks of every checkpoint: the unpruned model is method 'none', ratio 0.


def evaluated(w):
    if w.method == "none":
        return checkpoint(w.model)
    return f"{R}/pruned/{w.model}/{w.method}/{w.ratio}"


rule evaluate:
    input:
        model=evaluated,
    output:
        f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv",
    params:
        settings=settings("evaluate"),
    log:
        f"{R}/logs/evaluate/{{model}}/{{method}}/{{ratio}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr evaluate --model {input.model} --model-name {wildcards.model} "
        "--method {wildcards.method} --ratio {wildcards.ratio} --settings {params.settings:q} --seed {SEED} "
        "--out {output} > {log} 2>&1"


EVALS = expand(f"{R}/eval/{{model}}/none/0.csv", model=MODELS) + expand(
    f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv", model=MODELS, method=METHODS, ratio=RATIOS) + expand(
    f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv", model=MODELS, method=RECOVERED, ratio=RECOVER_RATIOS)


rule evaluations:
    input:
        EVALS,


TARGETS["evaluate"] = EVALS
