"""The workflow config, checked whole before any job runs: one line naming the bad key, file or value.

`workflow/rules/common.smk` calls `check(config, files)` first thing. It imports neither torch nor
any stage, so a dry run stays fast (every SLURM job parses the Snakefile again).

What it refuses, beyond the JSON schema (workflow/schemas/config.schema.yaml):
- a config without `name` (it would otherwise write into another profile's results/);
- a channel-pruning method (`prune.methods`, `mqar.eval.channel.methods`) that no module of
  lapr/pruning/channels registers: the schema only says "strings", the names come from the
  `@register("name", ...)` calls in those files (read with `ast`, so no torch import), and an
  omitted `prune.methods` becomes every registered method (check_values);
- a model family (`models.*.family`, `bench.ops.families`, `mqar.families`,
  `mqar.train.model.family`) that no module of lapr/models adapts: the schema only says "strings",
  the names are the `model_type`s of the Family subclasses there (lapr.families, read with `ast`);
- a key given twice in one YAML mapping (YAML keeps the last one silently: a duplicated model name
  dropped a model's 29 jobs);
- ratios or budgets that name the same output folder (0.5 and 0.5000001 are both "0.5");
- a head budget that removes every head of a trained model (or of each layer, scope 'layer');
- `device: cuda` for a local run on a machine without an NVIDIA driver (Snakefile's onstart; a dry
  run or a cluster submission only notes it: a SLURM login node has no GPU, its compute nodes do).
"""
from __future__ import annotations

import ast
import functools
import shutil
from pathlib import Path

import yaml

from lapr.grid import heads_removed, kept_channels, ratio_name

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
CHANNELS = Path(__file__).resolve().parent / "pruning" / "channels"  # one module per channel method


class ConfigError(ValueError):
    """A config the workflow refuses; str() is the one line shown to the user."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"{mark.name}:{mark.line + 1}: key {key!r} is given twice (first at line "
                              f"{seen[key] + 1}); YAML would keep only the last")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_strict(path: str | Path) -> dict:
    """A YAML (or JSON) config file; ConfigError for a duplicate key."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "config"


