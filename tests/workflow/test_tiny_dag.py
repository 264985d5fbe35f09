"""The whole DAG on the tiny profile, end to end (every stage that exists is exercised in CI)."""
import json
import math
import os

import pytest
import torch

import yaml

from workflow_helpers import ROOT, scheduled, snakemake

TINY_MODELS = list(yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())["models"])  # one per family


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    res = snakemake("--cores", "2", "--configfile", str(ROOT / "workflow/config/tiny.yaml"),
                    "--directory", str(work))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return work


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY_MODELS)
def test_pretrained_checkpoints_reload_with_stock_fla(tiny_run, model):
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    from lapr import backends

    backends.auto()  # stock fla forward needs Triton; on CPU lapr's backend stands in

    path = tiny_run / "results/tiny/models" / model
    metrics = json.loads((path / "metrics.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(path)
    assert reloaded.config.model_type == metrics["family"]
    for name in ("gutenberg_valid", "wikitext2_test_raw"):
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


@pytest.mark.slow
def test_every_stage_left_its_outputs(tiny_run):
    import pandas as pd
    import yaml

    cfg = yaml.safe_load((ROOT / "workflow/config/tiny.yaml").read_text())
    r = tiny_run / "results/tiny"
    for model in cfg["models"]:
        ranks = pd.read_parquet(r / "profile" / model / "ranks.parquet")
        assert {"context", "layer", "head", "position", "threshold_rank", "bound"} <= set(ranks.columns)
        assert (ranks.threshold_rank <= ranks.bound + 1e-9).all()
        for method in cfg["prune"]["methods"]:
            for ratio in cfg["prune"]["ratios"]:
                rec = json.loads((r / "pruned" / model / method / f"{ratio:g}" / "pruning.json").read_text())
                assert rec["method"] == method
                rows = pd.read_csv(r / "eval" / model / method / f"{ratio:g}.csv")
                assert set(rows.method) == {method} and (rows.ratio == ratio).all()
        base = pd.read_csv(r / "eval" / model / "none" / "0.csv")
        assert {"ppl/gutenberg_valid", "lapr_lambada_openai"} <= set(base.task)
    assert (r / "bench" / "ops_cpu.csv").exists()
    index = (tiny_run / "figures/tiny/README.md").read_text()
    assert "claim" in index.lower()


@pytest.mark.slow
def test_every_job_wrote_its_benchmark_and_the_timing_table_lists_them(tiny_run):
    """`benchmark:` on every job rule; the figures job tabulates them in results/tiny/dag_timing.csv,
    one row per job of the DAG but itself (its own file is written after it ends)."""
    import csv
    import re
    from collections import Counter

    dry = snakemake("-n", "-F", "--configfile", str(ROOT / "workflow/config/tiny.yaml"), "--directory", str(tiny_run))
    assert dry.returncode == 0, dry.stderr[-2000:]
    benchmarks = re.findall(r"^\s+benchmark: (.*)$", dry.stdout, re.M)
    table = dry.stdout.split("Job stats:")[1].split("\n\n")[0].strip().splitlines()[2:]
    jobs = Counter({line.split()[0]: int(line.split()[1]) for line in table if line.split()[0] not in ("all", "total")})
    assert len(benchmarks) == sum(jobs.values()) > 60  # every job but `all`
    missing = [b for b in benchmarks if not (tiny_run / b).is_file()]
    assert not missing, missing
    with open(tiny_run / "results/tiny/dag_timing.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert Counter(r["rule"] for r in rows) == jobs - Counter(figures=1)
    root = "results/tiny/benchmarks/"
    listed = {f"{root}{r['rule']}/{r['wildcards']}.tsv" if r["wildcards"] else f"{root}{r['rule']}.tsv" for r in rows}
    assert listed == set(benchmarks) - {f"{root}figures.tsv"}
    assert all(float(r["s"]) > 0 for r in rows)
    assert {"max_rss", "io_in", "cpu_time"} <= set(rows[0])


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY_MODELS)
def test_pruned_checkpoint_reloads_with_smaller_state(tiny_run, model):
    from transformers import AutoModelForCausalLM

    from lapr import backends
    from lapr.models import attention_layers

    backends.auto()
    r = tiny_run / "results/tiny"
    full = AutoModelForCausalLM.from_pretrained(r / "models" / model)
    pruned = AutoModelForCausalLM.from_pretrained(r / "pruned" / model / "l2" / "0.5")
    a, b = attention_layers(full)[0], attention_layers(pruned)[0]
    assert b.head_k_dim == a.head_k_dim // 2 and b.head_v_dim == a.head_v_dim
    assert b.state_bytes() * 2 == a.state_bytes()
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.tensor([[1, 2, 3, 4]])).logits).all()


