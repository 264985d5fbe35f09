"""Figures of one model's profile directory (written by the `profile` stage).

    paths = make_figures("results/tiny/profile/gdn", "figures/tiny/profile/gdn")

- rank_vs_t.{png,pdf}: threshold rank (left) and rank utilisation (right) of every head of one
  representative layer against the token count t (log axis), mean over the natural contexts'
  samples; the bound min(t, d_k, d_v) dashed (paper B, Fig. 1 analogue). The layer is
  `layer` if given, else the middle attention layer.
- rank_heatmap.{png,pdf}: layer x head grid of the final threshold rank (heads.csv), with each
  cell's value printed when the grid is small; 'H' marks heads classified high-rank.
- consistency.{png,pdf}: per context pair, Spearman correlation of head final ranks and the
  fraction of heads that keep their class ("n/a" where Spearman is undefined: constant ranks).
- stratification.{png,pdf}: paper B's Fig. 1 as a distribution. Left: final threshold rank / bound
  of every head (heads.csv), one strip per layer, coloured by class, with a histogram over all heads
  and Sarle's bimodality coefficient b in the title (stratify.bimodality_coefficient; b > 5/9
  suggests two groups). Right: rank / bound over t of every head of the layer whose heads spread
  widest at t = T (natural contexts' sample mean), with consistency_time.csv's t_early and t_late
  (claim B2's comparison) dotted.

- spectrum_timing.{png,pdf} (`spectrum_timing`, from a `python -m lapr.profiling.spectrum_gpu` run
  directory): left, seconds per profiling context of each singular-value route (log axis) with its
  largest error against fp64 LAPACK; right, one forward against state capture + singular values +
  every metric for each GPU route and the profile stage's own metrics step (tables included), with the
  3x-a-forward goal dashed.

Colours shared with the other figures (head classes) come from lapr.report.style. Figures use
matplotlib's object API (no pyplot state, no global backend switch), are sized for
a paper (single column 3.3 in, double 7 in), and are saved as PNG (dpi 200) and PDF atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lapr import provenance
from lapr.profiling import stratify
from lapr.report import style
from lapr.profiling.contexts import NATURAL

FONT = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 6.5,
        "xtick.labelsize": 7, "ytick.labelsize": 7}


def _figure(width: float, height: float) -> Figure:
    import matplotlib
    with matplotlib.rc_context(FONT):
        fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, stem: Path) -> list[Path]:
    return provenance.save_figure(fig, stem)


def _natural(ranks: pd.DataFrame) -> pd.DataFrame:
    natural = [c for c in pd.unique(ranks["context"]) if c in NATURAL]
    return ranks[ranks["context"].isin(natural)] if natural else ranks


def rank_vs_t(ranks: pd.DataFrame, stem: Path, layer=None, title: str = "") -> list[Path]:
    import matplotlib
    data = _natural(ranks)
    layers = list(pd.unique(data["layer"]))
    if layer is None:
        layer = sorted(layers)[len(layers) // 2]
    if layer not in layers:
        raise ValueError(f"layer {layer!r} not in the ranks table (layers: {layers})")
    d = data[data["layer"] == layer]
    mean = d.groupby(["head", "position"]).agg(
        threshold_rank=("threshold_rank", "mean"), utilisation=("utilisation", "mean"),
        bound=("bound", "first")).reset_index()
    heads = sorted(pd.unique(mean["head"]))
    contexts = ", ".join(pd.unique(d["context"]))
    with matplotlib.rc_context(FONT):
        fig = _figure(7.0, 2.6)
        ax_r, ax_u = fig.subplots(1, 2)
        cmap = matplotlib.colormaps["viridis"]
        for i, h in enumerate(heads):
            g = mean[mean["head"] == h].sort_values("position")
            color = cmap(i / max(1, len(heads) - 1))
            ax_r.plot(g["position"], g["threshold_rank"], marker="o", ms=2, lw=1, color=color, label=f"head {h}")
            ax_u.plot(g["position"], g["utilisation"], marker="o", ms=2, lw=1, color=color, label=f"head {h}")
        bound = mean.drop_duplicates("position").sort_values("position")
        ax_r.plot(bound["position"], bound["bound"], "k--", lw=1, label="bound min(t, $d_k$, $d_v$)")
        ax_r.set_ylabel("threshold rank")
        ax_r.set_title(r"#{$\sigma_i > \epsilon\,\sigma_1$}")
        ax_u.set_ylabel("rank utilisation")
        ax_u.set_title("stable rank / min($d_k$, $d_v$)")
        ax_u.set_ylim(0, None)
        for ax in (ax_r, ax_u):
            ax.set_xscale("log")
            ax.set_xlabel("context length t (tokens)")
            ax.grid(True, which="major", lw=0.3, alpha=0.5)
        ncol = 1 if len(heads) <= 8 else 2
        ax_r.legend(loc="upper left", ncol=ncol, frameon=False)
        fig.suptitle(title or f"Layer {layer}: state rank vs context length ({contexts}; sample mean)")
        return _save(fig, stem)


def rank_heatmap(heads: pd.DataFrame, stem: Path, title: str = "") -> list[Path]:
    import matplotlib
    grid = heads.pivot(index="layer", columns="head", values="final_rank").sort_index()
    high = heads.pivot(index="layer", columns="head", values="class").reindex_like(grid) == "high"
    bound = float(heads["bound"].max())
    n_layers, n_heads = grid.shape
    with matplotlib.rc_context(FONT):
        fig = _figure(3.3 if n_heads <= 12 else 7.0, max(1.8, 0.9 + 0.22 * n_layers))
        ax = fig.subplots()
        im = ax.imshow(grid.to_numpy(float), aspect="auto", cmap="viridis", vmin=0, vmax=bound,
                       interpolation="nearest")
        ax.set_xticks(range(n_heads), [str(h) for h in grid.columns])
        ax.set_yticks(range(n_layers), [str(layer) for layer in grid.index])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        if n_layers * n_heads <= 400:
            for i in range(n_layers):
                for j in range(n_heads):
                    v = grid.iat[i, j]
                    if np.isnan(v):
                        continue
                    txt = f"{v:.0f}" + ("H" if bool(high.iat[i, j]) else "")
                    ax.text(j, i, txt, ha="center", va="center", fontsize=5,
                            color="black" if v > 0.6 * bound else "white")
        fig.colorbar(im, ax=ax, label="final threshold rank")
        ax.set_title(title or f"Final state rank (bound {bound:.0f}; H: high-rank)")
        return _save(fig, stem)


def consistency_plot(pairs: pd.DataFrame, stem: Path, title: str = "") -> list[Path]:
    import matplotlib
    labels = [f"{a}\nvs {b}" for a, b in zip(pairs["context_a"], pairs["context_b"])]
    x = np.arange(len(pairs))
    rho = pairs["spearman"].to_numpy(float)
    keep = pairs["keep_fraction"].to_numpy(float)
    with matplotlib.rc_context(FONT):
        fig = _figure(7.0 if len(pairs) > 4 else 3.3, 2.7)
        ax = fig.subplots()
        w = 0.38
        ax.bar(x - w / 2, np.nan_to_num(rho), w, color="tab:blue", label="Spearman ρ of head ranks")
        ax.bar(x + w / 2, keep, w, color="tab:orange", label="class agreement (fraction of heads)")
        for i, r in enumerate(rho):
            if np.isnan(r):
                ax.text(x[i] - w / 2, 0.02, "n/a", ha="center", va="bottom", fontsize=5, rotation=90)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, labels, fontsize=6)
        ax.set_ylim(min(-0.05, np.nanmin(np.append(rho, 0)) - 0.05), 1.05)
        ax.set_ylabel("agreement between contexts")
        ax.set_xlabel("context pair")
        ax.set_title(title or "Head stratification consistency across inputs")
        fig.legend(loc="outside lower center", ncol=2, frameon=False)
        return _save(fig, stem)


def widest_layer(heads: pd.DataFrame):
    """The layer whose heads' final rank / bound spread widest (max - min; the first on ties)."""
    x = heads.assign(x=heads["final_rank"] / heads["bound"])
    spread = x.groupby("layer", sort=True)["x"].agg(lambda v: float(np.ptp(v)))
    return spread.idxmax()


