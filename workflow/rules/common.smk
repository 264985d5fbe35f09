# Shared by every stage, and the only file the others read from: config validation (before any job),
# paths, the lapr command line, every config-derived constant, the input and params functions and the
# targets. The stage files define rules only, without lambdas (a params function that needs the job's
# input or output takes it by argument name: `w, input` / `w, output`), and read nothing from one
# another, so their include order is free (this file comes first).
import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from lapr.config import ConfigError, check, check_device, check_values
from lapr.grid import kept_channels, ratio_name
from lapr.report.stage import fixed_outputs

min_version("9.0")

# Before any job: one line naming the bad key, file or value (lapr/config.py). The schema's
# defaults are filled in between the structural and the value checks.
try:
    check(config, workflow.overwrite_configfiles or workflow.configfiles)
    validate(config, "../schemas/config.schema.yaml")
    check_values(config)
except ConfigError as e:
    raise WorkflowError(f"config: {e}") from None
if workflow.is_main_process:
    check_device(config, local_run=False)  # a note only: a login node has no GPU, its cluster's nodes do


onstart:
    # a local run (not a dry run, not a cluster submission) needs the device here, before any job
    try:
        check_device(config, local_run=workflow.local_exec)
    except ConfigError as e:
        raise WorkflowError(f"config: {e}") from None


# ----------------------------------------------------------------------------- paths, command line
# The rules pass these to their commands as params (py, gpu, seed, device), never as shell globals.
R = f"results/{config['name']}"  # every result of this profile
F = f"figures/{config['name']}"  # every figure of this profile
PY = f'"{sys.executable}"'  # the interpreter running snakemake, never a bare python
SEED = config["seed"]
DEVICE = "" if config["device"] == "auto" else f"--device {config['device']}"


SLOTS = config["gpu_slots"]  # jobs sharing one GPU; the `gpu` resource counts these slots


def gpu_prefix(device, whole=False):
    """Prefix of a GPU job's command: `python -m lapr.gpus --` gives the job a slot of a free GPU, or
    the whole GPU (`whole`: benchmarks, whose timings another job would disturb); `--resources gpu=N`
    only bounds how many run at once, N = GPUs x gpu_slots (see lapr/gpus.py). Empty off CUDA."""
    if device != "cuda":
        return ""
    return f"{PY} -m lapr.gpus --slots {SLOTS}{' --whole' if whole else ''} -- "


def gpu_slots(device, whole=False):
    """The job's `gpu` resource: the slots its prefix takes."""
    return (SLOTS if whole else 1) if device == "cuda" else 0


GPU = gpu_prefix(config["device"])
GPUS = gpu_slots(config["device"])  # the `gpu` resource of a job that may use the GPU


def benchmark_tsv(rule, *wildcards, **fixed):
    """Where a job of `rule` writes Snakemake's benchmark (wall time, max RSS, I/O, CPU time): one
    TSV per job, results/<p>/benchmarks/<rule>/<name=value,...>.tsv named by the job's wildcards
    (and `fixed` labels), or results/<p>/benchmarks/<rule>.tsv for a job without any. The report
    step lapr/report/dag_timing.py tabulates them (rule and labels come back from these names)."""
    labels = [f"{w}={{{w}}}" for w in wildcards] + [f"{k}={v}" for k, v in fixed.items()]
    if not labels:
        return f"{R}/benchmarks/{rule}.tsv"
    return f"{R}/benchmarks/{rule}/{','.join(labels)}.tsv"


# ----------------------------------------------------------------------------- checkpoints
MODELS = list(config["models"])
TRAINED = [m for m, spec in config["models"].items() if spec["source"] == "train"]
FETCHED = [m for m, spec in config["models"].items() if spec["source"] == "hub"]
WEIGHTS = "model.safetensors"


def checkpoint(model):
    """The HF checkpoint directory of a configured model."""
    spec = config["models"][model]
    return spec["path"] if spec["source"] == "local" else f"{R}/models/{model}"


def weights(folder):
    """What the producer of a checkpoint folder declares as its output: the weights file. The repo
    commits each folder's records (config, metrics, pruning.json) but not its weights, so after a
    fresh clone the folder exists while its weights do not, and the producer reruns."""
    return f"{folder}/{WEIGHTS}"


def folder(path):
    """The checkpoint folder of an input (a weights file, or a folder for hub/local models)."""
    parent, name = os.path.split(path)
    return parent if name == WEIGHTS else path


