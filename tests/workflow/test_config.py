"""Bad configs fail in `snakemake -n`, naming the bad key, before any job is scheduled."""
import pytest
import yaml

from workflow_helpers import ROOT, ahead, set_key as _set, snakemake


BAD = {
    "unknown family": (_set(["models", "deltanet", "family"], "mamba2"), "family"),
    "negative steps": (_set(["pretrain", "steps"], -5), "steps"),
    "ratio outside (0,1)": (_set(["prune", "ratios"], [0.5, 1.0]), "ratios"),
    "unknown method": (_set(["prune", "methods"], ["l2", "magic"]), "methods"),
    "ratio leaves no channel": (_set(["prune", "ratios"], [0.99]), "leaves no key channel"),
    "missing local checkpoint": (_set(["models", "gdn"], {"family": "gated_deltanet", "source": "local",
                                                         "path": "/nonexistent/ckpt"}), "models.gdn.path"),
    "unknown top-level key": (_set(["stepz"], 3), "stepz"),
}


def _bad_dry_run(case, tmp_path):
    """Write the tiny profile with the case's edit (as the config_file fixture does) and return its dry run."""
    edit, _ = BAD[case]
    cfg = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
    edit(cfg)
    config = tmp_path / "tiny-edited.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return lambda: snakemake("-n", "--configfile", str(config), "--directory", str(tmp_path))


@pytest.fixture(scope="module")
def bad_dry_runs(tmp_path_factory):
    """The BAD cases' dry runs, two at a time ahead of their tests: case -> Future."""
    with ahead({case: _bad_dry_run(case, tmp_path_factory.mktemp("bad")) for case in BAD}) as futures:
        yield futures


@pytest.mark.parametrize("case", BAD)
def test_bad_config_fails_before_any_job(case, bad_dry_runs):
    _, needle = BAD[case]
    res = bad_dry_runs[case].result()
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert needle in out, out
    assert "Job stats" not in out  # nothing was scheduled


def test_valid_profiles_dry_run(config_file, tmp_path):
    for profile in ("tiny", "embedded"):
        res = snakemake("-n", "--configfile", str(config_file(profile)), "--directory", str(tmp_path))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "pretrain" in res.stdout
