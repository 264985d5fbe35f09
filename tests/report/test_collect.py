"""collect: synthetic results files -> tidy frames; missing stages -> empty frames, broken files -> problems."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from lapr import columns
from report_synth import BASE_PPL, METHODS, RATIOS, write_all, write_evals, write_profile

from lapr.report.results import (BENCH_COLUMNS, EVAL_COLUMNS, HEAD_COLUMNS, PRETRAIN_COLUMNS, RANK_COLUMNS,
                                 collect)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = write_all(tmp_path_factory.mktemp("res") / "embedded")
    return collect(root)


def test_every_stage_is_read(full):
    assert full.stages() == {k: True for k in ("pretrain", "profile", "prune", "evaluate", "bench", "heads")}
    assert full.problems == []
    assert full.profile_name == "embedded"


def test_pretrain_rows_match_metrics(full):
    p = full.pretrain
    assert list(p.columns[:len(PRETRAIN_COLUMNS)]) == PRETRAIN_COLUMNS
    assert len(p) == 4  # 2 models x 2 corpora
    row = p[(p["model"] == "gdn") & (p["corpus"] == "wikitext2_test_raw")].iloc[0]
    assert row["ppl"] == BASE_PPL["gdn"]["wikitext2_test_raw"]
    assert row["family"] == "gated_deltanet" and row["parameters"] == 1_300_000
    curve = full.loss_curves[full.loss_curves["model"] == "gdn"]
    assert row["final_valid_loss"] == pytest.approx(curve["valid_loss"].dropna().iloc[-1])
    assert row["final_train_loss"] == pytest.approx(curve["train_loss"].iloc[-1])


def test_evals_keys_and_values(full):
    e = full.evals
    assert list(e.columns[:len(EVAL_COLUMNS)]) == EVAL_COLUMNS
    keys = e[["model", "method", "ratio"]].drop_duplicates()
    assert len(keys) == 2 * (1 + len(METHODS) * len(RATIOS))
    assert set(e.loc[e["method"] == "none", "ratio"]) == {0.0}
    v = e[(e["model"] == "deltanet") & (e["method"] == "wanda") & (e["ratio"] == 0.5)
          & (e["task"] == "ppl/gutenberg_valid") & (e["metric"] == "ppl")]["value"]
    assert v.item() == pytest.approx(80.0 * (1 + 0.2 * 0.5))


def test_profiles_pruning_bench_heads(full):
    assert set(full.ranks.columns) >= set(RANK_COLUMNS)
    assert set(full.ranks["model"]) == {"deltanet", "gdn"} and set(full.ranks["method"]) == {"none"}
    assert set(full.heads.columns) >= set(HEAD_COLUMNS) and len(full.heads) == 16
    assert len(full.consistency) == 6 and len(full.timing) == 2
    assert len(full.pruning) == 2 * len(METHODS) * len(RATIOS)
    row = full.pruning[(full.pruning["model"] == "gdn") & (full.pruning["method"] == "l2")
                       & (full.pruning["ratio"] == 0.75)].iloc[0]
    assert row["d_k_after"] == 16 and row["state_fraction"] == pytest.approx(0.25)
    assert set(full.bench.columns) >= set(BENCH_COLUMNS)
    assert set(full.bench["level"]) == {"op", "model"} and len(full.bench_files) == 2
    assert set(full.head_pruning["method"]) == {"none", "low_rank", "high_rank", "joint", "random"}


def test_missing_everything_gives_empty_frames(tmp_path):
    res = collect(tmp_path / "nothing")
    assert not any(res.stages().values())
    for name in ("pretrain", "loss_curves", "ranks", "heads", "consistency", "timing", "pruning", "evals",
                 "bench", "head_pruning"):
        df = getattr(res, name)
        assert isinstance(df, pd.DataFrame) and df.empty and len(df.columns) > 0


def test_broken_files_are_reported_not_fatal(tmp_path):
    root = tmp_path / "p"
    write_evals(root, models={"deltanet": "delta_net"}, methods=("l2",), ratios=(0.5,), lm=False)
    (root / "eval" / "deltanet" / "l2" / "0.25.csv").write_text("nonsense\n1\n")
    (root / "models" / "deltanet").mkdir(parents=True)
    (root / "models" / "deltanet" / "metrics.json").write_text("{broken")
    (root / "pruned" / "deltanet" / "l2" / "0.5").mkdir(parents=True)
    (root / "pruned" / "deltanet" / "l2" / "0.5" / "pruning.json").write_text(json.dumps([1, 2]))
    res = collect(root)
    assert len(res.problems) == 3
    assert set(res.evals["ratio"]) == {0.0, 0.5}
    assert res.pretrain.empty and res.pruning.empty


def test_key_from_path_and_hidden_dirs(tmp_path):
    root = tmp_path / "p"
    d = root / "eval" / "gdn" / "wanda"
    d.mkdir(parents=True)
    pd.DataFrame({"task": ["ppl/x"], "metric": ["ppl"], "value": [5.0]}).reindex(columns=columns.EVAL).to_csv(
        d / "0.25.csv", index=False)  # key columns left empty: filled from the path
    hidden = root / "eval" / "gdn" / ".tmp123"  # an atomic write in flight
    hidden.mkdir()
    pd.DataFrame({"task": ["ppl/x"], "metric": ["ppl"], "value": [9.0]}).to_csv(hidden / "0.5.csv", index=False)
    write_profile(root, "gdn", key="gdn/wanda/0.25")  # a pruned checkpoint's profile
    res = collect(root)
    assert res.evals[["model", "method", "ratio", "value"]].values.tolist() == [["gdn", "wanda", 0.25, 5.0]]
    assert set(map(tuple, res.heads[["model", "method", "ratio"]].drop_duplicates().values)) == {("gdn", "wanda", 0.25)}


def test_package_collect_survives_importing_every_submodule(tmp_path):
    """`lapr.report.collect` stays the function once the report's submodules are imported (the
    reader module was once named `collect` too, which rebound the package attribute)."""
    import importlib
    import pkgutil

    import lapr.report
    names = [m.name for m in pkgutil.iter_modules(lapr.report.__path__)]
    assert not set(names) & set(lapr.report.__all__)  # a submodule would shadow the export of its name
    for name in names:
        importlib.import_module(f"lapr.report.{name}")
    from lapr.report import collect as package_collect
    root = tmp_path / "p"
    write_evals(root, models={"gdn": "gated_deltanet"}, methods=("l2",), ratios=(0.5,), lm=False)
    res = package_collect(root)
    assert res.problems == [] and set(res.evals["ratio"]) == {0.0, 0.5}


def test_sidecars_are_skipped_and_a_table_off_schema_is_a_problem(tmp_path):
    from report_synth import write_heads

    root = tmp_path / "p"
    write_heads(root, models=("gdn",))
    d = root / "heads" / "gdn" / "random"
    pd.DataFrame({"sample": [0], "continuation": ["12345"]}).to_csv(d / "0.5.niah.csv", index=False)
    (d / "0.5.provenance.json").write_text("{}")
    assert collect(root).problems == []
    pd.read_csv(d / "0.25.csv").drop(columns=["alpha"]).to_csv(d / "0.25.csv", index=False)
    problems = collect(root).problems
    assert len(problems) == 1 and "0.25.csv" in problems[0] and "['alpha']" in problems[0]


def test_report_refuses_unreadable_results(tmp_path):
    from lapr.report.stage import build_report

    root = write_all(tmp_path / "res" / "p")
    (root / "eval" / "gdn" / "l2" / "0.5.csv").write_text("nonsense\n1\n")
    out = tmp_path / "fig"
    with pytest.raises(ValueError, match=r"1 result file\(s\) could not be read: .*eval/gdn/l2/0.5.csv"):
        build_report(root, out, log=lambda *a, **k: None)
    assert not out.exists()


def test_report_names_the_file_and_its_missing_columns(tmp_path):
    """The embedded report once skipped 32 NIAH CSVs ("missing columns ['metric', 'task', 'value']")
    and succeeded: a table off its schema now stops the report with one line naming both."""
    from lapr.report.stage import build_report

    root = write_all(tmp_path / "res" / "p")
    path = root / "heads" / "gdn" / "low_rank" / "0.25.csv"
    pd.read_csv(path).drop(columns=["task", "metric", "value"]).to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        build_report(root, tmp_path / "fig", log=lambda *a, **k: None)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "missing columns ['metric', 'task', 'value']" in msg


@pytest.mark.parametrize("stage", ["heads", "eval"])
def test_stage_sidecars_are_the_ones_the_reader_skips(stage):
    """A sidecar the stage renames would be read as a result table (and refused): pin the names."""
    import importlib

    mod = importlib.import_module(f"lapr.{stage}.stage")
    out = Path("x/0.5.csv")
    written = mod.sidecars(out) if stage == "heads" else (mod.provenance_path(out), mod.samples_path(out))
    assert sorted(p.name.removeprefix("0.5") for p in written) == sorted(columns.SIDECARS[stage])


def test_eval_samples_are_read_beside_not_as_result_tables(tmp_path):
    from lapr.report.results import SAMPLE_COLUMNS, aggregate_samples

    root = tmp_path / "p"
    write_evals(root, models={"gdn": "gated_deltanet"}, methods=("l2",), ratios=(0.5,), lm=False)
    older = collect(root)                               # results written before the stage kept samples
    assert older.problems == [] and older.samples.empty and list(older.samples.columns) == SAMPLE_COLUMNS
    d = root / "eval" / "gdn" / "l2"
    nll = [5.0, 6.0, 7.0]
    pd.DataFrame({"task": "ppl/wikitext2_test_raw", "metric": "ppl", "unit": [0, 1, 2], "value": nll,
                  "weight": 255}).to_csv(d / "0.5.samples.csv", index=False)
    res = collect(root)
    assert res.problems == []
    pd.testing.assert_frame_equal(res.evals, older.evals)  # the sidecar is no result table
    assert res.samples[["model", "method", "ratio"]].drop_duplicates().values.tolist() == [["gdn", "l2", 0.5]]
    agg = aggregate_samples(res.samples)
    assert agg["value"].item() == pytest.approx(math.exp(sum(nll) / (3 * 255)))
    assert agg["units"].item() == 3
    (d / "0.5.samples.csv").write_text("nonsense\n1\n")  # a broken sidecar is a problem, as a table is
    problems = collect(root).problems
    assert len(problems) == 1 and "0.5.samples.csv" in problems[0]


def test_bench_model_named_by_path_is_read_as_its_id(tmp_path):
    """Model-level rows written before lapr.bench.models named a pruned checkpoint's model by its id
    carry the source directory (results/gpu, 2026-12-01): the reader gives them the id, so the pruned
    rows share the unpruned row's series (speed-up over d_k0)."""
    bench = tmp_path / "gpu" / "bench" / "model" / "gdn"
    (bench / "random").mkdir(parents=True)
    row = {"level": "model", "d_k": 64, "ms_median": 1.0, "model": "results/gpu/models/gdn", "method": "random",
           "ratio": 0.5}
    pd.DataFrame([row]).to_csv(bench / "random" / "0.5_cuda.csv", index=False)
    pd.DataFrame([{**row, "d_k": 128, "model": "gdn", "method": "none", "ratio": 0}]).to_csv(
        bench / "none_cuda.csv", index=False)
    res = collect(tmp_path / "gpu")
    assert sorted(res.bench["model"]) == ["gdn", "gdn"]
