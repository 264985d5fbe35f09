"""Report figures from `collect.Results`: matplotlib, PNG (dpi 200) + PDF, sized for a paper.

    paths = build_figures(collect("results/embedded"), "figures/embedded")

Own figures (always written; a figure whose inputs are missing shows a 'no data' notice instead, so
the set of files is fixed and a Snakemake rule can name them):
- loss_curves        pretraining train / validation loss vs tokens seen, one colour per model.
- ppl_vs_ratio       paper A: relative perplexity change (%, symlog axis) vs pruning ratio r per method;
                     one panel per model (columns) and eval corpus (rows); the unpruned model as a dashed
                     line at 0; recovered checkpoints (METHOD+lora) as hollow points, not lines.
- utilisation_vs_ppl paper A: mean rank utilisation vs perplexity, one point per checkpoint that has
                     both a profile and an evaluation.
- lm_eval_bars       zero-shot accuracies per task and method at r = 0.5 (one panel per model).
- head_pruning       paper B: perplexity and NIAH accuracy vs state memory saved per head method; a
                     probe the unpruned model fails is said so in its panel instead of drawn at zero.

Colours, markers, display names and the method order come from lapr.report.style (shared with the
delegated plot modules), so a method looks the same in every figure.

Delegated figures (`delegate_figures`): the stage helpers' plot modules, when importable —
lapr.profiling.plots (per profile, under profile/KEY/: rank_vs_t, rank_heatmap, consistency and
stratification, paper B's Fig. 1 with Sarle's bimodality coefficient), lapr.bench.plots (bench/),
lapr.heads.plots (heads/). Each is captioned by its file stem (lapr/report/captions/STEM.rst). A
failing helper is reported, never fatal.

Figures use matplotlib's object API (no pyplot state, no global backend switch) and are written
atomically (lapr.provenance.atomic_path).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lapr import provenance
from lapr.report import FIGURES, style
from lapr.report.results import UNPRUNED, Results
from lapr.report.tables import (baseline_ppl, head_metric_rows, is_accuracy, natural_last, nearest_ratio,
                                pick_task_metrics, ppl_rows, primary_ppl_task, split_alpha_sweep)

FONT = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
        "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.titlesize": 9, "lines.linewidth": 1.2,
        "lines.markersize": 3.5, "axes.grid": True, "grid.linewidth": 0.3, "grid.alpha": 0.5,
        "pdf.fonttype": 42}  # TrueType in PDFs: venues reject Type 3 fonts
SINGLE, DOUBLE = 3.3, 7.0  # column widths (inches)
DPI = 200


@dataclass
class Figure:
    """A written figure: name, files, whether it shows data (else a 'no data' notice), a note."""

    name: str
    paths: list[Path] = field(default_factory=list)
    has_data: bool = True
    note: str = ""
    mpl: object = field(default=None, repr=False)  # the matplotlib Figure (tests read its artists)


def _rc():
    import matplotlib
    return matplotlib.rc_context(FONT)


def _new(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, stem: Path) -> list[Path]:
    return provenance.save_figure(fig, stem, dpi=DPI)


def _no_data(stem: Path, title: str, reason: str) -> list[Path]:
    with _rc():
        fig = _new(SINGLE, 1.4)
        ax = fig.subplots()
        ax.axis("off")
        ax.set_title(title)
        ax.text(0.5, 0.5, f"no data yet:\n{reason}", ha="center", va="center", fontsize=8, color="0.35",
                wrap=True, transform=ax.transAxes)
        return _save(fig, stem)


def method_colors(methods) -> dict:
    """Colour per method (lapr.report.style: the same in every figure, whatever else is shown)."""
    return {m: style.color(m) for m in methods}


def method_markers(methods) -> dict:
    return {m: style.marker(m) for m in methods}


def _tag(artist, method):
    """Record the method id on an artist (its label is the display name): tests look artists up by it."""
    artist.set_gid(str(method))
    return artist


_note_failed_probe = style.note_failed_probe


def _thousands(ax, axis="x"):
    from matplotlib.ticker import EngFormatter
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(EngFormatter(sep=""))


# ----------------------------------------------------------------------------- own figures

def loss_curves(res: Results, stem: Path, smooth: int = 10) -> Figure:
    title = "Pretraining loss"
    df = res.loss_curves
    if df.empty:
        return Figure("loss_curves", _no_data(stem, title, "pretrain stage (models/*/loss_curve.csv)"), False)
    colors = style.model_colors(df["model"])
    with _rc():
        fig = _new(SINGLE, 2.5)
        ax = fig.subplots()
        for model, g in df.groupby("model", sort=True):
            g = g.sort_values("step")
            x = g["tokens"] if g["tokens"].notna().all() else g["step"]
            train = g["train_loss"].astype(float).rolling(smooth, min_periods=1).mean()
            ax.plot(x, train, color=colors[model], lw=1.0, label=f"{model} train")
            v = g[g["valid_loss"].notna()]
            if len(v):
                xv = v["tokens"] if g["tokens"].notna().all() else v["step"]
                ax.plot(xv, v["valid_loss"], color=colors[model], ls="--", marker="o", label=f"{model} valid")
        uses_tokens = df["tokens"].notna().all()
        ax.set_xlabel("training tokens seen" if uses_tokens else "training step")
        _thousands(ax)
        ax.set_ylabel("loss (nats / token)")
        ax.set_title(f"{title} (train: {smooth}-step running mean)")
        ax.legend(frameon=False, ncol=1 if df["model"].nunique() <= 3 else 2)
        return Figure("loss_curves", _save(fig, stem), mpl=fig)


def _percent_axis(ax, values) -> None:
    """Symlog y axis for relative changes in %: linear within +-t around 0, logarithmic beyond, where t
    (a power of ten in [0.1, 1] %) is about the smallest change shown, so changes from 0.1 % to 100s of %
    all stay readable; ticks '+10', '-1', ..."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    vals = np.array([v for v in values if np.isfinite(v)] or [0.0])
    small = np.abs(vals[np.abs(vals) > 1e-9])
    t = float(np.clip(10 ** math.floor(math.log10(np.quantile(small, 0.25))), 0.1, 1.0)) if len(small) else 1.0
    ax.set_yscale("symlog", linthresh=t, linscale=0.5)
    lo, hi = float(min(vals.min(), 0.0)), float(max(vals.max(), 0.0))
    hi = hi * 1.4 if hi > t else hi + 0.5 * t
    lo = lo * 1.4 if lo < -t else lo - 0.5 * t
    ax.set_ylim(lo, hi)
    steps = [t * f * 10 ** k for k in range(6) for f in (1, 3)]
    ticks = [0.0] + [v for v in steps if v <= hi] + [-v for v in steps if -v >= lo]
    if len(ticks) > 9:  # many decades: decades only
        ticks = [v for v in ticks if v == 0 or math.isclose(math.log10(abs(v)) % 1, 0, abs_tol=1e-9)
                 or math.isclose(math.log10(abs(v)) % 1, 1, abs_tol=1e-9)]
    ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else f"{v:+.3g}"))


