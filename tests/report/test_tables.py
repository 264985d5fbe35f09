"""tables: every builder's numbers equal the input files, and Markdown / LaTeX show the CSV values."""
import math

import pandas as pd
import pytest
from report_synth import BASE_PPL, METHODS, RATIOS, SLOPE, acc_value, write_all, write_evals, write_pruning

from lapr.report import tables as T
from lapr.report.results import collect


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return collect(write_all(tmp_path_factory.mktemp("res") / "embedded"))


@pytest.fixture(scope="module")
def built(res, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    tables = {t.name: t for t in T.build_tables(res, ratio=0.5)}
    for t in tables.values():
        T.write_table(t, out)
    return tables, out


def md_rows(path):
    """Markdown table -> DataFrame of strings (header from the first '|' line)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return pd.DataFrame(split[2:], columns=split[0])


def as_float(text):
    return math.nan if text == "–" else float(text)


def test_every_table_written(built):
    tables, out = built
    assert set(tables) == {"pretrain_summary", "ppl_table", "lm_eval_table", "lm_eval_grid", "pruning_state",
                           "recovery_table", "throughput_ops", "throughput_models", "rank_summary",
                           "profile_timing", "head_pruning_table"}
    for name, t in tables.items():
        assert (out / f"{name}.csv").is_file()
        assert (out / f"{name}.md").is_file() != t.csv_only
        assert (out / f"{name}.tex").is_file() != t.csv_only
    assert tables["recovery_table"].empty and "recovery disabled" in tables["recovery_table"].note


def test_ppl_table_matches_input_and_markdown_matches_csv(built):
    tables, out = built
    csv = pd.read_csv(out / "ppl_table.csv")
    assert len(csv) == 2 * 2 * len(METHODS)
    # ppl/<corpus> rows are token perplexity, not lm-eval's word perplexity: the table says so
    assert tables["ppl_table"].title.startswith("Token perplexity") and "word perplexity" in tables["ppl_table"].note
    assert "token perplexity of ppl_table" in tables["lm_eval_table"].note
    for row in csv.itertuples(index=False):
        model, corpus, method = row[0], row[1], row[2]
        base = BASE_PPL[model][corpus]
        assert getattr(row, "_3") == pytest.approx(base)  # r=0 column
        for j, r in enumerate(RATIOS):
            assert row[4 + j] == pytest.approx(base * (1 + SLOPE[method] * r))
        assert row[-1] == pytest.approx(100 * SLOPE[method] * 0.5)  # Δppl at r=0.5 (%)
    md = md_rows(out / "ppl_table.md")
    assert list(md.columns) == list(csv.columns)
    for i in range(len(csv)):
        for c in csv.columns[3:]:
            assert as_float(md.at[i, c]) == pytest.approx(csv.at[i, c], rel=1e-3)


def test_lm_eval_table_at_half(built):
    tables, out = built
    csv = pd.read_csv(out / "lm_eval_table.csv")
    assert "hellaswag acc_norm (%)" in csv.columns and "hellaswag acc (%)" not in csv.columns
    assert "piqa acc (%)" in csv.columns and "wikitext word_perplexity" in csv.columns
    assert "lambada_openai perplexity" in csv.columns
    row = csv[(csv["model"] == "gdn") & (csv["method"] == "wanda")].iloc[0]
    assert row["ratio"] == 0.5
    assert row["piqa acc (%)"] == pytest.approx(100 * acc_value("gdn", "lapr_piqa", "acc", "wanda", 0.5))
    base = csv[(csv["model"] == "gdn") & (csv["method"] == "none (unpruned)")].iloc[0]
    assert base["ratio"] == 0
    accs = [c for c in csv.columns if c.endswith("(%)") and c != "avg acc (%)"]
    assert row["avg acc (%)"] == pytest.approx(row[accs].mean())
    md = md_rows(out / "lm_eval_table.md")
    for i in range(len(csv)):
        for c in accs:
            assert as_float(md.at[i, c]) == pytest.approx(csv.at[i, c], rel=1e-3)


def test_lm_eval_nearest_ratio(res):
    t = T.lm_eval_table(res, ratio=0.6)
    assert "nearest evaluated ratio r=0.5" in t.note
    assert set(t.df.loc[t.df["method"] != "none (unpruned)", "ratio"]) == {0.5}


def test_throughput_speedups(built):
    tables, _ = built
    ops = tables["throughput_ops"].df
    half = ops[(ops["d_k"] == 32) & (ops["phase"] == "decode") & (ops["family"] == "delta_net")].iloc[0]
    assert half["speedup"] == pytest.approx(1.8) and half["ideal speedup"] == pytest.approx(2.0)
    full = ops[(ops["d_k"] == 64)]
    assert full["speedup"].tolist() == pytest.approx([1.0] * 4)
    models = tables["throughput_models"].df
    pruned = models[(models["method"] == "wanda") & (models["phase"] == "decode") & (models["model"] == "gdn")].iloc[0]
    assert pruned["speedup"] == pytest.approx(10.0 / 7.0)
    assert pruned["state per seq (KiB)"] == pytest.approx(4 * 2 * 32 * 64 * 4 / 1024)


def test_head_pruning_table(built):
    tables, out = built
    csv = pd.read_csv(out / "head_pruning_table.csv")
    row = csv[(csv["model"] == "deltanet") & (csv["method"] == "joint") & (csv["budget (frac heads)"] == 0.5)].iloc[0]
    assert row["state saved (%)"] == pytest.approx(40.0)
    assert row["NIAH acc (%)"] == pytest.approx(70.0)
    assert row["ppl/gutenberg_valid"] == pytest.approx(110.0)
    assert csv["method"].iloc[0] == "none (unpruned)" and csv["method"].iloc[1] == "joint"
    md = md_rows(out / "head_pruning_table.md")
    assert as_float(md.at[int(row.name), "NIAH acc (%)"]) == pytest.approx(70.0)


def test_rank_pretrain_pruning_timing(built):
    tables, _ = built
    rs = tables["rank_summary"].df.set_index("model")
    assert rs.at["gdn", "n_low"] == 4 and rs.at["gdn", "n_high"] == 4
    assert rs.at["gdn", "mean utilisation"] == pytest.approx(0.1)
    assert rs.at["gdn", "spearman mean"] == pytest.approx(0.9)
    assert rs.at["gdn", "class agreement min"] == pytest.approx(0.9)
    pre = tables["pretrain_summary"].df.set_index("model")
    assert pre.at["deltanet", "wikitext2_test_raw ppl"] == pytest.approx(400.0)
    assert pre.at["deltanet", "parameters"] == 1_234_567
    ps = tables["pruning_state"].df
    assert ps.loc[(ps["model"] == "gdn") & (ps["ratio"] == 0.75), "state saved (%)"].item() == pytest.approx(75.0)
    assert tables["profile_timing"].df["profile / forward"].tolist() == [1.6, 1.6]


def test_recovery_table(tmp_path):
    root = tmp_path / "r"
    write_pruning(root, models={"gdn": "gated_deltanet"}, methods=("wanda",), ratios=(0.5,), recovery=True)
    t = T.recovery_table(collect(root))
    assert len(t.df) == 1 and t.df["last loss (nats)"].item() == 4.5


def test_recovery_table_before_after(tmp_path):
    # METHOD+lora checkpoints: "before" is the same method's un-recovered checkpoint at that ratio
    root = tmp_path / "r"
    gdn = {"gdn": "gated_deltanet"}
    write_pruning(root, models=gdn, methods=("wanda",), ratios=(0.5,))
    write_pruning(root, models=gdn, methods=("wanda+lora",), ratios=(0.5,), recovery=True)
    write_evals(root, models=gdn, methods=("wanda", "wanda+lora"), ratios=(0.5,), lm=False,
                slope={"wanda": 0.4, "wanda+lora": 0.1})
    df = T.recovery_table(collect(root)).df
    assert df["method"].tolist() == ["wanda+lora"]
    base = df["wikitext2_test_raw token ppl unpruned"].item()
    assert df["wikitext2_test_raw token ppl before recovery"].item() == pytest.approx(base * (1 + 0.4 * 0.5))
    assert df["wikitext2_test_raw token ppl after recovery"].item() == pytest.approx(base * (1 + 0.1 * 0.5))


def test_empty_tables_have_notes(tmp_path):
    res = collect(tmp_path / "nothing")
    for t in T.build_tables(res):
        assert t.empty and t.note
        paths = T.write_table(t, tmp_path / "out")
        assert all(p.is_file() for p in paths)
        if not t.csv_only:
            assert "No data" in (tmp_path / "out" / f"{t.name}.md").read_text()


def test_formatting_and_latex_escaping():
    assert T.fmt(float("nan")) == "–" and T.fmt(True) == "yes" and T.fmt(3) == "3"
    assert T.fmt(412.0) == "412" and T.fmt(71.05) == "71.05" and T.fmt(12345.6) == "12346"
    assert T.fmt(0.12345) == "0.123" and T.fmt(1.5e-5) == "1.50e-05"
    t = T.Table("x_y", "a_b & 50%", pd.DataFrame({"m_1": ["l2_x"], "v": [1.5]}))
    tex = T.to_latex(t)
    assert r"a\_b \& 50\%" in tex and r"l2\_x & 1.5 \\" in tex and "{lr}" in tex
    assert "| l2_x | 1.5 |" in T.to_markdown(t)
