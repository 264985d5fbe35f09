# Shared by every stage: config validation (before any job), paths, and the lapr command line.
import json
import math
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from lapr.config import ConfigError, check, check_device, check_values

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

R = f"results/{config['name']}"  # every result of this profile
F = f"figures/{config['name']}"  # every figure of this profile
PY = f'"{sys.executable}"'  # the interpreter running snakemake, never a bare python
SEED = config["seed"]
DEVICE = "" if config["device"] == "auto" else f"--device {config['device']}"


def gpu_prefix(device):
    """Prefix of a GPU job's command: `python -m lapr.gpus --` gives the job a free GPU of its own
    (`--resources gpu=N` only bounds how many run at once; see lapr/gpus.py). Empty off CUDA."""
    return f"{PY} -m lapr.gpus -- " if device == "cuda" else ""


GPU = gpu_prefix(config["device"])
MODELS = list(config["models"])
TRAINED = [m for m, spec in config["models"].items() if spec["source"] == "train"]
FETCHED = [m for m, spec in config["models"].items() if spec["source"] == "hub"]
TARGETS = {}  # stage -> list of final outputs; `rule all` asks for all of them


def checkpoint(model):
    """The HF checkpoint directory of a configured model."""
    spec = config["models"][model]
    return spec["path"] if spec["source"] == "local" else f"{R}/models/{model}"


WEIGHTS = "model.safetensors"


def weights(folder):
    """What a rule that writes a checkpoint folder declares as its output: the weights file. The repo
    commits each folder's records (config, metrics, pruning.json) but not its weights, so after a
    fresh clone the folder exists while its weights do not, and the producer reruns."""
    return f"{folder}/{WEIGHTS}"


def folder(path):
    """The checkpoint folder of a rule's input (a weights file, or a folder for hub/local models)."""
    return path[: -len(WEIGHTS) - 1] if path.endswith("/" + WEIGHTS) else path


def model_input(model):
    """What a rule reading a configured model's checkpoint depends on."""
    return weights(checkpoint(model)) if config["models"][model]["source"] == "train" else checkpoint(model)


def settings(section, **extra):
    """A config section as the JSON string a stage's --settings takes."""
    return json.dumps({**config.get(section, {}), **extra})


def ratio_name(r):
    return f"{float(r):g}"


def one_of(names):
    """Wildcard regex matching exactly these names (a rule per group of methods, so that the
    groups' outputs never overlap); matches nothing for an empty list."""
    import re

    return "|".join(re.escape(n) for n in names) or "^$"


wildcard_constraints:
    model="|".join(MODELS),
    corpus="[A-Za-z0-9_]+",
    method=r"[a-z_0-9]+(\+lora)?",
    ratio="[0-9.]+",
