"""figures: each builder runs, writes PNG (dpi 200) + PDF at paper size, and plots the input numbers."""
import pytest
from PIL import Image
from report_synth import BASE_PPL, SLOPE, write_all

from lapr.report import figures as F
from lapr.report.results import collect


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return collect(write_all(tmp_path_factory.mktemp("res") / "embedded"))


@pytest.fixture(scope="module")
def built(res, tmp_path_factory):
    out = tmp_path_factory.mktemp("fig")
    return {f.name: f for f in F.build_figures(res, out)}, out


def _lines(fig, title):
    """Lines of the panel whose title starts with `title`, by method id (their gid; labels are display names)."""
    ax = next(a for a in fig.axes if a.get_title().startswith(title))
    return {line.get_gid() or line.get_label(): line for line in ax.get_lines()}, ax


def test_every_figure_written_at_paper_size(built):
    figs, out = built
    assert set(figs) == set(F.FIGURES)
    for name, f in figs.items():
        assert f.has_data, name
        assert {p.name for p in f.paths} == {f"{name}.png", f"{name}.pdf"}
        assert (out / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        with Image.open(out / f"{name}.png") as im:
            assert im.info["dpi"][0] == pytest.approx(200, abs=1)
            w, h = im.size
        assert 3.2 * 200 <= w <= 7.1 * 200, (name, w)  # single (3.3 in) to double (7 in) column
        for ax in f.mpl.axes:
            if ax.axison and ax.get_lines() + list(ax.patches) + list(ax.collections):
                assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())


def test_ppl_vs_ratio_plots_the_eval_values(built):
    figs, _ = built
    lines, ax = _lines(figs["ppl_vs_ratio"].mpl, "DeltaNet — Gutenberg validation")
    base = BASE_PPL["deltanet"]["gutenberg_valid"]
    assert f"unpruned perplexity {base:.4g}" in ax.get_title()
    assert list(lines["wanda"].get_xdata()) == [0.0, 0.25, 0.5, 0.75]
    # relative change in %: ppl(r) / ppl(0) - 1 = slope * r
    assert list(lines["wanda"].get_ydata()) == pytest.approx([100 * SLOPE["wanda"] * r for r in (0, 0.25, 0.5, 0.75)])
    assert list(lines["none"].get_ydata()) == pytest.approx([0, 0])  # dashed baseline at 0 %
    assert lines["none"].get_linestyle() == "--"
    assert ax.get_yscale() == "symlog" and "%" in ax.get_ylabel()
    assert "ratio" in ax.get_xlabel()
    legend = figs["ppl_vs_ratio"].mpl.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["Random", "L2", "Wanda", "Strong RRQR", "Unpruned"]


def test_ppl_vs_ratio_recovered_as_points(tmp_path):
    """METHOD+lora exists at the recovered ratios only: hollow markers in METHOD's colour, no line from r = 0."""
    from report_synth import write_evals

    from lapr.report import style

    root = tmp_path / "res"
    slope = {**SLOPE, "wanda+lora": 0.1}
    write_evals(root, models={"gdn": "gated_deltanet"}, methods=("wanda",), lm=False)
    write_evals(root, models={"gdn": "gated_deltanet"}, methods=("wanda+lora",), ratios=(0.5,), slope=slope,
                lm=False)
    fig = F.ppl_vs_ratio(collect(root), tmp_path / "ppl").mpl
    lines, _ = _lines(fig, "Gated DeltaNet — Gutenberg validation")
    rec = lines["wanda+lora"]
    assert list(rec.get_xdata()) == [0.5] and list(rec.get_ydata()) == pytest.approx([100 * 0.1 * 0.5])
    assert rec.get_linestyle() == "None" and rec.get_markerfacecolor() == "white"
    assert rec.get_color() == lines["wanda"].get_color() == style.color("wanda")
    assert rec.get_marker() == lines["wanda"].get_marker()
    assert rec.get_label() == "Wanda + LoRA"


def test_head_pruning_and_loss_values(built, res):
    figs, _ = built
    ax = figs["head_pruning"].mpl.axes[1]  # deltanet NIAH panel
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert list(lines["low_rank"].get_xdata()) == pytest.approx([25, 50])
    assert list(lines["low_rank"].get_ydata()) == pytest.approx([50, 30])
    assert list(lines["none"].get_ydata()) == pytest.approx([90, 90])
    ax = figs["loss_curves"].mpl.axes[0]
    valid = {line.get_label(): line for line in ax.get_lines()}["gdn valid"]
    curve = res.loss_curves[(res.loss_curves["model"] == "gdn") & res.loss_curves["valid_loss"].notna()]
    assert list(valid.get_ydata()) == pytest.approx(curve["valid_loss"].tolist())


def test_lm_eval_bars_and_utilisation(built, res):
    figs, _ = built
    ax = figs["lm_eval_bars"].mpl.axes[0]
    assert "r=0.5" in ax.get_title()
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert round(100 * 0.60, 6) in heights and round(100 * (0.60 - 0.2 * 0.5 * 0.1), 6) in heights  # piqa none / wanda
    pts = F.utilisation_points(res)
    assert set(pts["model"]) == {"deltanet", "gdn"} and pts["utilisation"].tolist() == pytest.approx([0.1, 0.1])
    assert sorted(pts["ppl"]) == [350.0, 400.0]  # wikitext2 is the primary corpus


def test_delegation_is_guarded(res, tmp_path, monkeypatch):
    calls = []

    class Prof:
        @staticmethod
        def make_figures(d, out):
            calls.append(("profile", d.name, out.name))
            if d.name == "gdn":
                raise RuntimeError("boom")
            out.mkdir(parents=True, exist_ok=True)
            (out / "rank_vs_t.png").write_bytes(b"x")
            return [out / "rank_vs_t.png"]

    modules = {"lapr.profiling.plots": Prof, "lapr.bench.plots": None, "lapr.heads.plots": None}
    monkeypatch.setattr(F, "_plots_module", lambda name: modules[name])
    paths, problems = F.delegate_figures(res, tmp_path)
    assert paths == [tmp_path / "profile" / "deltanet" / "rank_vs_t.png"]
    assert sorted(calls) == [("profile", "deltanet", "deltanet"), ("profile", "gdn", "gdn")]
    assert any("boom" in p for p in problems)
    assert any("lapr.bench.plots not importable" in p for p in problems)


def test_only_unpruned_evaluated(tmp_path):
    """An early state of the pipeline: only the unpruned models evaluated; nothing may crash."""
    from report_synth import write_evals

    from lapr.report.claims import claims_frame
    from lapr.report.tables import build_tables

    write_evals(tmp_path / "res", methods=())
    res = collect(tmp_path / "res")
    figs = {f.name: f for f in F.build_figures(res, tmp_path / "out")}
    assert figs["ppl_vs_ratio"].has_data and figs["lm_eval_bars"].has_data
    assert not figs["head_pruning"].has_data
    tables = {t.name: t for t in build_tables(res)}
    assert tables["ppl_table"].df["r=0"].tolist() == pytest.approx([80.0, 400.0, 70.0, 350.0])
    a1 = claims_frame(res).query("id == 'A1'")
    assert set(a1["verdict"]) == {"missing"} and a1["reason"].str.contains("r=0.5").all()