def ppl_vs_ratio(res: Results, stem: Path) -> Figure:
    title = "Perplexity change vs key-channel pruning ratio"
    rows = ppl_rows(res.evals)
    if rows.empty:
        return Figure("ppl_vs_ratio", _no_data(stem, title, "evaluate stage (eval/*/*/*.csv, ppl rows)"), False)
    base = baseline_ppl(res.evals).set_index(["model", "corpus"])["ppl"]
    models = sorted(pd.unique(rows["model"]))
    corpora = sorted(pd.unique(rows["corpus"]))
    pruned = rows[(rows["method"] != UNPRUNED) & (rows["ratio"] > 0)]
    with _rc():
        width = DOUBLE if len(models) > 1 else SINGLE
        fig = _new(width, 0.7 + 2.2 * len(corpora))
        axes = fig.subplots(len(corpora), len(models), squeeze=False)
        handles = {}
        for i, corpus in enumerate(corpora):
            for j, model in enumerate(models):
                ax = axes[i][j]
                b = base.get((model, corpus), math.nan)
                relative = not math.isnan(b) and b > 0
                part = pruned[(pruned["model"] == model) & (pruned["corpus"] == corpus)]
                values = []
                for method in style.sort_methods(part["method"]):
                    g = part[part["method"] == method].groupby("ratio")["value"].first().sort_index()
                    x, y = list(g.index), [float(v) for v in g.values]
                    if relative:
                        y = [100.0 * (v / b - 1.0) for v in y]
                        if not style.method_style(method).recovered:  # lines start at the unpruned model
                            x, y = [0.0] + x, [0.0] + y
                    kw = style.line_kwargs(method)
                    if kw.get("ls") == "none":
                        kw["markersize"] = 5
                    (h,) = ax.plot(x, y, **kw)
                    handles.setdefault(kw["label"], _tag(h, method))
                    values += y
                if relative:
                    h = ax.axhline(0.0, **style.UNPRUNED_LINE, label=style.label(UNPRUNED))
                    handles.setdefault(style.label(UNPRUNED), _tag(h, UNPRUNED))
                    _percent_axis(ax, values)
                    ax.set_ylabel("perplexity change vs unpruned (%)")
                    ax.set_title(f"{style.model_label(model)} — {style.corpus_label(corpus)}\n"
                                 f"(unpruned perplexity {b:.4g})")
                else:  # no unpruned evaluation: absolute perplexity
                    vals = np.array([v for v in values if np.isfinite(v) and v > 0])
                    if len(vals) and vals.max() / vals.min() > 5:
                        ax.set_yscale("log")
                    ax.set_ylabel("perplexity" + (" (log scale)" if ax.get_yscale() == "log" else ""))
                    ax.set_title(f"{style.model_label(model)} — {style.corpus_label(corpus)}\n"
                                 "(no unpruned evaluation: absolute perplexity)")
                ax.set_xlabel("pruning ratio r (fraction of $d_k$ removed)")
                if len(part):
                    ax.set_xticks(sorted({0.0, *part["ratio"]}))
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncol=min(len(handles), 5), frameon=False)
        return Figure("ppl_vs_ratio", _save(fig, stem), mpl=fig)