def model_input(model):
    """What a job reading a configured model's checkpoint depends on."""
    return weights(checkpoint(model)) if config["models"][model]["source"] == "train" else checkpoint(model)


def base_model(w):
    """Input: the configured model of the job's {model}."""
    return model_input(w.model)


def input_folder(w, input):
    """Params: the checkpoint folder of the job's input `model` (for --model)."""
    return folder(input.model)


def input_folders(w, input):
    """Params: the checkpoint folders of the job's inputs `model` (for --model, one per ratio)."""
    return [folder(p) for p in input.model]


def output_folders(w, output):
    """Params: the checkpoint folders the job writes (for --out), whose weights files are its outputs."""
    return [folder(o) for o in output]


def after_pretraining(_):
    """Inputs that only order a job: with `pretrain_first`, jobs that read no trained model (the MQAR
    probes, the op benchmark) wait for every pretrained model, so that pretraining, the longest path,
    starts at once: one model per GPU (lapr.gpus fills the emptiest GPU first), not beside them or
    behind a benchmark that holds a GPU whole; on 2 CPU cores, both models side by side rather than
    one behind an MQAR probe that took the core left free while the training corpus was tokenised."""
    if not config["pretrain_first"]:
        return []
    return [model_input(m) for m in TRAINED]


def settings(section, **extra):
    """A config section as the JSON string a stage's --settings takes."""
    return json.dumps({**config.get(section, {}), **extra})


def with_device(section):
    """A stage section (dict) whose stage takes its device in --settings (evaluate, heads, MQAR), with
    the top-level `device` filled in where the section leaves it unset: `device: cpu` must hold on a
    machine with a GPU too (`auto` leaves the choice to the stage: cuda when available)."""
    if config["device"] != "auto" and section.get("device") is None:
        return {**section, "device": config["device"]}
    return section


def one_of(names):
    """Wildcard regex matching exactly these names (one rule per group of methods, so that the
    groups' outputs never overlap); matches nothing for an empty list."""
    import re

    return "|".join(re.escape(n) for n in names) or "^$"


# ----------------------------------------------------------------------------- data, pretraining
CORPORA = list(config["corpora"])
EVAL_CORPORA = [c for c in CORPORA if c != "train"]


def corpus_dataset(w):
    """Params: the dataset of the job's {corpus}."""
    return config["corpora"][w.corpus]["dataset"]


def corpus_settings(w):
    """Params: the tokens stage's --settings for the job's {corpus}."""
    return json.dumps({"max_chars": config["corpora"][w.corpus].get("max_chars")})


def model_spec(w):
    """Params: the architecture of the job's {model} as pretrain's --spec (its config entry but `source`)."""
    return json.dumps({k: v for k, v in config["models"][w.model].items() if k != "source"})


def eval_streams(w, input):
    """Params: pretrain's --eval, CORPUS=PATH for each held-out token stream."""
    return " ".join(f"{c}={p}" for c, p in zip(EVAL_CORPORA, input.evals))


def hub_repo(w):
    """Params: the hub repository of the job's {model}."""
    return config["models"][w.model]["path"]


# ----------------------------------------------------------------------------- profiling
PROFILE_FILES = ["ranks.parquet", "spectrum.parquet", "heads.csv", "consistency.csv", "consistency_time.csv",
                 "stratification.csv", "calib.pt", "timing.json"]


def profile_dir(w):
    """Params: the folder of the job's {model}'s PROFILE_FILES (for --out)."""
    return f"{R}/profile/{w.model}"


# ----------------------------------------------------------------------------- channel pruning
PRUNE = config["prune"]
METHODS = PRUNE["methods"]
RATIOS = [ratio_name(r) for r in PRUNE["ratios"]]
# Recovery (LoRA fine-tuning, paper A's optional step): `prune.recovery.methods` x `.ratios` add
# checkpoints under the method name METHOD+lora, pruned the same way and then fine-tuned, so the
# un-recovered one at the same ratio is the "before". `enabled: true` recovers every checkpoint.
_REC = PRUNE.get("recovery", {})
RECOVERY = {k: v for k, v in _REC.items() if k not in ("methods", "ratios", "enabled")}  # the fine-tuning itself
RECOVER_ALL = _REC.get("enabled", False)
RECOVERED = [f"{m}+lora" for m in _REC.get("methods", [])]
RECOVER_RATIOS = [ratio_name(r) for r in _REC.get("ratios", PRUNE["ratios"])]


