"""Figures of head pruning (paper B) and the MQAR probes.

    paths = make_figures("results/embedded", "figures/embedded/heads")

Reads results_dir/heads/MODEL/METHOD/BUDGET.csv (the `heads` stage) and
results_dir/mqar/eval/*.csv (the `mqar-eval` stage); whatever is missing is skipped. Writes
(PNG dpi 200 + PDF, atomically):
- heads_ppl: perplexity vs fraction of heads removed, one panel per (model, corpus), one line
  per method, the unpruned model at 0 (paper B's "removed group" ablation: low_rank_first removes
  the low-rank group first, high_rank_first the high-rank group);
- heads_niah: NIAH passkey accuracy (mean over cells) and teacher-forced answer-token accuracy
  vs fraction removed, per model;
- heads_mqar: MQAR recall vs fraction of heads removed (noise 0), per MQAR model;
- mqar_dk: MQAR recall vs kept key dimension d_k after channel pruning, one line per channel method;
- mqar_noise: MQAR recall vs query noise for the unpruned model and a channel-pruned model per
  method (the middle ratio), per MQAR model (paper A: low rank amplifies query noise);
- heads_state: state memory actually saved (%) vs fraction of heads removed (head pruning of LMs
  and MQAR models) and vs channel ratio (MQAR), markers telling structural from masked.

Colours, markers and display names of methods (and model colours) come from lapr.report.style, so a
method looks the same here as in the report's own figures. A panel whose probe the unpruned model
fails (accuracy below style.PROBE_FAIL, e.g. NIAH at 0 % for a small model) says so instead of
drawing lines at zero. Each figure has its own caption, lapr/report/captions/NAME.rst (FIGURES).
"""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lapr import provenance
from lapr.report import style
from lapr.report.tables import split_alpha_sweep

FONT = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 6.5,
        "xtick.labelsize": 7, "ytick.labelsize": 7}
# every figure make_figures can write (file stems); each has lapr/report/captions/NAME.rst
FIGURES = ("heads_ppl", "heads_niah", "heads_niah_tokens", "heads_mqar", "mqar_dk", "mqar_noise", "heads_state")


def _fonts(fn):
    """Run a figure function under FONT: text properties are fixed when artists are created."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(FONT):
            return fn(*args, **kwargs)
    return wrapper


def _legend(fig, axes, ncol: int = 4):
    """One legend for the figure, below the panels (handles of every panel, deduplicated)."""
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(ncol, len(seen)),
                   frameon=False)


def _figure(n_panels: int, width: float = 7.0, height: float = 2.2, legend_rows: int = 1):
    cols = 2 if n_panels == 4 else min(max(n_panels, 1), 3)
    rows = int(np.ceil(max(n_panels, 1) / cols))
    fig = Figure(figsize=(width if cols > 1 else 3.3, height * rows + 0.18 * legend_rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    FigureCanvasAgg(fig)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig, stem: Path) -> list[Path]:
    return provenance.save_figure(fig, stem)


def _plot_method(ax, x, y, method, **kw):
    """One method's line in its lapr.report.style look (display-name label, method id as gid)."""
    (line,) = ax.plot(x, y, **style.line_kwargs(method, **{"lw": 1, "markersize": 3.5, **kw}))
    line.set_gid(str(method))
    return line


_probe_note = style.note_failed_probe


def _task_title(task: str) -> str:
    task = str(task)
    if task.startswith("ppl/"):
        return style.corpus_label(task)
    return {"niah": "NIAH"}.get(task, task)


def _plot_sweep(ax, sweep: pd.DataFrame, x: str = "budget"):
    """The alpha sweep as small hollow points of the method's colour, each labelled with its alpha."""
    for r in sweep.itertuples(index=False):
        method = str(r.method)
        c = style.color(method)
        ax.plot([getattr(r, x)], [r.value], ls="none", marker=style.marker(method), markersize=3,
                markerfacecolor="white", markeredgecolor=c, color=c, label=f"{style.label(method)}, other α")
        ax.annotate(f"α={float(r.alpha):g}", (getattr(r, x), r.value), xytext=(3, 0), textcoords="offset points",
                    fontsize=4.5, color=c, va="center")