def utilisation_points(res: Results, ppl_task: str | None = None) -> pd.DataFrame:
    """One row per profiled checkpoint with an evaluation: model, method, ratio, utilisation, ppl."""
    last = natural_last(res.ranks)
    rows = ppl_rows(res.evals)
    if last.empty or rows.empty:
        return pd.DataFrame(columns=["model", "method", "ratio", "utilisation", "ppl", "task"])
    task = primary_ppl_task(rows["task"], ppl_task)
    rows = rows[rows["task"] == task]
    util = last.groupby(["model", "method", "ratio"], as_index=False)["utilisation"].mean()
    ppl = rows.groupby(["model", "method", "ratio"], as_index=False)["value"].first().rename(columns={"value": "ppl"})
    # unpruned evals may be stored as method 'none' ratio 0: same key as an unpruned profile
    pts = util.merge(ppl, on=["model", "method", "ratio"], how="inner")
    pts["task"] = task
    return pts


FILLSTYLES = ("full", "none", "left", "bottom", "right", "top")  # one per model where colour means method


def utilisation_vs_ppl(res: Results, stem: Path, ppl_task: str | None = None) -> Figure:
    title = "Rank utilisation vs perplexity"
    pts = utilisation_points(res, ppl_task)
    if pts.empty:
        return Figure("utilisation_vs_ppl", _no_data(
            stem, title, "needs a profile (profile/KEY/ranks.parquet) and an evaluation of the same checkpoint"), False)
    from matplotlib.lines import Line2D

    task = pts["task"].iloc[0]
    models = sorted(pd.unique(pts["model"]))
    fills = {m: FILLSTYLES[i % len(FILLSTYLES)] for i, m in enumerate(models)}
    with _rc():
        fig = _new(SINGLE, 2.8)
        ax = fig.subplots()
        for model, g in pts.groupby("model", sort=True):
            for method in style.sort_methods(g["method"]):
                gm = g[g["method"] == method]
                kw = style.line_kwargs(method, ls="none", markersize=7 if method == UNPRUNED else 4.5,
                                       fillstyle=fills[model], markeredgewidth=0.9, zorder=3)
                if fills[model] != "full":
                    kw.update(markerfacecolor=kw["color"], markerfacecoloralt="white", markeredgecolor=kw["color"])
                    if fills[model] == "none":
                        kw.pop("markerfacecoloralt")
                        kw["markerfacecolor"] = "none"
                kw["label"] = f"{model}, {style.label(method)}"
                _tag(ax.plot(gm["utilisation"], gm["ppl"], **kw)[0], method)
                for r in gm.itertuples(index=False):
                    if r.method != UNPRUNED:
                        ax.annotate(f"r={r.ratio:g}", (r.utilisation, r.ppl), fontsize=5, xytext=(2, 2),
                                    textcoords="offset points")
        ax.set_xlim(0, max(0.05, 1.15 * float(pts["utilisation"].max())))  # utilisation lives in [0, 1]
        ax.set_xlabel("mean rank utilisation (stable rank / min($d_k$, $d_v$))")
        ax.set_ylabel(f"perplexity ({task[4:]})")
        ax.set_title(title if (pts["method"] != UNPRUNED).any() else f"{title}\n(unpruned checkpoints only)")
        # legend: one entry per method (colour + marker) and one per model (fill)
        handles = [Line2D([], [], **style.line_kwargs(m, ls="none")) for m in style.sort_methods(pts["method"])]
        if len(models) > 1:
            handles += [Line2D([], [], ls="none", marker="o", color="0.35", fillstyle=fills[m],
                               markerfacecoloralt="white", label=f"model {m}") for m in models]
        ax.legend(handles=handles, frameon=False, fontsize=6, ncol=1 if len(handles) <= 6 else 2)
        return Figure("utilisation_vs_ppl", _save(fig, stem), mpl=fig)


