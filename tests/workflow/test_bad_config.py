"""Bad configs cost nothing: `snakemake -n` (lapr/config.py) refuses them with one line naming the
key, file or value, before any job is scheduled, and nothing under results/ or figures/ changes."""
import copy
import subprocess
import sys

import pytest
import yaml

from lapr import config as cfgcheck
from workflow_helpers import ROOT, ahead, set_key as _set, snakemake

TINY = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())


# (section path, value) -> what the one-line message must name. Typos and bad values in every
# section that used to pass the dry run and fail only when its own job ran (issue 20, item 2).
SECTIONS = {
    "profiling typo": (["profiling", "n_postions"], 64, "profiling.n_postions: unknown key; allowed:"),
    "profiling type": (["profiling", "T"], "2048", "profiling.T"),
    "profiling context": (["profiling", "contexts"], ["gutenberg", "books"], "profiling.contexts.1"),
    "profiling calib typo": (["profiling", "calib"], {"rowz": 4}, "profiling.calib.rowz: unknown key"),
    "evaluate typo": (["evaluate", "limt"], 5, "evaluate.limt: unknown key"),
    "evaluate batch": (["evaluate", "batch_size"], 0, "evaluate.batch_size"),
    "evaluate ppl typo": (["evaluate", "perplexity"], {"seqlen": 64}, "evaluate.perplexity.seqlen: unknown key"),
    "evaluate dtype": (["evaluate", "dtype"], "bf32", "evaluate.dtype"),
    "figures typo": (["figures", "ratoi"], 0.5, "figures.ratoi: unknown key"),
    "figures ratio": (["figures", "ratio"], 1.5, "figures.ratio"),
    "figures claims": (["figures", "claims"], {"marginal": 0.1}, "figures.claims.marginal: unknown key"),
    "heads typo": (["heads", "alpah"], 0.5, "heads.alpah: unknown key"),
    "heads scope": (["heads", "scope"], "model", "heads.scope"),
    "heads application": (["heads", "application"], "cut", "heads.application"),
    "heads eval typo": (["heads", "eval"], {"max_token": 10}, "heads.eval.max_token: unknown key"),
    "heads niah typo": (["heads", "niah"], {"lenghts": [256]}, "heads.niah.lenghts: unknown key"),
    "mqar.train typo": (["mqar", "train", "train", "stepz"], 5, "mqar.train.train.stepz: unknown key"),
    "mqar.train model": (["mqar", "train", "model", "hidden"], 32, "mqar.train.model.hidden: unknown key"),
    "mqar.train task": (["mqar", "train", "task", "seq_len"], "x", "mqar.train.task.seq_len"),
    "mqar.eval typo": (["mqar", "eval", "noize"], [0.1], "mqar.eval.noize: unknown key"),
    "mqar.eval ratio": (["mqar", "eval", "channel", "ratios"], [1.5], "mqar.eval.channel.ratios.0"),
    "mqar.eval heads": (["mqar", "eval", "heads", "budget"], [0.5], "mqar.eval.heads.budget: unknown key"),
    "bench.ops typo": (["bench", "ops", "d_kk"], [16], "bench.ops.d_kk: unknown key"),
    "bench.ops value": (["bench", "ops", "B"], 0, "bench.ops.B"),
    "bench.model typo": (["bench", "model", "decode"], 1, "bench.model.decode: unknown key"),
    "bench.model value": (["bench", "model", "repeats"], "many", "bench.model.repeats"),
    "recovery typo": (["prune", "recovery", "stepz"], 5, "prune.recovery.stepz: unknown key"),
    "recovery lr": (["prune", "recovery", "lr"], -1, "prune.recovery.lr"),
    "recovery distill": (["prune", "recovery", "distill"], "yes", "prune.recovery.distill"),
    "pretrain typo": (["pretrain", "stepz"], 5, "pretrain.stepz: unknown key"),
    # families: the names of lapr/models' modules (lapr.families), not a list in the schema
    "model family": (["models", "gla", "family"], "retnet", "models.gla.family: unknown model family 'retnet'; "
                     "allowed: delta_net, gated_deltanet, gla"),
    "mqar family": (["mqar", "families"], ["delta_net", "mamba"], "mqar.families: unknown model family 'mamba'"),
    "mqar model family": (["mqar", "train", "model", "family"], "rwkv7", "mqar.train.model.family: unknown"),
    "bench.ops family": (["bench", "ops", "families"], ["hgrn"], "bench.ops.families: unknown model family"),
}
# one per section through the real `snakemake -n` (each costs ~3 s); the rest through lapr.config
THROUGH_SNAKEMAKE = ["profiling typo", "evaluate typo", "figures typo", "heads niah typo", "mqar.train typo",
                     "mqar.eval ratio", "bench.ops typo", "bench.model value", "recovery typo", "model family"]


