"""The `evaluate` stage: settings validation and one end-to-end run on a saved tiny checkpoint."""
import argparse
import json
import math

import pandas as pd
import pytest

from lapr.eval import stage
from lapr.settings import SettingsError


def test_settings_defaults_and_errors():
    s = stage.resolve_settings("{}")
    assert s["tasks"] == list(stage.resolve_settings({"tasks": "paper_a"})["tasks"])
    assert set(s["limit"]) == set(s["tasks"]) and all(v is None for v in s["limit"].values())
    assert s["perplexity"]["datasets"] == ["gutenberg_valid", "wikitext2_test_raw"]
    s = stage.resolve_settings({"tasks": ["lapr_piqa", "lapr_wikitext"], "limit": {"default": 50, "lapr_wikitext": 2},
                                "perplexity": {"datasets": ["wikitext-2-raw"], "seq_len": 128}, "dtype": "bf16"})
    assert s["limit"] == {"lapr_piqa": 50, "lapr_wikitext": 2} and s["dtype"] == "bfloat16"
    assert s["perplexity"] == {**stage.Perplexity.defaults(), "datasets": ["wikitext2_test_raw"], "seq_len": 128}
    assert stage.resolve_settings({"perplexity": None, "tasks": []})["perplexity"]["datasets"] == []
    assert stage.resolve_settings({"limit": 0.1})["limit"]["lapr_piqa"] == 0.1
    for bad, key in [({"limt": 5}, "limt"), ({"limit": -1}, "limit"), ({"limit": {"lapr_nope": 3}}, "lapr_nope"),
                     ({"tasks": ["lapr_nope"]}, "lapr_nope"), ({"perplexity": {"datasets": ["c4"]}}, "c4"),
                     ({"perplexity": {"seqlen": 3}}, "seqlen"), ({"batch_size": 0}, "batch_size"),
                     ({"unigram": "yes"}, "unigram"), ({"dtype": "int8"}, "dtype")]:
        with pytest.raises(ValueError, match=key):
            stage.resolve_settings(bad)
    with pytest.raises(ValueError, match="JSON"):
        stage.resolve_settings("{not json")