def lm_eval_bars(res: Results, stem: Path, ratio: float = 0.5) -> Figure:
    title = "Zero-shot accuracy"
    ev = res.evals
    acc = ev[ev["metric"].map(is_accuracy) & ~ev["task"].astype(str).str.startswith("ppl/")] if not ev.empty else ev
    if acc.empty:
        return Figure("lm_eval_bars", _no_data(stem, title, "evaluate stage (lm-eval accuracy rows)"), False)
    r = nearest_ratio(acc.loc[acc["method"] != UNPRUNED, "ratio"], ratio)
    sel = acc[(acc["method"] == UNPRUNED) | (acc["ratio"] == r)]
    r_text = f"{r:g}" if r is not None else "n/a (unpruned only)"
    # one accuracy metric per task: acc_norm where the table uses it, else acc
    picks = [(t, m) for t, m in pick_task_metrics(sel) if is_accuracy(m)]
    models = sorted(pd.unique(sel["model"]))
    methods = style.sort_methods(sel["method"])
    with _rc():
        fig = _new(DOUBLE, 0.7 + 1.9 * len(models))
        axes = fig.subplots(len(models), 1, squeeze=False)[:, 0]
        width = 0.8 / max(1, len(methods))
        handles = {}
        for ax, model in zip(axes, models):
            part = sel[sel["model"] == model]
            x = np.arange(len(picks))
            for k, method in enumerate(methods):
                m = part[part["method"] == method]
                vals, errs = [], []
                for task, metric in picks:
                    v = m[(m["task"] == task) & (m["metric"] == metric)]
                    vals.append(100 * float(v["value"].iloc[0]) if len(v) else np.nan)
                    errs.append(100 * float(v["stderr"].iloc[0]) if len(v) and pd.notna(v["stderr"].iloc[0]) else 0)
                ms = style.method_style(method)
                label = ms.label  # the ratio is in the panel title
                bar = {"color": ms.color}
                if ms.recovered:  # recovered: hatched in the method's colour
                    bar = {"facecolor": "white", "edgecolor": ms.color, "hatch": "////", "linewidth": 0.6}
                h = ax.bar(x - 0.4 + width * (k + 0.5), vals, width, yerr=errs, label=label, **bar,
                           error_kw={"elinewidth": 0.5, "capsize": 1})
                handles.setdefault(label, h)
                for patch in h.patches:
                    _tag(patch, method)
            base = part[part["method"] == UNPRUNED]
            for xi, (task, metric) in zip(x, picks):  # a task the unpruned model fails: said, not drawn as 0
                b = base[(base["task"] == task) & (base["metric"] == metric)]["value"]
                others = part[(part["task"] == task) & (part["metric"] == metric)]["value"]
                note = style.probe_failed(others, float(b.iloc[0]) if len(b) else None)
                if note:
                    ax.text(xi, 2, note.replace(" this probe", "\nthis task").replace(" (", "\n("), ha="center",
                            va="bottom", fontsize=6, color="0.3")
            ax.set_xticks(x, [f"{t.removeprefix('lapr_')}\n{m}" for t, m in picks])
            ax.set_ylabel("accuracy (%)")
            ax.set_xlabel("task (metric)")
            ax.set_title(f"{style.model_label(model)}: zero-shot accuracy at r={r_text} (error bars: lm-eval stderr)")
            ax.set_ylim(0, None)
            ax.grid(True, axis="y")
            ax.grid(False, axis="x")
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncol=min(len(handles), 5), frameon=False)
        return Figure("lm_eval_bars", _save(fig, stem), note=f"r={r_text}", mpl=fig)


