"""Channel-method names in the workflow config are checked against the registry of
lapr/pruning/channels (lapr/config.py), not against a list in the schema (issue 19)."""
import copy

import pytest
import yaml

from lapr import config as cfgcheck
from workflow_helpers import ROOT, set_key, snakemake

TINY = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
ALLOWED = "l1, l2, pca, pca_qk, pivoted_qr, random, strong_rrqr, taylor, wanda"


def _edited(path, value):
    cfg = copy.deepcopy(TINY)
    set_key(path, value)(cfg)
    return cfg


@pytest.mark.parametrize("path,where", [(["prune", "methods"], "prune.methods.1"),
                                        (["mqar", "eval", "channel", "methods"], "mqar.eval.channel.methods.1")])
def test_unknown_method_is_named_with_the_allowed_ones(path, where):
    with pytest.raises(cfgcheck.ConfigError) as err:
        cfgcheck.check(_edited(path, ["l2", "magic"]))
    assert str(err.value) == (f"{where}: unknown channel method 'magic'; allowed: {ALLOWED} "
                              f"(the methods registered in lapr/pruning/channels)")


def test_every_registered_method_is_accepted_and_is_the_default():
    cfg = _edited(["prune", "methods"], ALLOWED.split(", "))
    cfgcheck.check(cfg)
    cfgcheck.check_values(cfg)
    cfg = copy.deepcopy(TINY)
    del cfg["prune"]["methods"]
    cfgcheck.check(cfg)
    cfgcheck.check_values(cfg)  # fills the default: every method, in the old display order
    assert cfg["prune"]["methods"] == ["random", "l1", "l2", "wanda", "taylor", "pca", "pca_qk",
                                       "pivoted_qr", "strong_rrqr"]


def test_unknown_method_fails_dry_run_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(_edited(["prune", "methods"], ["l2", "magic"])))
    work = tmp_path / "work"
    work.mkdir()
    res = snakemake("-n", "--cores", "1", "--configfile", str(config), "--directory", str(work))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    lines = [line for line in out.splitlines() if line.startswith("config: ")]
    assert lines == [f"config: prune.methods.1: unknown channel method 'magic'; allowed: {ALLOWED} "
                     f"(the methods registered in lapr/pruning/channels)"], out
    assert "Job stats" not in out
