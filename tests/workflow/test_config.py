"""Bad configs fail in `snakemake -n`, naming the bad key, before any job is scheduled."""
import pytest

from workflow_helpers import set_key as _set, snakemake


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


@pytest.mark.parametrize("case", BAD)
def test_bad_config_fails_before_any_job(case, config_file, tmp_path):
    edit, needle = BAD[case]
    res = snakemake("-n", "--configfile", str(config_file(edit=edit)), "--directory", str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert needle in out, out
    assert "Job stats" not in out  # nothing was scheduled


def test_valid_profiles_dry_run(config_file, tmp_path):
    for profile in ("tiny", "embedded"):
        res = snakemake("-n", "--configfile", str(config_file(profile)), "--directory", str(tmp_path))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "pretrain" in res.stdout