def head_pruning(res: Results, stem: Path, ppl_task: str | None = None) -> Figure:
    title = "Head pruning by state rank"
    hp = res.head_pruning
    if hp.empty:
        return Figure("head_pruning", _no_data(stem, title, "heads stage (heads/*/*/*.csv)"), False)
    task = primary_ppl_task(hp["task"], ppl_task)
    rows = head_metric_rows(split_alpha_sweep(hp)[0], task)  # joint_rank_norm at its default alpha
    models = sorted(pd.unique(rows["model"]))
    methods = [m for m in style.sort_methods(rows["method"]) if m != UNPRUNED]
    panels = [("ppl", f"perplexity ({task[4:] if task else 'n/a'})"), ("niah", "NIAH accuracy (%)")]
    if rows["mqar"].notna().any():
        panels.append(("mqar", "MQAR accuracy (%)"))
    with _rc():
        fig = _new(DOUBLE, 0.7 + 2.0 * len(models))
        axes = fig.subplots(len(models), len(panels), squeeze=False)
        handles = {}
        for i, model in enumerate(models):
            part = rows[rows["model"] == model]
            base = part[(part["method"] == UNPRUNED) | (part["budget"] == 0)]
            for j, (col, ylabel) in enumerate(panels):
                ax = axes[i][j]
                scale = 100 if col != "ppl" else 1
                b = base[col].dropna()
                if col == "ppl" and b.empty and not res.evals.empty and task:
                    ev = ppl_rows(res.evals)
                    b = ev[(ev["model"] == model) & (ev["method"] == UNPRUNED) & (ev["task"] == task)]["value"]
                ax.set_xlabel("state memory saved (%)")
                ax.set_ylabel(ylabel)
                ax.set_title(style.model_label(model))
                if col != "ppl":
                    ax.set_ylim(-3, 103)  # accuracies on their full scale
                    pruned = part[(part["method"] != UNPRUNED) & (part["budget"] > 0)]
                    if _note_failed_probe(ax, pruned[col], float(b.iloc[0]) if len(b) else None):
                        saved = 100 * pruned["state_saved_frac"].dropna()
                        if len(saved):  # the same x range as the row's other panels
                            ax.set_xlim(saved.min() - 3, saved.max() + 3)
                        continue
                for method in methods:
                    g = part[(part["method"] == method) & (part["budget"] > 0)].sort_values("state_saved_frac")
                    if g.empty or g[col].isna().all():
                        continue
                    (h,) = ax.plot(100 * g["state_saved_frac"], scale * g[col], **style.line_kwargs(method))
                    handles.setdefault(style.label(method), _tag(h, method))
                if len(b):
                    h = ax.axhline(scale * float(b.iloc[0]), **style.UNPRUNED_LINE, label=style.label(UNPRUNED))
                    handles.setdefault(style.label(UNPRUNED), _tag(h, UNPRUNED))
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncol=min(len(handles), 6), frameon=False)
        return Figure("head_pruning", _save(fig, stem), mpl=fig)