def _edited(path, value):
    cfg = copy.deepcopy(TINY)
    _set(path, value)(cfg)
    return cfg


def _tree(*roots):
    """Every file and folder under roots with its mtime: what 'nothing changed' compares."""
    return {str(p): p.stat().st_mtime_ns for root in roots if root.exists() for p in sorted(root.rglob("*"))}


def _config_error(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("config: ")]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("case", SECTIONS)
def test_bad_section_value_is_refused(case):
    path, value, needle = SECTIONS[case]
    with pytest.raises(cfgcheck.ConfigError) as err:
        cfgcheck.check(_edited(path, value))
    message = str(err.value)
    assert "\n" not in message and message.startswith(needle), message


def _bad_dry_run(case, tmp_path):
    """Write the case's config and start its `snakemake -n` in a fresh work folder."""
    path, value, _ = SECTIONS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(_edited(path, value)))
    work = tmp_path / "work"
    work.mkdir()
    return work, lambda: snakemake("-n", "--cores", "2", "--configfile", str(config), "--directory", str(work))


@pytest.fixture(scope="module")
def bad_dry_runs(tmp_path_factory):
    """The THROUGH_SNAKEMAKE dry runs, two at a time ahead of their tests: case -> (work folder, Future)."""
    runs = {case: _bad_dry_run(case, tmp_path_factory.mktemp("bad")) for case in THROUGH_SNAKEMAKE}
    with ahead({case: call for case, (_, call) in runs.items()}) as futures:
        yield {case: (runs[case][0], futures[case]) for case in runs}


@pytest.mark.parametrize("case", THROUGH_SNAKEMAKE)
def test_bad_section_fails_dry_run_before_any_job(case, bad_dry_runs):
    _, _, needle = SECTIONS[case]
    work, future = bad_dry_runs[case]
    res = future.result()
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert _config_error(out).startswith(f"config: {needle}"), out
    assert "Job stats" not in out
    assert not (work / "results").exists() and not (work / "figures").exists()


def _closed_sections(node, path=()):
    """Every object of the schema that refuses unknown keys, as a config path (a mapping of named
    entries, models.* or corpora.*, through an entry of the tiny profile)."""
    if node.get("additionalProperties") is False:
        yield list(path)
    for key, sub in node.get("properties", {}).items():
        yield from _closed_sections(sub, (*path, key))
    if isinstance(node.get("additionalProperties"), dict) and len(path) == 1:  # models, corpora
        entry = next(iter(TINY[path[-1]]))
        yield from _closed_sections(node["additionalProperties"], (*path, entry))


CLOSED = [p for p in _closed_sections(yaml.safe_load(cfgcheck.SCHEMA.read_text()))]


@pytest.mark.parametrize("path", CLOSED, ids=lambda p: ".".join(p) or "top-level")
def test_every_section_refuses_an_unknown_key(path):
    """Each section, nested ones included, names the unknown key and the allowed ones (the dry run
    shows this line: test_bad_section_fails_dry_run_before_any_job)."""
    with pytest.raises(cfgcheck.ConfigError) as err:
        cfgcheck.check(_edited([*path, "zz_typo"], 1))
    where = ".".join([*path, "zz_typo"])
    message = str(err.value)
    assert message.startswith(f"{where}: unknown key; allowed: " if path else "zz_typo: unknown top-level key; allowed: "), message


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(cfgcheck.ConfigError, match=r"allowed: .*n_positions"):
        cfgcheck.check(_edited(["profiling", "n_postions"], 64))


# The schema's stage sections against the stages' settings models (keys, values, defaults):
# tests/test_stage_settings.py.


@pytest.mark.parametrize("profile", ["tiny", "embedded", "gpu", "paper"])
def test_shipped_profiles_pass(profile):
    cfg = cfgcheck.load_strict(ROOT / "workflow/config" / f"{profile}.yaml")
    cfgcheck.check(cfg)


# ----------------------------------------------------------------------------- item 1: no name

def test_config_without_name_is_refused_and_nothing_changes(tmp_path):
    """The issue's acceptance command, verbatim but for the temporary file's folder."""
    before = _tree(ROOT / "results", ROOT / "figures")
    x = tmp_path / "x.yaml"
    cmd = (f"sed '/^name:/d' workflow/config/tiny.yaml > {x} && "
           f"{sys.executable} -m snakemake -n --cores 2 --configfile {x}")
    res = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert _config_error(out).startswith(f"config: name: missing in the config ({x})"), out
    assert "Job stats" not in out
    assert _tree(ROOT / "results", ROOT / "figures") == before