def stratification(ranks: pd.DataFrame, heads: pd.DataFrame, stem: Path, times: tuple | None = None,
                   title: str = "") -> list[Path]:
    import matplotlib
    x = heads["final_rank"].astype(float) / heads["bound"].astype(float)
    b = stratify.bimodality_coefficient(x)
    layers = sorted(pd.unique(heads["layer"]))
    colors = style.CLASS_COLORS
    wide = widest_layer(heads)
    data = _natural(ranks)
    d = data[data["layer"] == wide].assign(x=lambda f: f["threshold_rank"] / f["bound"])
    curves = d.groupby(["head", "position"])["x"].mean().reset_index()
    cls = heads[heads["layer"] == wide].set_index("head")["class"]
    with matplotlib.rc_context(FONT):
        fig = _figure(7.0, 2.7)
        ax_s, ax_h, ax_t = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3, 1, 4]})
        jitter = np.random.default_rng(0)  # fixed: the same figure on every run
        for i, layer in enumerate(layers):
            h = heads[heads["layer"] == layer]
            xs = i + jitter.uniform(-0.25, 0.25, len(h))
            ax_s.scatter(xs, h["final_rank"] / h["bound"], s=9, c=[colors.get(c, "0.4") for c in h["class"]],
                         edgecolors="none", alpha=0.8)
        ax_s.set_xticks(range(len(layers)), [str(la) for la in layers])
        ax_s.set_xlabel("layer")
        ax_s.set_ylabel("final threshold rank / bound")
        ax_s.set_ylim(-0.04, 1.04)
        ax_s.set_title(f"{len(x)} heads: Sarle's b = {b:.2f}" + (" (> 5/9)" if b > stratify.BIMODAL_THRESHOLD else ""))
        ax_h.hist(x, bins=np.linspace(0, 1, 21), orientation="horizontal", color="0.5")
        ax_h.set_ylim(-0.04, 1.04)
        ax_h.set_yticklabels([])
        ax_h.set_xlabel("heads")
        for cl, color in colors.items():
            ax_s.scatter([], [], s=9, c=color, label=f"{cl}-rank class")
        ax_s.legend(loc="center left", frameon=False)
        cmap = matplotlib.colormaps["viridis"]
        heads_w = sorted(pd.unique(curves["head"]))
        for j, h in enumerate(heads_w):
            g = curves[curves["head"] == h].sort_values("position")
            ls = "-" if cls.get(h, "high") == "high" else "--"
            ax_t.plot(g["position"], g["x"], ls=ls, marker="o", ms=1.5, lw=0.9,
                      color=cmap(j / max(1, len(heads_w) - 1)), label=f"head {h}")
        if times is not None:
            for t in times:
                ax_t.axvline(t, color="k", ls=":", lw=0.8)
        ax_t.set_xscale("log")
        ax_t.set_ylim(-0.04, 1.04)
        ax_t.set_xlabel("context length t (tokens)")
        ax_t.set_ylabel("threshold rank / min(t, $d_k$, $d_v$)")
        ax_t.set_title(f"layer {wide} (widest spread); dashed: low-rank class"
                       + (f"; dotted: t = {times[0]}, {times[1]}" if times is not None else ""))
        if len(heads_w) <= 16:
            ax_t.legend(loc="lower left", ncol=2 if len(heads_w) > 8 else 1, frameon=False, fontsize=5)
        for ax in (ax_s, ax_h, ax_t):
            ax.grid(True, which="major", lw=0.3, alpha=0.5)
        fig.suptitle(title or "Head stratification: final state rank per head (paper B, Fig. 1)")
        return _save(fig, stem)