def build_figures(res: Results, out_dir, ratio: float = 0.5, ppl_task: str | None = None) -> list[Figure]:
    """Every own figure under out_dir (NAME.png + NAME.pdf)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [loss_curves(res, out / "loss_curves"), ppl_vs_ratio(res, out / "ppl_vs_ratio"),
            utilisation_vs_ppl(res, out / "utilisation_vs_ppl", ppl_task),
            lm_eval_bars(res, out / "lm_eval_bars", ratio), head_pruning(res, out / "head_pruning", ppl_task)]


# ----------------------------------------------------------------------------- delegated figures

def _plots_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def delegate_figures(res: Results, out_dir) -> tuple[list[Path], list[str]]:
    """Figures drawn by the stage helpers' plot modules; returns (paths, problems)."""
    out = Path(out_dir)
    paths, problems = [], []
    prof = _plots_module("lapr.profiling.plots")
    if prof is not None:
        for (model, method, ratio), d in sorted(res.profile_dirs.items(), key=lambda kv: str(kv[1])):
            if not (d / "ranks.parquet").is_file():
                continue
            key = model if method == UNPRUNED else f"{model}/{method}/{ratio:g}"
            try:
                paths += prof.make_figures(d, out / "profile" / key)
            except Exception as err:  # noqa: BLE001 - one broken helper must not stop the report
                problems.append(f"lapr.profiling.plots on {d}: {type(err).__name__}: {err}")
    elif res.profile_dirs:
        problems.append("lapr.profiling.plots not importable: profile figures skipped")
    bench = _plots_module("lapr.bench.plots")
    if res.bench_files:
        if bench is None:
            problems.append("lapr.bench.plots not importable: bench figures skipped")
        else:
            try:
                paths += bench.make_figures(res.bench_files, out / "bench")
            except Exception as err:  # noqa: BLE001
                problems.append(f"lapr.bench.plots: {type(err).__name__}: {err}")
    heads = _plots_module("lapr.heads.plots")
    if not res.head_pruning.empty and heads is not None:
        try:
            got = heads.make_figures(res.root, out / "heads")
            paths += [Path(p) for p in (got or [])]
        except Exception as err:  # noqa: BLE001
            problems.append(f"lapr.heads.plots: {type(err).__name__}: {err}")
    return paths, problems


__all__ = ["FIGURES", "Figure", "build_figures", "delegate_figures", "loss_curves", "ppl_vs_ratio",
           "utilisation_vs_ppl", "utilisation_points", "lm_eval_bars", "head_pruning", "method_colors"]