def test_overlay_after_a_profile_keeps_its_name(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("seed: 3\n")
    res = snakemake("-n", "-p", "--cores", "2", "--configfile", str(ROOT / "workflow/config/tiny.yaml"), str(overlay),
                    "--directory", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "results/tiny/" in res.stdout and "--seed 3" in res.stdout


# ----------------------------------------------------------------------------- item 3: duplicates

def test_duplicate_model_name_is_refused(tmp_path):
    text = (ROOT / "workflow/config/tiny.yaml").read_text()
    first = text.index("  gdn:")
    dup = text.replace("models:\n", "models:\n" + text[first:text.index("\n", text.index("\n", first) + 1) + 1], 1)
    config = tmp_path / "dup.yaml"
    config.write_text(dup)
    res = snakemake("-n", "--cores", "2", "--configfile", str(config), "--directory", str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode != 0
    line = _config_error(out)
    assert f"{config}:" in line and "key 'gdn' is given twice" in line, line
    assert "Job stats" not in out
    assert not (tmp_path / "results").exists()


def test_duplicate_key_anywhere_is_refused(tmp_path):
    config = tmp_path / "dup.yaml"
    config.write_text("name: t\nprune:\n  ratios: [0.5]\n  ratios: [0.25]\n")
    with pytest.raises(cfgcheck.ConfigError, match=r"dup.yaml:4: key 'ratios' is given twice \(first at line 3\)"):
        cfgcheck.load_strict(config)


# ----------------------------------------------------------------------------- item 8: values

@pytest.mark.parametrize("path,value,needle", [
    (["prune", "ratios"], [0.5, 0.5000001], "prune.ratios: 0.5 and 0.5000001 are the same value"),
    (["prune", "recovery", "ratios"], [0.5, 0.50000001], "prune.recovery.ratios: 0.5 and 0.50000001"),
    (["heads", "budgets"], [0.5, 0.5], "heads.budgets: [0.5, 0.5] has non-unique elements"),
    (["heads", "budgets"], [0.25, 0.2500000001], "heads.budgets: 0.25 and 0.2500000001 are the same value"),
    (["heads", "budgets"], [0.9], "heads.budgets: budget 0.9 removes all 4 heads of models.deltanet"),
    (["heads", "budgets"], [0.1], "heads.budgets: budget 0.1 removes no head of models.deltanet"),
])
def test_values_that_collide_or_empty_the_model_are_refused(path, value, needle):
    cfg = _edited(path, value)
    with pytest.raises(cfgcheck.ConfigError) as err:
        cfgcheck.check(cfg)
        cfgcheck.check_values(cfg)
    assert str(err.value).startswith(needle), str(err.value)


def test_layer_scope_budget_that_empties_each_layer_is_refused():
    cfg = _edited(["heads", "budgets"], [0.75])
    cfg["heads"]["scope"] = "layer"
    with pytest.raises(cfgcheck.ConfigError, match="budget 0.75 removes all 4 heads"):
        cfgcheck.check_values(cfg)


def test_cuda_without_driver(monkeypatch):
    monkeypatch.setattr(cfgcheck, "has_cuda_driver", lambda: False)
    notes = []
    cfg = {**TINY, "device": "cuda"}
    cfgcheck.check_device(cfg, local_run=False, warn=notes.append)  # dry run / cluster: a note
    assert notes and "no NVIDIA driver" in notes[0]
    with pytest.raises(cfgcheck.ConfigError, match="device: cuda, but this machine has no NVIDIA driver"):
        cfgcheck.check_device(cfg, local_run=True)
    cfgcheck.check_device({**TINY, "device": "cpu"}, local_run=True)


@pytest.mark.skipif(cfgcheck.has_cuda_driver(), reason="this machine has an NVIDIA driver")
def test_cuda_config_stops_a_local_run_before_its_first_job(tmp_path):
    config = tmp_path / "cuda.yaml"
    config.write_text(yaml.safe_dump({**TINY, "device": "cuda"}))
    work = tmp_path / "work"
    work.mkdir()
    dry = snakemake("-n", "--cores", "1", "--configfile", str(config), "--directory", str(work))
    assert dry.returncode == 0 and "no NVIDIA driver" in dry.stdout + dry.stderr
    res = snakemake("--cores", "1", "--configfile", str(config), "--directory", str(work), "models")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert _config_error(out).startswith("config: device: cuda, but this machine has no NVIDIA driver"), out
    assert not (work / "results").exists()