def make_figures(profile_dir, fig_dir, layer=None) -> list[Path]:
    """All figures of one profile directory; returns the written paths (PNG and PDF each)."""
    profile_dir, fig_dir = Path(profile_dir), Path(fig_dir)
    ranks_path = profile_dir / "ranks.parquet"
    if not ranks_path.is_file():
        raise FileNotFoundError(f"{ranks_path} not found (run the profile stage first)")
    fig_dir.mkdir(parents=True, exist_ok=True)
    ranks = pd.read_parquet(ranks_path)
    paths = rank_vs_t(ranks, fig_dir / "rank_vs_t", layer=layer)
    heads_path = profile_dir / "heads.csv"
    if heads_path.is_file():
        heads = pd.read_csv(heads_path)
        paths += rank_heatmap(heads, fig_dir / "rank_heatmap")
        times = None
        time_path = profile_dir / "consistency_time.csv"
        if time_path.is_file():
            ct = pd.read_csv(time_path)
            if len(ct):
                times = (int(ct["t_early"].iloc[0]), int(ct["t_late"].iloc[0]))
        paths += stratification(ranks, heads, fig_dir / "stratification", times)
    cons_path = profile_dir / "consistency.csv"
    if cons_path.is_file():
        pairs = pd.read_csv(cons_path)
        if len(pairs):
            paths += consistency_plot(pairs, fig_dir / "consistency")
    return paths


# every figure make_figures can write (file stems); each has lapr/report/captions/NAME.rst
FIGURES = ("rank_vs_t", "rank_heatmap", "consistency", "stratification")