def schema_errors(config: dict, schema: dict | None = None) -> list[str]:
    """Every schema violation as one line 'section.key: problem', unknown keys listing the allowed ones."""
    import jsonschema

    schema = schema or yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = _where(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            for key in extra:
                hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
                lines.append(f"{where}.{key}: unknown key{hint}" if where != "config" else
                             f"{key}: unknown top-level key{hint}")
        elif err.validator == "required":
            lines.append(f"{where}: {err.message}")
        elif err.validator in ("oneOf", "anyOf"):
            lines.append(f"{where}: {err.instance!r} is not valid here ({err.schema.get('description', 'see the schema')})")
        else:
            lines.append(f"{where}: {err.message}")
    return lines


# What a @register call may declare for the figures (lapr.report.style): place in the display order,
# colour, marker, display name.
DISPLAY = ("order", "color", "marker", "label")


@functools.lru_cache(maxsize=None)
def channel_registry(package: Path = CHANNELS) -> dict[str, dict]:
    """{name: {display fact: value}} of every channel-pruning method lapr.pruning.channels registers,
    sorted by name, read from the `@register("name", ..., order=..., color=..., marker=..., label=...)`
    decorators of its modules without importing them (that would import torch on every Snakefile
    parse); a fact the call leaves out, or gives as other than a literal, is absent.
    tests/pruning/test_channel_registry.py checks that this equals the imported registry."""
    out = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:
                    if (isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", None))
                            == "register" and deco.args and isinstance(deco.args[0], ast.Constant)
                            and isinstance(deco.args[0].value, str)):
                        out[deco.args[0].value] = {k.arg: _literal(k.value) for k in deco.keywords
                                                   if k.arg in DISPLAY and _literal(k.value) is not None}
    return dict(sorted(out.items()))


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def channel_methods(package: Path = CHANNELS) -> tuple[str, ...]:
    """The registered channel-pruning methods' names, sorted (channel_registry)."""
    return tuple(channel_registry(package))


def _method_lists(config: dict):
    """(where, list) of every list of channel-method names in the config."""
    methods = config.get("prune", {}).get("methods")
    if isinstance(methods, list):
        yield "prune.methods", methods
    methods = config.get("mqar", {}).get("eval", {}).get("channel", {}).get("methods")
    if isinstance(methods, list):
        yield "mqar.eval.channel.methods", methods


def _check_channel_methods(config: dict) -> None:
    known = channel_methods()
    for where, methods in _method_lists(config):
        for i, m in enumerate(methods):
            if m not in known:
                raise ConfigError(f"{where}.{i}: unknown channel method {m!r}; allowed: {', '.join(known)} "
                                  f"(the methods registered in lapr/pruning/channels)")


def _family_lists(config: dict):
    """(where, list) of every list of family names in the config."""
    for name, spec in (config.get("models") or {}).items():
        if isinstance(spec, dict) and "family" in spec:
            yield f"models.{name}.family", [spec["family"]]
    families = config.get("bench", {}).get("ops", {}).get("families")
    if isinstance(families, list):
        yield "bench.ops.families", families
    mqar = config.get("mqar", {})
    if isinstance(mqar.get("families"), list):
        yield "mqar.families", mqar["families"]
    family = mqar.get("train", {}).get("model", {}).get("family")
    if family is not None:
        yield "mqar.train.model.family", [family]


def _check_families(config: dict) -> None:
    from lapr.families import names

    known = names()
    for where, values in _family_lists(config):
        for value in values:
            if value not in known:
                raise ConfigError(f"{where}: unknown model family {value!r}; allowed: {', '.join(known)} "
                                  f"(the families lapr/models adapts)")


def _check_models(config: dict) -> None:
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


def _check_ratios(config: dict) -> None:
    prune = config.get("prune", {})
    multiple = prune.get("multiple", 1)
    for name, spec in config["models"].items():
        d_k = spec.get("head_k_dim")
        if d_k is None:
            continue  # hub checkpoints: checked by `lapr prune` once the config is downloaded
        for r in prune.get("ratios", []):
            if kept_channels(d_k, r, multiple) < 1:
                raise ConfigError(f"prune.ratios: ratio {r} leaves no key channel of models.{name} "
                                  f"(head_k_dim {d_k}, multiple {multiple})")


def _check_recovery(config: dict) -> None:
    rec = config.get("prune", {}).get("recovery", {})
    ratios = {float(r) for r in config.get("prune", {}).get("ratios", [])}
    if extra := sorted({float(r) for r in rec.get("ratios", [])} - ratios):
        raise ConfigError(f"prune.recovery.ratios {extra} are not in prune.ratios: each recovered "
                          f"checkpoint is compared with the un-recovered one at the same ratio")
    if rec.get("methods") and not set(rec["methods"]) <= set(config.get("prune", {}).get("methods", [])):
        raise ConfigError(f"prune.recovery.methods must be among prune.methods; got {rec['methods']}")


def _distinct(values, where: str) -> None:
    names: dict[str, float] = {}
    for v in values:
        if ratio_name(v) in names:
            raise ConfigError(f"{where}: {names[ratio_name(v)]!r} and {v!r} are the same value once written as "
                              f"a file name ({ratio_name(v)!r}); give each once")
        names[ratio_name(v)] = v


def _check_distinct(config: dict) -> None:
    prune, heads = config.get("prune", {}), config.get("heads", {})
    _distinct(prune.get("ratios", []), "prune.ratios")
    _distinct(prune.get("recovery", {}).get("ratios", []), "prune.recovery.ratios")
    _distinct(heads.get("budgets", []), "heads.budgets")


def _check_head_budgets(config: dict) -> None:
    """Budgets that leave a trained model no head at all (hub models: checked by `lapr heads`)."""
    heads = config.get("heads", {})
    scope, min_keep = heads.get("scope", "global"), heads.get("min_keep", 0)
    for name, spec in config["models"].items():
        if "num_heads" not in spec or "num_layers" not in spec:
            continue
        per_layer, layers = spec.get("num_v_heads", spec["num_heads"]), spec["num_layers"]
        for b in heads.get("budgets", []):
            total = per_layer * layers
            removed = heads_removed(b, total) if scope == "global" else heads_removed(b, per_layer) * layers
            if removed >= total:
                raise ConfigError(f"heads.budgets: budget {b} removes all {total} heads of models.{name} "
                                  f"({layers} layers x {per_layer}); use a smaller budget")
            if removed < 1:
                raise ConfigError(f"heads.budgets: budget {b} removes no head of models.{name} "
                                  f"({layers} layers x {per_layer} heads)")
            if scope == "layer" and heads_removed(b, per_layer) > per_layer - min_keep:
                raise ConfigError(f"heads.budgets: budget {b} leaves fewer than min_keep={min_keep} heads in "
                                  f"each layer of models.{name}")


def has_cuda_driver() -> bool:
    """An NVIDIA driver on this machine (no torch import: this runs on every Snakefile parse)."""
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def check_device(config: dict, local_run: bool, warn=print) -> None:
    """`device: cuda` without a driver: an error for jobs run here, else a note (cluster submission,
    or a dry run, which may be planning a run elsewhere)."""
    if config.get("device") != "cuda" or has_cuda_driver():
        return
    if local_run:
        raise ConfigError("device: cuda, but this machine has no NVIDIA driver; use device: cpu (or auto), "
                          "or submit through a GPU cluster profile")
    warn("Note: device: cuda, but this machine has no NVIDIA driver: its jobs must run on a GPU node")


def check(config: dict, files=(), schema: dict | None = None) -> None:
    """The config's structure: no duplicate key in `files` (the config files it came from, re-read),
    a name, and the schema; ConfigError (one line) otherwise."""
    for path in files:
        load_strict(path)
    if not config.get("name"):
        given = ", ".join(map(str, files)) or "the command line"
        raise ConfigError(f"name: missing in the config ({given}); every profile names itself "
                          f"(results go to results/<name>/)")
    if errors := schema_errors(config, schema):
        more = f" (and {len(errors) - 1} more: {'; '.join(errors[1:4])})" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
    _check_channel_methods(config)
    _check_families(config)


def check_values(config: dict) -> None:
    """What the schema cannot say, on a config with the schema's defaults filled in (after check).
    Fills in `prune.methods` when omitted: every registered channel method."""
    if isinstance(config.get("prune"), dict) and "methods" not in config["prune"]:
        from lapr.report.style import method_key  # torch-free; the display order: random, l1, ... first
        config["prune"]["methods"] = sorted(channel_methods(), key=method_key)
    _check_channel_methods(config)
    _check_models(config)
    _check_distinct(config)
    _check_ratios(config)
    _check_recovery(config)
    _check_head_budgets(config)


__all__ = ["CHANNELS", "SCHEMA", "ConfigError", "DISPLAY", "channel_methods", "channel_registry", "check", "check_device", "check_values", "has_cuda_driver", "load_strict", "schema_errors"]