def load_heads_results(results_dir) -> pd.DataFrame:
    files = sorted(Path(results_dir).glob("heads/*/*/*.csv"))
    files = [f for f in files if not f.name.endswith((".niah.csv", ".provenance.csv"))]
    frames = [pd.read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_mqar_results(results_dir) -> pd.DataFrame:
    frames = [pd.read_csv(f) for f in sorted(Path(results_dir).glob("mqar/eval/*.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _with_baseline(df: pd.DataFrame, method_col="method", x="budget") -> dict[str, pd.DataFrame]:
    """method -> rows sorted by x, each method line starting at the unpruned point (x = 0)."""
    base = df[df[method_col] == "none"]
    out = {}
    groups = dict(tuple(df[df[method_col] != "none"].groupby(method_col)))
    for method in style.sort_methods(groups):
        out[method] = pd.concat([base, groups[method]]).sort_values(x)
    return out


@_fonts
def heads_metric_figure(df: pd.DataFrame, task_prefix: str, metric: str, ylabel: str, stem: Path,
                        logy: bool = False, accuracy: bool = False) -> list[Path]:
    """One panel per (model, task), one line per head method from the unpruned point at 0; `accuracy`:
    values are fractions in [0, 1], drawn on the full scale, and a probe the unpruned model fails is
    said so in the panel instead of drawn."""
    sel = df[df["task"].astype(str).str.startswith(task_prefix) & (df["metric"] == metric)]
    if sel.empty:
        return []
    panels = sorted(sel.groupby(["model", "task"]).groups)
    fig, axes = _figure(len(panels))
    for ax, (model, task) in zip(axes, panels):
        g, sweep = split_alpha_sweep(sel[(sel["model"] == model) & (sel["task"] == task)])
        base = g[g["method"] == "none"]
        ax.set_title(f"{style.model_label(model)}: {_task_title(task)}")
        ax.set_xlabel("fraction of heads removed")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if accuracy:
            ax.set_ylim(-0.02, 1.02)
            b = float(base["value"].iloc[0]) if len(base) else None
            if _probe_note(ax, g.loc[g["method"] != "none", "value"], b):
                continue
        for method, line in _with_baseline(g).items():
            _plot_method(ax, line["budget"], line["value"], method)
        _plot_sweep(ax, sweep)
        if len(base):
            ax.axhline(float(base["value"].iloc[0]), color="k", lw=0.6, ls=":", label=style.label("none"))
        if logy:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:.4g}")  # 350, not 3.5 x 10^2
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
    _legend(fig, axes)
    return _save(fig, stem)


def _mqar_recall_figure(mq: pd.DataFrame, stem: Path, kind: str, x: str, xlabel: str, title: str,
                        legend_rows: int = 1) -> list[Path]:
    """Recall at noise 0 against `x`, one panel per model, one line per method (+ the unpruned)."""
    sel = mq[(mq["metric"] == "recall") & (mq["noise"] == 0) & mq["kind"].isin([kind, "none"])]
    if sel[sel["kind"] == kind].empty:
        return []
    models = sorted(sel["model"].unique())
    fig, axes = _figure(len(models), legend_rows=legend_rows)
    for ax, model in zip(axes, models):
        g = sel[sel["model"] == model]
        ax.set_title(f"{style.model_label(model)}: {title}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("recall accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        base = g[g["kind"] == "none"]
        if _probe_note(ax, g.loc[g["kind"] == kind, "value"], float(base["value"].iloc[0]) if len(base) else None):
            continue
        for method, line in _with_baseline(g, x=x).items():
            _plot_method(ax, line[x], line["value"], method)
    _legend(fig, axes)
    return _save(fig, stem)


@_fonts
def heads_mqar_figure(mq: pd.DataFrame, stem: Path) -> list[Path]:
    return _mqar_recall_figure(mq, stem, "head", "ratio", "fraction of heads removed", "MQAR, head pruning")


@_fonts
def mqar_dk_figure(mq: pd.DataFrame, stem: Path) -> list[Path]:
    return _mqar_recall_figure(mq, stem, "channel", "d_k", "key dimension $d_k$ per head (channels)",
                               "MQAR, channel pruning", legend_rows=2)


@_fonts
def mqar_noise_figure(mq: pd.DataFrame, stem: Path) -> list[Path]:
    sel = mq[(mq["metric"] == "recall") & mq["kind"].isin(["channel", "none"])]
    if sel["noise"].nunique() < 2:
        return []
    models = sorted(sel["model"].unique())
    fig, axes = _figure(len(models), legend_rows=2)
    for ax, model in zip(axes, models):
        g = sel[sel["model"] == model]
        base = g[g["kind"] == "none"].sort_values("noise")
        ch = g[g["kind"] == "channel"]
        title = f"{model}: recall vs query noise"
        cut = ch.iloc[0:0]
        if len(ch):
            ratios = sorted(ch["ratio"].unique())
            cut = ch[ch["ratio"] == ratios[len(ratios) // 2]]
            if len(base):
                title += f"\n($d_k$ {int(base['d_k'].iloc[0])} unpruned, {int(cut['d_k'].iloc[0])} pruned)"
        ax.set_title(title)
        ax.set_xlabel(r"query noise $\sigma$ (relative to $\|q\|/\sqrt{d_k}$)")
        ax.set_ylabel("recall accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        b0 = base.loc[base["noise"] == base["noise"].min(), "value"]
        if _probe_note(ax, cut["value"], float(b0.iloc[0]) if len(b0) else None):
            continue
        if len(base):
            _plot_method(ax, base["noise"], base["value"], "none", lw=1.4, markersize=5)
        for method in style.sort_methods(cut["method"]):
            line = cut[cut["method"] == method].sort_values("noise")
            _plot_method(ax, line["noise"], line["value"], method, lw=0.9, markersize=3)
    _legend(fig, axes, ncol=5)
    return _save(fig, stem)


@_fonts
def state_figure(heads: pd.DataFrame, mq: pd.DataFrame, stem: Path) -> list[Path]:
    """State saved vs fraction removed, one line per model (every method removing the same number of
    equal-sized heads / channels saves the same bytes); hollow markers where any result was masked."""
    parts = []
    if len(heads):
        parts.append(("LM head pruning", heads.rename(columns={"budget": "x"})))
    if len(mq):
        m = mq[mq["metric"] == "recall"]
        if (m["kind"] == "head").any():
            parts.append(("MQAR head pruning", m[m["kind"].isin(["head", "none"])].rename(columns={"ratio": "x"})))
        if (m["kind"] == "channel").any():
            parts.append(("MQAR channel pruning", m[m["kind"].isin(["channel", "none"])].rename(
                columns={"ratio": "x"})))
    if not parts:
        return []
    fig, axes = _figure(len(parts))
    for ax, (title, d) in zip(axes, parts):
        colors = style.model_colors(d["model"])  # per panel: LM and MQAR models of one family share a colour
        for model, g in d.groupby("model"):
            agg = g.groupby("x").agg(saved=("state_saved_frac", "mean"), lo=("state_saved_frac", "min"),
                                     hi=("state_saved_frac", "max"),
                                     masked=("application", lambda a: bool((a == "masked").any()))).reset_index()
            c = colors[model]
            ax.plot(agg["x"], 100 * agg["saved"], color=c, lw=1, label=model)
            ax.vlines(agg["x"], 100 * agg["lo"], 100 * agg["hi"], color=c, lw=2, alpha=0.5)
            full, hollow = agg[~agg["masked"]], agg[agg["masked"]]
            ax.scatter(full["x"], 100 * full["saved"], color=c, s=14, zorder=3)
            ax.scatter(hollow["x"], 100 * hollow["saved"], facecolors="white", edgecolors=c, s=14, zorder=3)
        ax.plot([0, 1], [0, 100], color="0.6", ls=":", lw=0.8, label="saved = fraction removed")
        ax.set_title(f"{title}\n(filled: structural, hollow: masked)")
        ax.set_xlabel("fraction removed (heads or $d_k$ channels)")
        ax.set_ylabel("recurrent state saved (%)")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    _legend(fig, axes, ncol=6)
    return _save(fig, stem)


def make_figures(results_dir, fig_dir) -> list[Path]:
    """Every figure the results allow (module doc); returns the written paths."""
    fig_dir = Path(fig_dir)
    heads = load_heads_results(results_dir)
    mq = load_mqar_results(results_dir)
    paths: list[Path] = []
    if len(heads):
        paths += heads_metric_figure(heads, "ppl/", "ppl", "perplexity", fig_dir / "heads_ppl", logy=True)
        niah = heads[(heads["task"] == "niah")].copy()
        if len(niah):
            paths += heads_metric_figure(niah, "niah", "accuracy_mean", "NIAH passkey accuracy",
                                         fig_dir / "heads_niah", accuracy=True)
            paths += heads_metric_figure(niah, "niah", "token_accuracy_mean", "NIAH answer-token accuracy",
                                         fig_dir / "heads_niah_tokens", accuracy=True)
    if len(mq):
        paths += heads_mqar_figure(mq, fig_dir / "heads_mqar")
        paths += mqar_dk_figure(mq, fig_dir / "mqar_dk")
        paths += mqar_noise_figure(mq, fig_dir / "mqar_noise")
    paths += state_figure(heads, mq, fig_dir / "heads_state")
    return paths


__all__ = ["FIGURES", "load_heads_results", "load_mqar_results", "make_figures"]
