# Shared by every stage: config validation (before any job), paths, and the lapr command line.
import json
import math
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

validate(config, "../schemas/config.schema.yaml")

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


class ConfigError(ValueError):
    pass


def _check_models():
    for name, spec in config["models"].items():
        where = f"models.{name}"
        if spec["source"] in ("hub", "local") and "path" not in spec:
            raise ConfigError(f"{where}.path is required for source '{spec['source']}'")
        if spec["source"] == "local" and not Path(spec["path"]).joinpath("config.json").exists():
            raise ConfigError(f"{where}.path: no Hugging Face checkpoint at {spec['path']!r}")
        if spec["source"] == "train":
            need = ["hidden_size", "num_layers", "num_heads", "head_k_dim", "head_v_dim"]
            missing = [k for k in need if k not in spec]
            if missing:
                raise ConfigError(f"{where}: trained models need {missing}")
            if "train" not in config["corpora"]:
                raise ConfigError(f"corpora.train is required to train {where}")


def _check_ratios():
    prune = config.get("prune", {})
    multiple = prune.get("multiple", 1)
    for name, spec in config["models"].items():
        d_k = spec.get("head_k_dim")
        if d_k is None:
            continue  # hub checkpoints: checked by `lapr prune` once the config is downloaded
        for r in prune.get("ratios", []):
            kept = math.floor(d_k * (1 - r)) // multiple * multiple
            if kept < 1:
                raise ConfigError(f"prune.ratios: ratio {r} leaves no key channel of models.{name} "
                                  f"(head_k_dim {d_k}, multiple {multiple})")


def _check_recovery():
    rec = config.get("prune", {}).get("recovery", {})
    ratios = {float(r) for r in config.get("prune", {}).get("ratios", [])}
    if extra := sorted({float(r) for r in rec.get("ratios", [])} - ratios):
        raise ConfigError(f"prune.recovery.ratios {extra} are not in prune.ratios: each recovered "
                          f"checkpoint is compared with the un-recovered one at the same ratio")
    if rec.get("methods") and not set(rec["methods"]) <= set(config.get("prune", {}).get("methods", [])):
        raise ConfigError(f"prune.recovery.methods must be among prune.methods; got {rec['methods']}")


_check_models()
_check_ratios()
_check_recovery()


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