def test_stage_end_to_end(tiny_model, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    tiny_model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    out = tmp_path / "eval" / "tiny" / "wanda" / "0.5.csv"
    settings = {"tasks": ["lapr_lambada_openai", "lapr_winogrande"], "limit": {"default": 3, "lapr_winogrande": 2},
                "batch_size": 4, "max_length": 64, "device": "cpu", "unigram": True, "unigram_chars": 20000,
                "unigram_corpus": "gutenberg_valid",   # small file: no 100 MB decompression on a fresh machine
                "perplexity": {"datasets": ["wikitext-2-raw"], "max_tokens": 1000, "seq_len": 64}}
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    stage.run(parser.parse_args(["--model", str(ckpt), "--out", str(out), "--model-name", "tiny",
                                 "--method", "wanda", "--ratio", "0.5", "--settings", json.dumps(settings)]))
    df = pd.read_csv(out)
    assert list(df.columns) == stage.COLUMNS
    assert (df.model == "tiny").all() and (df.method == "wanda").all() and (df.ratio == 0.5).all()
    got = {(t, m) for t, m in zip(df.task, df.metric)}
    assert got == {("lapr_lambada_openai", "perplexity"), ("lapr_lambada_openai", "acc"),
                   ("lapr_lambada_openai", "unigram_perplexity"), ("lapr_winogrande", "acc"),
                   ("ppl/wikitext2_test_raw", "ppl"), ("ppl/wikitext2_test_raw", "nll"),
                   ("ppl/wikitext2_test_raw", "unigram_ppl")}
    assert df.value.map(math.isfinite).all()
    rows = df.set_index(["task", "metric"])
    assert rows.loc[("lapr_lambada_openai", "perplexity"), "n_docs"] == 3
    assert rows.loc[("lapr_winogrande", "acc"), "limit"] == 2
    ppl = rows.loc[("ppl/wikitext2_test_raw", "ppl")]
    assert ppl.n_docs == 1000 // 64 and ppl.limit == 1000 and ppl.stderr > 0
    assert rows.loc[("ppl/wikitext2_test_raw", "nll"), "value"] == pytest.approx(math.log(ppl.value))

    # the samples sidecar, read back from CSV, reproduces every non-unigram value; `nll` is the mean of `ppl`'s
    from lapr import columns
    from lapr.report.results import aggregate_samples
    samples = pd.read_csv(out.parent / "0.5.samples.csv")
    assert list(samples.columns) == columns.SAMPLES
    got = aggregate_samples(samples, by=("task", "metric")).set_index(["task", "metric"])
    want = rows[~rows.index.get_level_values("metric").str.startswith("unigram")
                & (rows.index.get_level_values("metric") != "nll")]
    assert set(got.index) == set(want.index)
    for key, r in want.iterrows():
        assert got.loc[key, "value"] == pytest.approx(r.value, rel=1e-12), key
        assert got.loc[key, "units"] == r.n_docs, key
    w = samples[samples.task == "ppl/wikitext2_test_raw"]
    assert (w.weight == 63).all() and w.value.sum() / w.weight.sum() == pytest.approx(
        rows.loc[("ppl/wikitext2_test_raw", "nll"), "value"], rel=1e-12)

    prov = json.loads((out.parent / "0.5.provenance.json").read_text())
    assert prov["stage"] == "evaluate" and prov["method"] == "wanda" and prov["ratio"] == 0.5
    assert prov["settings"]["limit"] == {"lapr_lambada_openai": 3, "lapr_winogrande": 2}
    assert prov["max_length"] == 64 and prov["n_docs_total"]["lapr_winogrande"] == 1267
    assert {"load", "total", "lapr_lambada_openai", "ppl/wikitext2_test_raw"} <= set(prov["cpu_seconds"])
    assert prov["unigram"] is True and prov["unigram_train_tokens"] > 1000
    assert not list(out.parent.glob(".*tmp"))                       # atomic writes left nothing behind


def test_stage_rejects_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        stage.evaluate_checkpoint(tmp_path / "nope", tmp_path / "x.csv", settings={"tasks": []})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        stage.evaluate_checkpoint(tmp_path / "empty", tmp_path / "x.csv", settings={"tasks": []})
    with pytest.raises(ValueError, match="ratio"):
        stage.evaluate_checkpoint(tmp_path / "empty", tmp_path / "x.csv", ratio=2, settings={"tasks": []})
    assert not (tmp_path / "x.csv").exists()


def test_resolve_settings_is_idempotent():
    s = stage.resolve_settings({"limit": {"default": 5, "lapr_wikitext": 1}, "dtype": "bf16",
                                "perplexity": {"datasets": ["wikitext2"]}, "unigram_corpus": "gutenberg-train"})
    assert stage.resolve_settings(s) == s


def test_stage_several_checkpoints_in_one_process(tiny_model, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    tiny_model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    outs = [tmp_path / "none" / "0.csv", tmp_path / "l2" / "0.25.csv"]
    settings = {"tasks": [], "device": "cpu", "unigram_corpus": "gutenberg_valid", "unigram_chars": 20000,
                "perplexity": {"datasets": ["gutenberg_valid"], "max_tokens": 256, "seq_len": 32}}
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    args = ["--model", str(ckpt), str(ckpt), "--out", *map(str, outs), "--model-name", "tiny",
            "--method", "none", "l2", "--ratio", "0", "0.25", "--settings", json.dumps(settings)]
    stage.run(parser.parse_args(args))
    a, b = (pd.read_csv(o) for o in outs)
    assert list(a.method.unique()) == ["none"] and list(b.method.unique()) == ["l2"] and (b.ratio == 0.25).all()
    assert "unigram_ppl" in set(a.metric) and "unigram_ppl" not in set(b.metric)   # "auto": unpruned only
    assert a[a.metric == "ppl"].value.item() == pytest.approx(b[b.metric == "ppl"].value.item())
    with pytest.raises(ValueError, match="--out"):
        stage.run(parser.parse_args(["--model", str(ckpt), str(ckpt), "--out", str(outs[0])]))


def test_task_ratios_choose_the_checkpoints_that_run_lm_eval(tiny_model, tokenizer, tmp_path):
    # the unpruned (0) and the listed ratios run the tasks; every checkpoint gets perplexity
    assert [stage.runs_tasks({"task_ratios": [0.5]}, r) for r in (0, 0.25, 0.5, 0.75)] == [True, False, True, False]
    assert all(stage.runs_tasks({"task_ratios": None}, r) for r in (0, 0.25, 0.5))
    with pytest.raises(SettingsError, match="task_ratios"):
        stage.resolve_settings({"task_ratios": [1.5]})
    ckpt = tmp_path / "ckpt"
    tiny_model.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    ratios = ["0", "0.25", "0.5"]
    outs = [tmp_path / f"{r}.csv" for r in ratios]
    settings = {"tasks": ["lapr_winogrande"], "limit": 2, "task_ratios": [0.5], "device": "cpu", "unigram": False,
                "perplexity": {"datasets": ["gutenberg_valid"], "max_tokens": 256, "seq_len": 32}}
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    stage.run(parser.parse_args(["--model", *[str(ckpt)] * 3, "--out", *map(str, outs), "--method", "l2",
                                 "--ratio", *ratios, "--settings", json.dumps(settings)]))
    tasks = [set(pd.read_csv(o).task) for o in outs]
    assert tasks == [{"lapr_winogrande", "ppl/gutenberg_valid"}, {"ppl/gutenberg_valid"},
                     {"lapr_winogrande", "ppl/gutenberg_valid"}]