def pruning_method(w):
    """The pruning method of a (possibly recovered) method name: METHOD+lora prunes as METHOD."""
    return w.method.split("+")[0]


def prune_settings(w):
    recovery = {**RECOVERY, "enabled": RECOVER_ALL or w.method in RECOVERED}
    return json.dumps({**{k: v for k, v in PRUNE.items() if k != "recovery"}, "recovery": recovery})


def pruned(model, method, ratio):
    """The checkpoint of (model, method, ratio) as an input: the configured model for method 'none'."""
    if method == "none":
        return model_input(model)
    return weights(f"{R}/pruned/{model}/{method}/{ratio}")


def at_ratio(w):
    """Input: the checkpoint of the job's {model}, {method} and {ratio}."""
    return pruned(w.model, w.method, w.ratio)


def at_ratios(ratios):
    """Input function: the checkpoints of the job's {model} and {method} at `ratios` (one job per
    method over its ratios; for method none, ratio 0: the configured model)."""
    def inputs(w):
        return [pruned(w.model, w.method, r) for r in ratios]
    return inputs


# ----------------------------------------------------------------------------- head pruning, MQAR
HEADS = config.get("heads", {})
HEAD_METHODS = HEADS.get("methods", ["joint_rank_norm", "low_rank_first", "high_rank_first", "norm_only", "random"])
BUDGETS = [ratio_name(b) for b in HEADS.get("budgets", [0.25, 0.5, 0.75])]
# the B3 lm-eval tasks are the evaluate stage's (same tasks, limits, batch, window), unless heads.lm_eval says
HEAD_SETTINGS = json.dumps(with_device({"lm_eval": {k: v for k, v in config.get("evaluate", {}).items()
                                                     if k in ("tasks", "limit", "batch_size", "max_length")},
                                         **{k: v for k, v in HEADS.items() if k not in ("methods", "budgets")}}))
EVAL_SETTINGS = json.dumps(with_device(config.get("evaluate", {})))
HEAD_ARMS = HEADS.get("arms", {}) is not None  # paper B's disjoint arms, written by the unpruned job
MQAR = config.get("mqar", {})
# default: the families of the configured models, in their order
MQAR_FAMILIES = MQAR.get("families", list(dict.fromkeys(spec["family"] for spec in config["models"].values())))


def arms_out(w, output):
    """Params: the unpruned heads job's `--arms-out FILE ` (empty without arms)."""
    return f"--arms-out {output.arms[0]} " if HEAD_ARMS else ""


# ----------------------------------------------------------------------------- benchmarks
# cpu or cuda, from the config alone: the bench section's own `device`, else the top-level one;
# `auto` (in both) benchmarks the CPU. The file names carry the device and Snakemake fixes them when
# it parses the workflow, which may happen on a machine without the GPU (a SLURM login node), so the
# parsing machine is never asked; a GPU benchmark needs `device: cuda` (gpu, paper) or
# `bench.<ops|model>.device: cuda`. The stage gets the same device in its settings, so what it
# measures is what the file name says.
BENCH = config.get("bench", {})


def bench_device(section):
    for device in (BENCH.get(section, {}).get("device"), config["device"]):
        if device in ("cpu", "cuda"):
            return device
    return "cpu"


BENCH_OPS_DEVICE = bench_device("ops")
BENCH_MODEL_DEVICE = bench_device("model")


def bench_threads(device):
    """A benchmark job's `threads`. On the CPU of a local run: every core, so that the scheduler runs
    no other job beside it; a neighbour's work on the shared cores lands in the timings (two embedded
    runs measured GDN's prefill speed-up at 1.94x and 1.17x with neighbours). The benchmark itself
    uses bench.<ops|model>.threads (OMP_NUM_THREADS: the profile's threads). A cluster job has its
    own cores, and a GPU benchmark takes a whole GPU instead (gpu_prefix). Only the main process of a
    local run decides: the Snakemake that runs one job inside a cluster job must see the threads the
    job was submitted with (srun refuses more CPUs than the allocation)."""
    if device == "cpu" and workflow.local_exec and workflow.is_main_process:
        try:
            return workflow.cores
        except WorkflowError:  # no --cores given (e.g. some dry runs): nothing runs beside it anyway
            pass
    return config["threads"]
