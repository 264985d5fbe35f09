"""The end-of-run lines: each trained model's perplexity against its unigram baseline."""
import json

from lapr.report.summary import model_lines


def _model(root, name, ppl, unigram):
    d = root / "models" / name
    d.mkdir(parents=True)
    doc = {"family": "delta_net", "parameters": 1234, "steps": 10, "planned_steps": 10, "train_tokens_seen": 5,
           "train_time_s": 1.0}
    for corpus, p, u in zip(("gutenberg_valid", "wikitext2_test_raw"), ppl, unigram):
        doc[corpus] = {"nll": 0.0, "ppl": p, "tokens": 9, "unigram_ppl": u, "beats_unigram": p < u}
    (d / "metrics.json").write_text(json.dumps(doc))


def test_lines_say_which_model_beats_the_unigram_baseline(tmp_path):
    _model(tmp_path, "good", (287.25, 1408.0), (969.0, 2127.0))
    _model(tmp_path, "bad", (290.0, 4317.0), (969.0, 2127.0))
    lines = model_lines(tmp_path)
    good = next(line for line in lines if line.strip().startswith("good"))
    bad = next(line for line in lines if line.strip().startswith("bad"))
    assert "gutenberg_valid 287.2 (969.0, below)" in good and "wikitext2_test_raw 1408.0 (2127.0, below)" in good
    assert "wikitext2_test_raw 4317.0 (2127.0, NOT below)" in bad and "1,234 parameters" in bad


def test_no_models_is_said(tmp_path):
    assert "no trained model" in model_lines(tmp_path)[0]