@pytest.mark.slow
def test_figures_rebuild_from_results_alone(tiny_run):
    """Deleting figures/ and asking for the figures target schedules only the figures job."""
    import shutil

    shutil.rmtree(tiny_run / "figures")
    cfg = str(ROOT / "workflow/config/tiny.yaml")
    dry = snakemake("-n", "--configfile", cfg, "--directory", str(tiny_run), "figures")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert scheduled(dry.stdout) == ["figures", "total"], dry.stdout
    res = snakemake("--cores", "1", "--configfile", cfg, "--directory", str(tiny_run), "figures")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tiny_run / "figures/tiny/README.md").exists()


@pytest.mark.slow
def test_redraw_after_a_fresh_clone(tiny_run):
    """A clone has no .snakemake metadata and checkout-order file times (inputs may be newer than
    the results made from them): `redraw` still schedules nothing but itself and rebuilds figures."""
    import shutil
    import time

    shutil.rmtree(tiny_run / "figures", ignore_errors=True)
    shutil.rmtree(tiny_run / ".snakemake", ignore_errors=True)
    later = time.time() + 60
    for p in (tiny_run / "results").rglob("*"):
        if "models" in p.parts or "pruned" in p.parts:  # inputs of evaluate/heads/bench, now newest
            os.utime(p, (later, later))
    cfg = str(ROOT / "workflow/config/tiny.yaml")
    full = snakemake("-n", "--configfile", cfg, "--directory", str(tiny_run), "figures")
    assert "evaluate" in full.stdout  # what `figures` would redo here, the reason for `redraw`
    dry = snakemake("-n", "--configfile", cfg, "--directory", str(tiny_run), "redraw")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert scheduled(dry.stdout) == ["redraw", "total"], dry.stdout
    res = snakemake("--cores", "1", "--configfile", cfg, "--directory", str(tiny_run), "redraw")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tiny_run / "figures/tiny/README.md").exists() and (tiny_run / "figures/tiny/ppl_vs_ratio.png").exists()


@pytest.mark.slow
def test_fresh_clone_reruns_the_whole_dag(tiny_run):
    """A clone has the committed records of every checkpoint folder (config, metrics, pruning.json)
    but not the git-ignored weights, calib.pt, token streams or Snakemake metadata: the full run
    must retrain and redo every stage, not take the folders as done and fail on missing weights."""
    import shutil
    from collections import Counter

    shutil.rmtree(tiny_run / ".snakemake", ignore_errors=True)
    r = tiny_run / "results/tiny"
    for pattern in ("*.safetensors", "*.bin", "tokenizer.json", "calib.pt", "*.npy"):  # as in .gitignore
        for path in r.rglob(pattern):
            path.unlink()
    assert (r / "models/gdn/metrics.json").exists() and (r / "mqar/models").exists()
    res = snakemake("-n", "--configfile", str(ROOT / "workflow/config/tiny.yaml"), "--directory", str(tiny_run))
    assert res.returncode == 0, res.stderr[-2000:]
    table = res.stdout.split("Job stats:")[1].split("\n\n")[0].strip().splitlines()[2:]
    jobs = Counter({line.split()[0]: int(line.split()[1]) for line in table})
    assert jobs["pretrain"] == len(TINY_MODELS) and jobs["mqar_train"] == 2 and jobs["tokens"] == 3, jobs
    for rule in ("profile", "prune", "prune_recovered", "evaluate", "evaluate_unpruned", "heads", "mqar_eval",
                 "bench_model", "figures"):
        assert jobs[rule] >= 1, (rule, jobs)
