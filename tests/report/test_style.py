"""lapr.report.style: one colour / marker / display name per method in every plotting module, a
deterministic look for unknown methods, failed probes said in the panel, one caption per figure."""
import subprocess
import sys

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from report_synth import write_evals, write_heads, write_mqar

from lapr.report import FIGURES, style
from lapr.report import figures as F
from lapr.report.results import UNPRUNED, collect


def _capture(monkeypatch, module):
    """Figures `module` saves, in order (its _save still writes the files)."""
    figs = []
    save = module._save

    def keep(fig, *args, **kwargs):
        figs.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(module, "_save", keep)
    return figs


def _colours_by_gid(fig) -> dict:
    """method id -> set of hex colours of the lines / patches tagged with it, over the whole figure."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out.setdefault(line.get_gid(), set()).add(to_hex(line.get_color()))
        for patch in ax.patches:
            if patch.get_gid():
                out.setdefault(patch.get_gid(), set()).add(to_hex(patch.get_facecolor()))
    return out


def _legend_texts(fig) -> set:
    return {t.get_text() for leg in fig.legends for t in leg.get_texts()}


def test_registry_methods_have_distinct_looks():
    from lapr.heads.methods import METHODS as HEAD_REGISTRY
    from lapr.pruning.channels import ALL_METHODS

    assert style.UNPRUNED == UNPRUNED
    assert set(style.channel_methods()) == set(ALL_METHODS)
    assert set(style.head_methods()) == set(HEAD_REGISTRY)
    for family in (style.channel_methods(), style.head_methods()):
        looks = [(style.color(m), style.marker(m)) for m in family]
        assert len({c for c, _ in looks}) == len(family), family  # one figure never shows two alike
        assert len({m for _, m in looks}) == len(family), family
        assert all(style.method_style(m).known for m in family)  # a registered method is listed in STYLES
    assert style.label("wanda") == "Wanda" and style.label("strong_rrqr") == "Strong RRQR"
    assert style.label("pca") == "PCA (LAP)" and style.label("l1") == "L1" and style.label(UNPRUNED) == "Unpruned"
    assert style.label("wanda+lora") == "Wanda + LoRA"
    assert style.color("wanda+lora") == style.color("wanda") and style.marker("wanda+lora") == style.marker("wanda")
    assert style.method_style("wanda+lora").recovered and not style.method_style("wanda").recovered
    # tables keep their METHOD_ORDER, now from the style module
    from lapr.report.tables import METHOD_ORDER
    assert METHOD_ORDER == style.METHOD_ORDER == (UNPRUNED,) + style.CHANNEL_METHODS


def test_channel_methods_keep_their_look():
    """The values style.py listed before the registry declared them (issue 19): every figure draws
    the built-in channel methods in this order, colour, marker and name."""
    assert style.CHANNEL_METHODS == ("random", "l1", "l2", "wanda", "taylor", "pca", "pca_qk", "pivoted_qr",
                                     "strong_rrqr")
    assert style.METHOD_ORDER == (UNPRUNED,) + style.CHANNEL_METHODS
    assert {m: style.STYLES[m] for m in style.CHANNEL_METHODS} == {
        "random": ("#7f7f7f", "o", "Random"),
        "l1": ("#1f77b4", "s", "L1"),
        "l2": ("#17becf", "d", "L2"),
        "wanda": ("#d62728", "^", "Wanda"),
        "taylor": ("#9467bd", "v", "Taylor"),
        "pca": ("#8c564b", "P", "PCA (LAP)"),
        "pca_qk": ("#e377c2", "X", "PCA (q/k)"),
        "pivoted_qr": ("#bcbd22", "<", "Pivoted QR"),
        "strong_rrqr": ("#2ca02c", "D", "Strong RRQR"),
    }
    assert style.STYLES[UNPRUNED] == ("#000000", "*", "Unpruned")
    assert list(style.STYLES)[:len(style.CHANNEL_METHODS) + 1] == list(style.METHOD_ORDER)
    # read from the registry's @register calls without importing torch (nor matplotlib, pandas)
    code = ("import sys; from lapr.report import style; print(*style.CHANNEL_METHODS); "
            "assert not {'torch', 'matplotlib', 'pandas'} & set(sys.modules), 'heavy import'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert tuple(res.stdout.split()) == style.CHANNEL_METHODS


def test_order():
    assert style.sort_methods(["strong_rrqr", "wanda+lora", "zzz", "none", "wanda", "random"]) == [
        "none", "random", "wanda", "wanda+lora", "strong_rrqr", "zzz"]
    # among head methods 'random' (in both lists) comes last
    assert style.sort_methods(["random", "low_rank_first", "joint_rank_norm", "none"]) == [
        "none", "joint_rank_norm", "low_rank_first", "random"]


def test_unknown_method_gets_a_deterministic_colour():
    new = "my_new_method"
    s = style.method_style(new)
    assert not s.known and s.label == new
    assert s.color in style.FALLBACK_PALETTE and s.marker in style.FALLBACK_MARKERS
    listed = {c for c, _, _ in style.STYLES.values()}
    assert not set(style.FALLBACK_PALETTE) & listed  # never the colour of a listed method
    # the same in another interpreter with another hash seed (no use of Python's salted hash())
    code = f"from lapr.report import style; print(style.color({new!r}), style.marker({new!r}))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout.split()
        assert out == [s.color, s.marker]
    assert style.color(new + "+lora") == s.color


def test_same_method_same_colour_in_every_plotting_module(tmp_path, monkeypatch):
    """wanda / strong_rrqr / random / joint_rank_norm / an unknown method: the colour of the style module in
    the report's figures and in lapr.heads.plots' figures; families in lapr.bench.plots, head classes in
    lapr.profiling.plots."""
    from lapr.bench import plots as bench_plots
    from lapr.heads import plots as heads_plots
    from lapr.profiling import plots as prof_plots

    import report_synth

    monkeypatch.setitem(report_synth.SLOPE, "brand_new", 0.3)  # a method no module lists
    root = tmp_path / "res"
    write_evals(root, models={"gdn": "gated_deltanet"}, methods=("random", "wanda", "strong_rrqr", "brand_new"))
    heads = {"none": {0.0: 0.9}, "joint_rank_norm": {0.25: 0.8, 0.5: 0.7}, "random": {0.25: 0.7, 0.5: 0.5}}
    write_heads(root, models=("gdn",), niah=heads,
                ppl={m: {b: 100 + 50 * b for b in v} for m, v in heads.items()},
                saved={m: {b: b for b in v} for m, v in heads.items()})
    for fam, method in (("delta_net", "wanda"), ("gated_deltanet", "strong_rrqr")):
        write_mqar(root / "a", families=(fam,), method=method)
        write_mqar(root / "b", families=(fam,), method="brand_new")
    res = collect(root)

    report = {name: fn(res, tmp_path / name).mpl for name, fn in
              (("ppl", F.ppl_vs_ratio), ("bars", F.lm_eval_bars), ("heads", F.head_pruning))}
    figs = _capture(monkeypatch, heads_plots)
    mq = pd.concat([heads_plots.load_mqar_results(root / d) for d in ("a", "b")]).drop_duplicates()
    heads_plots.mqar_dk_figure(mq, tmp_path / "mqar_dk")
    heads_plots.mqar_noise_figure(mq, tmp_path / "mqar_noise")
    heads_plots.heads_metric_figure(heads_plots.load_heads_results(root), "ppl/", "ppl", "perplexity",
                                    tmp_path / "heads_ppl", logy=True)
    drawn = {"ppl_vs_ratio": report["ppl"], "lm_eval_bars": report["bars"], "head_pruning": report["heads"],
             "mqar_dk": figs[0], "mqar_noise": figs[1], "heads_ppl": figs[2]}
    seen = {name: _colours_by_gid(fig) for name, fig in drawn.items()}
    expect = {"wanda": ["ppl_vs_ratio", "lm_eval_bars", "mqar_dk", "mqar_noise"],
              "strong_rrqr": ["ppl_vs_ratio", "lm_eval_bars", "mqar_dk", "mqar_noise"],
              "brand_new": ["ppl_vs_ratio", "lm_eval_bars", "mqar_dk", "mqar_noise"],
              "random": ["ppl_vs_ratio", "lm_eval_bars", "head_pruning", "heads_ppl"],
              "joint_rank_norm": ["head_pruning", "heads_ppl"]}
    for method, names in expect.items():
        for name in names:
            assert seen[name].get(method) == {style.color(method)}, (method, name, seen[name].get(method))
        for name in names:  # legends show display names, not ids
            assert style.label(method) in _legend_texts(drawn[name]), (method, name)
    assert "wanda" not in _legend_texts(drawn["ppl_vs_ratio"]) and "Wanda" in _legend_texts(drawn["mqar_dk"])

    # bench: the family colours of the style module
    bench = _capture(monkeypatch, bench_plots)
    from report_synth import bench_ops_rows
    bench_plots.ops_figure(bench_ops_rows(), "cpu", tmp_path / "bench")
    colours = {to_hex(line.get_color()) for ax in bench[0].axes for line in ax.get_lines()}
    assert {style.family_color("delta_net"), style.family_color("gated_deltanet")} <= colours
    assert style.family_color("gdn") == style.family_color("gated_deltanet")  # model names mean their family

    # profiling: head classes in CLASS_COLORS
    prof = _capture(monkeypatch, prof_plots)
    rows = [dict(context="gutenberg", sample=0, layer=0, head=h, position=t, threshold_rank=min(t, 2 if h else 8),
                 utilisation=0.1, bound=min(t, 8)) for h in (0, 1) for t in (1, 4, 8)]
    head_table = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "final_rank": [8.0, 2.0], "bound": [8, 8],
                               "class": ["high", "low"]})
    prof_plots.stratification(pd.DataFrame(rows), head_table, tmp_path / "strat")
    faces = {to_hex(c) for coll in prof[0].axes[0].collections for c in coll.get_facecolors()}
    assert {style.CLASS_COLORS["high"], style.CLASS_COLORS["low"]} <= faces


def test_failed_probe_is_said_not_drawn(tmp_path, monkeypatch):
    from lapr.heads import plots as heads_plots

    zero = {"none": {0.0: 0.0}, "joint_rank_norm": {0.25: 0.0, 0.5: 0.0}, "random": {0.25: 0.0, 0.5: 0.0}}
    root = tmp_path / "res"
    write_heads(root, models=("gdn",), niah=zero, ppl={m: {b: 100 + 50 * b for b in v} for m, v in zero.items()},
                saved={m: {b: b for b in v} for m, v in zero.items()})
    fig = F.head_pruning(collect(root), tmp_path / "hp").mpl
    ppl_ax, niah_ax = fig.axes[:2]
    assert len(ppl_ax.get_lines()) == 3  # perplexity still drawn: two methods + the unpruned line
    assert not niah_ax.get_lines()
    assert any(t.get_text() == "unpruned model fails this probe (0 %)" for t in niah_ax.texts)

    figs = _capture(monkeypatch, heads_plots)
    df = heads_plots.load_heads_results(root).assign(metric="accuracy_mean")
    heads_plots.heads_metric_figure(df[df["task"] == "niah"], "niah", "accuracy_mean", "NIAH accuracy",
                                    tmp_path / "niah", accuracy=True)
    ax = figs[0].axes[0]
    assert not ax.get_lines() and "unpruned model fails this probe (0 %)" in [t.get_text() for t in ax.texts]

    # a working probe is drawn as before
    assert style.probe_failed([0.0, 0.1], 0.9) == ""
    assert style.probe_failed([0.0, 0.0], None) == "every checkpoint fails this probe (0 %)"
    assert style.probe_failed(np.array([0.5]), 0.004).startswith("unpruned model fails")


def test_every_figure_has_its_own_caption():
    from lapr.bench import plots as bench_plots
    from lapr.heads import plots as heads_plots
    from lapr.profiling import plots as prof_plots
    from lapr.report import stage

    names = list(FIGURES) + list(heads_plots.FIGURES) + list(prof_plots.FIGURES) + list(bench_plots.FIGURES)
    texts = {}
    for name in names:
        text = stage.caption_text(name)  # NAME.rst itself, not a shared fallback
        assert text, name
        texts.setdefault(text, []).append(name)
    assert all(len(v) == 1 for v in texts.values()), [v for v in texts.values() if len(v) > 1]
    for rel in [f"heads/{n}.png" for n in heads_plots.FIGURES] + [f"bench/{n}_cpu.png" for n in bench_plots.FIGURES]:
        name = rel.split("/")[1].removesuffix(".png").removesuffix("_cpu")
        assert stage.caption_for(rel) == " ".join(stage.caption_text(name).split("\n\n")[0].split()), rel
    assert "single-pass" in stage.caption_text("profile_timing")


def test_display_names_for_titles():
    """Figure titles say 'Gated DeltaNet — WikiText-2 test', not 'gdn — wikitext2_test_raw'."""
    assert style.model_label("gdn") == style.model_label("gated_deltanet") == "Gated DeltaNet"
    assert style.model_label("deltanet") == "DeltaNet"
    assert style.model_label("deltanet-1_3b") == "deltanet-1_3b"   # not a family name: the id
    assert style.corpus_label("wikitext2_test_raw") == style.corpus_label("ppl/wikitext2_test_raw") == "WikiText-2 test"
    assert style.corpus_label("gutenberg_valid") == "Gutenberg validation"
    assert style.corpus_label("my_corpus") == "my_corpus"
