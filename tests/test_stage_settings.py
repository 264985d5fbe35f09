"""The stages' typed settings models (lapr.settings.Settings): valid settings resolve exactly as the
hand-validated code did, and the workflow's JSON schema accepts and refuses what the models do."""
import dataclasses
import json
import typing
from pathlib import Path

import pytest
import yaml

import resolved_settings
from lapr import config as cfgcheck

RECORDED = json.loads((Path(__file__).with_name("resolved_settings.json")).read_text())


@pytest.fixture(scope="module")
def resolved():
    return resolved_settings.table()


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_valid_settings_resolve_as_before(resolved, case):
    """The shipped profiles' sections (and no settings) give every stage the settings it ran with
    before the models (tests/resolved_settings.json, recorded from the hand-validated code)."""
    assert resolved[case] == RECORDED[case]


# ----------------------------------------------------------------------------- the schema and the models

def _models():
    """Config path -> the model of that section (nested sections included), and the keys of the
    section that only the workflow reads (its grid), which no stage model has."""
    from lapr.bench.stage import ModelBench, Ops
    from lapr.eval.stage import Evaluate
    from lapr.heads.stage import Heads
    from lapr.probes.mqar_stage import Eval, Train
    from lapr.profiling.stage import Profiling
    from lapr.pruning.stage import Prune
    from lapr.report.stage import Figures
    from lapr.train.stage import Pretrain

    top = {"profiling": Profiling, "prune": Prune, "evaluate": Evaluate, "bench.ops": Ops, "bench.model": ModelBench,
           "figures": Figures, "heads": Heads, "mqar.train": Train, "mqar.eval": Eval, "pretrain": Pretrain}
    workflow = {"prune": {"methods", "ratios"}, "prune.recovery": {"methods", "ratios"}, "heads": {"methods", "budgets"}}
    models = {}

    def add(path, model):
        models[path] = model
        hints = typing.get_type_hints(model)
        for f in dataclasses.fields(model):
            inner = [t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if _is_model(t)]
            if inner:
                add(f"{path}.{f.name}", inner[0])

    for path, model in top.items():
        add(path, model)
    return models, workflow


def _is_model(tp) -> bool:
    from lapr.settings import Settings

    return isinstance(tp, type) and issubclass(tp, Settings)


SCHEMA = yaml.safe_load(cfgcheck.SCHEMA.read_text())
MODELS, WORKFLOW_KEYS = _models()


def _section(path: str) -> dict:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node


# values every key is tried with: each type, the edges of the usual ranges, lists and objects
PROBES = [None, True, False, 0, 1, 2, 4.0, -1, 0.5, 1.5, 8, 13, 1e9, "x", "", "auto", [], [0.5], [1], [0, 1], [8],
          [0.5, 0.5], ["x"], {}, {"x": 1}]
# what a model checks beyond the schema (rules between keys, or names the schema only types as
# strings): the dry run leaves these to the stage, or to lapr/config.py's own checks
MODEL_ONLY = {
    "mqar.train.task": "check_config: keys, values and queries must fit vocab_size and seq_len together",
    "heads.eval.max_tokens": "at least seq_len",
    "heads.eval.seq_len": "at most max_tokens",
    "heads.arms.group_low": "at most group_high",
    "heads.arms.group_high": "at least group_low",
    "profiling.eps_sensitivity": "distinct once written as a column name (eps_label)",
    "mqar.train.model.family": "a family lapr adapts (lapr/config.py checks it in the dry run)",
    "bench.ops.families": "families lapr adapts (lapr/config.py checks them in the dry run)",
    "mqar.eval.channel.methods": "registered channel methods (lapr/config.py checks them in the dry run)",
}


def _probes(field, hints) -> list:
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    extra = [dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default]
    for meta in (field.metadata, field.metadata.get("items", {})):
        for choice in meta.get("choices", ()):
            extra += [choice, [choice]]
    return list({json.dumps(v, sort_keys=True): v for v in PROBES + extra}.values())


def _accepts_schema(section: dict, key: str, value) -> bool:
    import jsonschema

    schema = {**section, "$defs": SCHEMA["$defs"], "required": []}
    return jsonschema.Draft202012Validator(schema).is_valid({key: value})


def _accepts_model(model, key: str, value) -> bool:
    from lapr.settings import SettingsError

    try:
        model.parse({key: value})
        return True
    except SettingsError:
        return False


@pytest.mark.parametrize("path", sorted(MODELS))
def test_schema_section_is_the_model(path):
    """Each stage section of the config schema has the model's keys (plus the workflow's grid) and
    accepts exactly the values the model accepts, defaults included, so that `snakemake -n` refuses
    what the stage would refuse after pretraining. The schema holds no defaults of these keys (but
    one older than the models, which must agree): the model is their one source, and Snakemake's
    validate would write schema defaults into the config, hence into every job's --settings and
    params, rerunning recorded jobs."""
    model, section = MODELS[path], _section(path)
    assert section.get("additionalProperties") is False, path
    assert set(section["properties"]) - WORKFLOW_KEYS.get(path, set()) == set(model.keys())
    hints = typing.get_type_hints(model)
    wrong = []
    for field in dataclasses.fields(model):
        where = f"{path}.{field.name}"
        if "default" in section["properties"][field.name]:  # older than the models; dropping it would
            # change the --settings of recorded jobs (prune.multiple), so it must at least agree
            assert section["properties"][field.name]["default"] == model.defaults()[field.name], where
        if where in MODEL_ONLY or path in MODEL_ONLY:
            continue
        for value in _probes(field, hints):
            if _is_model(typing.get_args(hints[field.name])[0] if typing.get_args(hints[field.name])
                         else hints[field.name]) and isinstance(value, dict) and value:
                continue  # a nested section's own keys: its own case
            schema_ok, model_ok = _accepts_schema(section, field.name, value), _accepts_model(model, field.name, value)
            if schema_ok != model_ok:
                wrong.append(f"{where}={value!r}: schema {'accepts' if schema_ok else 'refuses'}, "
                             f"model {'accepts' if model_ok else 'refuses'}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted(MODELS))
def test_defaults_pass_the_schema(path):
    model = MODELS[path]
    defaults = {k: v for k, v in model.defaults().items()}
    import jsonschema

    schema = {**_section(path), "$defs": SCHEMA["$defs"]}
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(defaults)]
    assert not errors, errors
