# Query/key channel pruning (paper A): every method x ratio x model, one loadable checkpoint each.
PRUNE = config["prune"]
METHODS = PRUNE["methods"]
RATIOS = [ratio_name(r) for r in PRUNE["ratios"]]
# Recovery (LoRA fine-tuning, paper A's optional step): `prune.recovery.methods` x `.ratios` add
# checkpoints under the method name + LORA, pruned the same way and then fine-tuned, so the
# un-recovered one at the same ratio is the "before". `enabled: true` recovers every checkpoint.
LORA = "+lora"
_REC = PRUNE.get("recovery", {})
RECOVERY = {k: v for k, v in _REC.items() if k not in ("methods", "ratios", "enabled")}  # the fine-tuning itself
RECOVER_ALL = _REC.get("enabled", False)
RECOVERED = [m + LORA for m in _REC.get("methods", [])]
RECOVER_RATIOS = [ratio_name(r) for r in _REC.get("ratios", PRUNE["ratios"])]


def prune_settings(w):
    recovery = {**RECOVERY, "enabled": RECOVER_ALL or w.method.endswith(LORA)}
    return json.dumps({**{k: v for k, v in PRUNE.items() if k != "recovery"}, "recovery": recovery})


rule prune:
    # one job per (model, method): the ratios share the model load, the calibration statistics and
    # the imports (~10 s of CPU per process on 2 cores); asking for one checkpoint reruns its group
    input:
        model=lambda w: model_input(w.model),
        calib=f"{R}/profile/{{model}}/calib.pt",
    output:
        [weights(p) for p in expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", ratio=RATIOS, allow_missing=True)],
    wildcard_constraints:
        method=one_of(METHODS),
    params:
        settings=prune_settings,
        method=lambda w: w.method.removesuffix(LORA),
        ratios=RATIOS,
        model=lambda w: checkpoint(w.model),
        outs=lambda w, output: [folder(o) for o in output],
    log:
        f"{R}/logs/prune/{{model}}/{{method}}.log",
    threads: config["threads"]
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} {GPU}{PY} -m lapr prune --model {params.model} --calib {input.calib} "
        "--method {params.method} --ratio {params.ratios} --settings {params.settings:q} "
        "--seed {SEED} {DEVICE} --out {params.outs} > {log} 2>&1"


use rule prune as prune_recovered with:
    output:
        [weights(p) for p in expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", ratio=RECOVER_RATIOS, allow_missing=True)],
    wildcard_constraints:
        method=one_of(RECOVERED),
    params:
        settings=prune_settings,
        method=lambda w: w.method.removesuffix(LORA),
        ratios=RECOVER_RATIOS,
        model=lambda w: checkpoint(w.model),
        outs=lambda w, output: [folder(o) for o in output],


PRUNED = [weights(p) for p in expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", model=MODELS, method=METHODS, ratio=RATIOS)
          + expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", model=MODELS, method=RECOVERED, ratio=RECOVER_RATIOS)]


rule pruned:
    input:
        PRUNED,


TARGETS["prune"] = PRUNED
