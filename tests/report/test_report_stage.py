"""The `figures` stage end to end on synthetic results: CLI, files, index, captions, settings."""
import json
import re
import time

import pandas as pd
import pytest
from report_synth import write_evals, write_profile

from lapr.report import stage
from lapr.report.figures import FIGURES


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One model, two methods, perplexity only, a profile: the other stages are missing (the figure
    builders' own numbers are checked in test_figures.py; rendering is the slow part here)."""
    root = tmp_path_factory.mktemp("res") / "embedded"
    write_profile(root, "deltanet")
    write_evals(root, models={"deltanet": "delta_net"}, methods=("l2", "strong_rrqr"), ratios=(0.5,), lm=False)
    return root


@pytest.fixture(scope="module")
def report(small, tmp_path_factory):
    from lapr.cli import main
    out = tmp_path_factory.mktemp("fig") / "embedded"
    start = time.perf_counter()
    main(["figures", "--results", str(small), "--out", str(out), "--settings", json.dumps({"delegate": False})])
    return out, time.perf_counter() - start


def test_cli_writes_everything_and_an_index(report):
    out, seconds = report
    readme = (out / "README.md").read_text()
    for name in FIGURES:
        assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file()
        assert f"({name}.png)" in readme
    assert "loss_curves.png" in readme and "_(no data yet)_" in readme  # no pretrain results here
    linked = re.findall(r"\]\(([^)]+)\)", readme)
    assert linked and all((out / rel).is_file() for rel in linked), [r for r in linked if not (out / r).is_file()]
    assert (out / "tables" / "claims.md").is_file() and (out / "provenance.json").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "figures" and prov["stages"]["evaluate"] is True
    assert seconds < 60  # generous here (shared, loaded machine); the target is < 30 s on a free core


def test_readme_claims_match_claims_csv(report):
    out, _ = report
    claims = pd.read_csv(out / "tables" / "claims.csv")
    readme = (out / "README.md").read_text()
    a1 = claims[(claims["id"] == "A1")].iloc[0]
    assert a1["verdict"] == "supported" and a1["measured"] in readme  # strong_rrqr +3%
    assert claims.loc[claims["id"] == "B1", "verdict"].item() == "supported"
    for cid, stage_name in (("A3", "bench"), ("B3", "heads"), ("B4", "heads")):
        row = claims[claims["id"] == cid].iloc[0]
        assert row["verdict"] == "missing" and stage_name in row["reason"]


@pytest.fixture(scope="module")
def empty_report(tmp_path_factory):
    """The report of an empty results folder (no analysis.md either): (results, out, summary)."""
    tmp = tmp_path_factory.mktemp("empty")
    (tmp / "res").mkdir()
    summary = stage.build_report(tmp / "res", tmp / "out", {"delegate": False}, log=lambda *a: None)
    return tmp / "res", tmp / "out", summary


def test_index_embeds_the_results_analysis(tmp_path, empty_report):
    """results/<p>/analysis.md (people's reading of the numbers) opens the figures' README; without it,
    no such section."""
    _, out, _ = empty_report
    assert "What the results say" not in (out / "README.md").read_text()
    res = tmp_path / "res"   # the same empty results, but for the analysis
    res.mkdir()
    (res / stage.ANALYSIS).write_text("B4 cannot be decided: the probe fails unpruned.\n")
    stage.build_report(res, tmp_path / "out2", {"delegate": False}, log=lambda *a: None)
    readme = (tmp_path / "out2" / "README.md").read_text()
    assert readme.index("What the results say") < readme.index("## Claims check")
    assert "B4 cannot be decided: the probe fails unpruned." in readme
    linked = re.findall(r"\]\(([^)]+)\)", readme)
    assert all((tmp_path / "out2" / rel).is_file() for rel in linked)  # the analysis link too


def test_every_output_has_a_caption(report):
    out, _ = report
    names = [p.stem for p in (out / "tables").glob("*.csv")] + list(FIGURES)
    names += ["rank_vs_t", "rank_heatmap", "consistency", "bench_ops_cpu", "bench_speedup_cuda",
              "bench_model_cpu", "heads/heads_niah_tokens", "heads/mqar_noise"]  # each figure: test_style.py
    for name in names:
        assert stage.caption_for(name), name
    for rst in stage.CAPTIONS.glob("*.rst"):
        assert rst.read_text().strip(), rst


def test_empty_results_dir_builds_missing_report(tmp_path, empty_report):
    _, out, summary = empty_report
    assert summary["verdicts"] == {"missing": summary["verdicts"]["missing"]}
    assert not any(summary["stages"].values())
    readme = (out / "README.md").read_text()
    for name in FIGURES:  # 'no data' notices, still PNG + PDF so the file set is fixed
        assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file()
        assert re.search(rf"\({name}\.png\).*no data yet", readme), name
    with pytest.raises(FileNotFoundError, match="--results"):
        stage.build_report(tmp_path / "nope", tmp_path / "out2", {}, log=lambda *a: None)


@pytest.mark.parametrize("bad, match", [
    ('{"ratio": 1.5}', r"^figures.ratio: expected a number in \(0, 1\), got 1.5$"),
    ('{"colour": 1}', "^figures.colour: unknown key; allowed: claims, delegate, ppl_task, ratio$"),
    ("[1]", "JSON object"), ('{"claims": {"nope": 1}}', "^figures.claims.nope: unknown key; allowed: b3_alpha, "),
    ('{"delegate": "yes"}', "^figures.delegate: expected true or false, got 'yes'$"), ("{", "valid JSON"),
])
def test_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        stage.parse_settings(bad)


def test_settings_defaults():
    assert stage.parse_settings("{}") == stage.Figures.defaults() == {"ratio": 0.5, "ppl_task": None, "claims": {},
                                                                      "delegate": True}
    assert stage.parse_settings({"ratio": 0.25})["ratio"] == 0.25


def test_fixed_outputs_exist(report):
    from lapr.report import CSV_ONLY, TABLES
    out, _ = report
    files = stage.fixed_outputs()
    assert all((out / rel).is_file() for rel in files), [r for r in files if not (out / r).is_file()]
    assert {p.stem for p in (out / "tables").glob("*.csv")} == set(TABLES)
    assert not (out / "tables" / f"{CSV_ONLY[0]}.md").exists()
    assert all(stage.caption_text(name) for name in files.values() if name)


def test_cli_help(capsys):
    from lapr.cli import main
    with pytest.raises(SystemExit):
        main(["figures", "--help"])
    text = capsys.readouterr().out
    assert "--results" in text and "--out" in text and "--settings" in text