__all__ = ["FIGURES", "make_figures", "rank_vs_t", "rank_heatmap", "consistency_plot", "stratification", "widest_layer"]


ROUTE_LABELS = {  # spectrum_timing.csv methods -> what they are
    "lapack_fp64_cpu": "LAPACK fp64, CPU", "lapack_fp32_cpu": "LAPACK fp32, CPU",
    "svdvals_fp32_cuda": "cuSOLVER svdvals", "bidiag_triton": "bidiag (Triton)",
    "gram_torch_tridiag_triton_sturm": "Gram, PyTorch tridiag", "gram_triton": "Gram, Triton tridiag",
    "gram_torch": "Gram, all PyTorch", "bidiag_torch": "bidiag, all PyTorch",
}
GOAL = 3.0  # issue 16: the whole profile within 3x one plain forward


def spectrum_timing(run_dir, stem: Path) -> list[Path]:
    """The spectrum_gpu benchmark of `run_dir` (spectrum_timing.csv, provenance.json) as one figure."""
    run_dir = Path(run_dir)
    table = pd.read_csv(run_dir / "spectrum_timing.csv").set_index("method")
    model = json.loads((run_dir / "provenance.json").read_text()).get("model") or {}
    routes = [m for m in ROUTE_LABELS if m in table.index]
    import matplotlib
    with matplotlib.rc_context(FONT):
        return _spectrum_timing(table, model, routes, Path(stem))


def _spectrum_timing(table: pd.DataFrame, model: dict, routes: list[str], stem: Path) -> list[Path]:
    fig = _figure(7.0, 2.8)
    left, right = fig.subplots(1, 2, width_ratios=[1.25, 1])
    secs = table.loc[routes, "seconds_per_context"].to_numpy(float)
    y = np.arange(len(routes))[::-1]
    on_gpu = table["device"].iloc[0] == "cuda"
    gpu = [on_gpu and not m.startswith("lapack") for m in routes]   # LAPACK rows always ran on the host
    left.barh(y, secs, color=["#4c72b0" if g else "#999999" for g in gpu])
    for yi, m, sec in zip(y, routes, secs):
        err = table.loc[m].get("max_rel_error")
        note = f"{sec:.3g} s" + (f", err {err:.1e}" if pd.notna(err) else "")
        left.text(sec * 1.15, yi, note, va="center", fontsize=6)
    left.set_yticks(y, [ROUTE_LABELS[m] for m in routes])
    left.set_xscale("log")
    left.set_xlim(secs.min() / 2, secs.max() * 40)
    left.set_xlabel(f"seconds per context ({int(table['n_matrices'].iloc[0]):,} states)")
    left.set_title("singular values of one context (blue: GPU, grey: CPU)\nerr = max |sigma - LAPACK fp64| / sigma_1")
    if model.get("forward_s"):
        fwd, cap = model["forward_s"], model["capture_s"]
        bars = [(f"{r}" if r != model.get("default_route") else f"{r}\n(default)", model[f"metrics_s_{r}"])
                for r in ("gram", "bidiag") if f"metrics_s_{r}" in model]
        if "stage_metrics_s" in model:
            bars.append(("profile stage\n(+ tables)", model["stage_metrics_s"]))
        x = np.arange(len(bars))
        right.bar(x, [cap / fwd] * len(bars), color="#dd8452", label="state capture")
        right.bar(x, [m / fwd for _, m in bars], bottom=cap / fwd, color="#4c72b0", label="singular values + metrics")
        for xi, (_, m) in zip(x, bars):
            right.text(xi, (cap + m) / fwd + 0.05, f"{(cap + m) / fwd:.2f}x", ha="center", fontsize=6.5)
        right.axhline(1.0, **style.UNPRUNED_LINE)
        right.axhline(GOAL, color="#c44e52", ls=":", lw=0.9, label=f"goal {GOAL:g}x")
        right.set_xticks(x, [b for b, _ in bars])
        right.set_ylim(0, max(GOAL, max((cap + m) / fwd for _, m in bars)) * 1.35)
        right.set_ylabel("time / one plain forward")
        right.set_title(f"whole profile vs one forward ({fwd * 1e3:.0f} ms)\nT {model['T']}, batch "
                        f"{model['batch']}, {model['n_states']:,} states")
        right.legend(loc="upper left", frameon=False, ncols=2)
    else:
        right.text(0.5, 0.5, "no model timing in this run", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    return _save(fig, Path(stem))