PRUNED_DK = sorted({kept_channels(s["head_k_dim"], r, PRUNE.get("multiple", 1))
                    for s in config["models"].values() if "head_k_dim" in s for r in PRUNE["ratios"]})

# ----------------------------------------------------------------------------- report
CAPTIONS = "../../lapr/report/captions"  # relative to this file, as report() reads it


def figure_output(rel, name):
    """A file of the figures stage; PNGs and CSVs with a caption go into `snakemake --report`."""
    ext = rel.rsplit(".", 1)[-1]
    if name and ext in ("png", "csv"):
        return report(f"{F}/{rel}", caption=f"{CAPTIONS}/{name}.rst",
                      category={"png": "Figures", "csv": "Tables"}[ext])
    return f"{F}/{rel}"


FIGURE_OUTPUTS = [figure_output(rel, name) for rel, name in fixed_outputs().items()]
DAG_TIMING = f"{R}/dag_timing.csv"  # one row per job's benchmark file, written by the figures job


# from the job's outputs, not R / F: a folder they lie in must follow them where the job runs without
# a shared filesystem (snakemake --lint)
def figure_dir(w, output):
    """Params: the folder holding every output of the figures stage (for --out)."""
    return os.path.commonpath(output.figures)


def results_dir(w, output):
    """Params: the profile's results folder, where the figures job writes its timing table."""
    return os.path.dirname(output.timing)


# ----------------------------------------------------------------------------- targets
# stage -> its final outputs, keyed by the name of the aggregate rule that asks for them (its input is
# the list), so `snakemake <key>` makes one stage; `rule all` (Snakefile) asks for all of them
TARGETS = {}
TARGETS["models"] = [model_input(m) for m in MODELS]
TARGETS["profiles"] = expand(f"{R}/profile/{{model}}/{{name}}", model=MODELS, name=PROFILE_FILES)
TARGETS["pruned"] = [weights(p) for p in
                     expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", model=MODELS, method=METHODS, ratio=RATIOS)
                     + expand(f"{R}/pruned/{{model}}/{{method}}/{{ratio}}", model=MODELS, method=RECOVERED,
                              ratio=RECOVER_RATIOS)]
TARGETS["evaluations"] = (expand(f"{R}/eval/{{model}}/none/0.csv", model=MODELS)
                          + expand(f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv", model=MODELS, method=METHODS,
                                   ratio=RATIOS)
                          + expand(f"{R}/eval/{{model}}/{{method}}/{{ratio}}.csv", model=MODELS, method=RECOVERED,
                                   ratio=RECOVER_RATIOS))
# the probe models' weights too: after a fresh clone (committed eval tables, no weights) they retrain
TARGETS["head_pruning"] = (expand(f"{R}/heads/{{model}}/none/0.csv", model=MODELS)
                           + (expand(f"{R}/heads/{{model}}/arms/0.csv", model=MODELS) if HEAD_ARMS else [])
                           + expand(f"{R}/heads/{{model}}/{{hmethod}}/{{budget}}.csv", model=MODELS,
                                    hmethod=HEAD_METHODS, budget=BUDGETS)
                           + expand(f"{R}/mqar/eval/{{family}}.csv", family=MQAR_FAMILIES)
                           + [weights(f"{R}/mqar/models/{family}") for family in MQAR_FAMILIES])
# Shapes (hence speed) depend on the ratio, not on the method, so the model-level bench uses the
# first configured method's checkpoint for every ratio.
TARGETS["benchmarks"] = ([f"{R}/bench/ops_{BENCH_OPS_DEVICE}.csv"]
                         + expand(f"{R}/bench/model/{{model}}/none/0_{BENCH_MODEL_DEVICE}.csv", model=MODELS)
                         + expand(f"{R}/bench/model/{{model}}/{METHODS[0]}/{{ratio}}_{BENCH_MODEL_DEVICE}.csv",
                                  model=MODELS, ratio=RATIOS))
# Every stage's final outputs but the git-ignored calib.pt: `figures` is the end of the full run. After
# a fresh clone checkpoints have no weights, so `figures` would rerun the DAG; `redraw` does not.
RESULT_TABLES = [t for ts in TARGETS.values() for t in ts if not t.endswith("calib.pt")]
TARGETS["figures"] = [f"{F}/README.md", DAG_TIMING]


wildcard_constraints:
    model="|".join(MODELS),
    corpus="[A-Za-z0-9_]+",
    method=r"[a-z_0-9]+(\+lora)?",
    ratio="[0-9.]+",
