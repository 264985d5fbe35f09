"""The whole DAG on the tiny profile, end to end (every stage that exists is exercised in CI)."""
import json
import math

import pytest
import torch

from conftest import ROOT, snakemake


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    res = snakemake("--cores", "2", "--configfile", str(ROOT / "workflow/config/tiny.yaml"),
                    "--directory", str(work))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return work


@pytest.mark.slow
@pytest.mark.parametrize("model", ["deltanet", "gdn"])
def test_pretrained_checkpoints_reload_with_stock_fla(tiny_run, model):
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    from lapr import backends

    backends.auto()  # stock fla forward needs Triton; on CPU lapr's backend stands in

    path = tiny_run / "results/tiny/models" / model
    metrics = json.loads((path / "metrics.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(path)
    assert reloaded.config.model_type == metrics["family"]
    for name in ("gutenberg_valid", "wikitext2_test"):
        assert math.isfinite(metrics[name]["ppl"]) and metrics[name]["unigram_ppl"] > 0
    prov = metrics["provenance"]
    assert {"git_commit", "versions", "hardware", "seed", "settings"} <= set(prov)
    assert (path / "loss_curve.csv").read_text().startswith("step,")
    with torch.no_grad():
        assert torch.isfinite(reloaded(torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.slow
def test_rerun_is_a_no_op(tiny_run):
    res = snakemake("-n", "--configfile", str(ROOT / "workflow/config/tiny.yaml"), "--directory", str(tiny_run))
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
