"""workflow/scripts/wheelhouse.py's logic, offline: which distributions a target needs."""
import importlib.util

from workflow_helpers import ROOT

spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "workflow/scripts/wheelhouse.py")
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)


def item(name, version, *requires):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


# pip's report: lapr needs torch and lm_eval; torch alone needs nvidia-cublas; both need numpy
REPORT = [item("lapr", "0.1.0", "torch>=2.4", "lm_eval==0.4.13", "snakemake>=9; python_version >= '3.11'"),
          item("torch", "2.9.0", "nvidia-cublas-cu12==12.8; platform_system == 'Linux'", "numpy"),
          item("nvidia-cublas-cu12", "12.8"), item("numpy", "2.3.0"),
          item("lm_eval", "0.4.13", "numpy", "sqlitedict", "evaluate[extra]>=0.4"),
          item("SQLiteDict", "2.1.0"), item("evaluate", "0.4.6"), item("snakemake", "9.27.1", "pulp>=2.3")]


def test_needed_skips_the_targets_packages_and_what_only_they_need():
    got = wheelhouse.needed(REPORT, skip={"torch"})
    # nvidia-cublas-cu12 only through torch: not fetched; numpy still needed by lm_eval
    names = [n for n, _ in got]
    assert "nvidia-cublas-cu12" not in names and "torch" not in names and "lapr" not in names
    assert names == ["evaluate", "lm-eval", "numpy", "snakemake", "sqlitedict"]  # pulp is not in the report
    assert dict(got)["sqlitedict"] == "2.1.0"  # names are canonical (PEP 503), versions pip's


def test_needed_without_skips_is_the_whole_closure():
    assert len(wheelhouse.needed(REPORT, skip=set())) == len(REPORT) - 1


def test_read_have_takes_freeze_lines_and_bare_names(tmp_path):
    have = tmp_path / "freeze.txt"
    have.write_text("# the target\ntorch==2.11.0+cu130\nTyping_Extensions==4.12\npandas @ file:///x.whl\n"
                    "-e git+https://example/x#egg=x\n\nnumpy\n")
    assert wheelhouse.read_have(have) == {"torch", "typing-extensions", "pandas", "numpy"}
