"""Figures from bench CSVs: time and throughput vs d_k, and speed-up vs the ideal state-size ratio.

One set of figures per device label (GPU and CPU numbers never share an axis; the device is in
the file name and the title):
- bench_ops_<device>:     op level, ms per call (IQR bars) and tokens/s vs d_k; columns = phases.
- bench_speedup_<device>: measured speed-up ms(d_k0) / ms(d_k) against the ideal
                          d_k0 / d_k = 1 / (1 - r) (r = pruned fraction of d_k, d_k0 = largest d_k
                          of the series), with the ideal line; op level and, if present, model level.
- bench_model_<device>:   model level, prefill and decode tokens/s and state memory per sequence vs d_k.
Non-power-of-two d_k are drawn as hollow markers (power-of-two filled). PNG (dpi 200) and PDF.
Family colours and names come from lapr.report.style (the same family / model colours as in the
report's figures).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lapr import provenance
from lapr.bench.tables import read_rows
from lapr.report import style

# decode_mode ('graph' | 'eager', lapr.bench.graph_decode) splits series: a CUDA-graph replay and an
# eager launch of the same step are different measurements, never pooled (CSVs without the column,
# from before it existed, are read as they were)
OP_SERIES = ["level", "family", "impl", "device", "phase", "decode_mode", "B", "T", "H", "d_v"]
MODEL_SERIES = ["level", "family", "impl", "device", "phase", "decode_mode", "B", "T", "hidden_size", "num_layers",
                "H", "d_v"]
PHASES = ("prefill", "decode")
FAMILY_LABEL = style.FAMILY_LABELS
COLORS = style.FAMILY_COLORS
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
# every figure make_figures can write: NAME_<device> (each has lapr/report/captions/NAME.rst)
FIGURES = ("bench_ops", "bench_speedup", "bench_model")


def is_pow2(n) -> bool:
    n = int(n)
    return n > 0 and n & (n - 1) == 0


def load_rows(bench_csvs: Iterable) -> pd.DataFrame:
    """All rows of the CSVs that ran (no error, a median time)."""
    frames = [read_rows(p) for p in bench_csvs]
    if not frames:
        raise ValueError("make_figures: no bench CSVs given")
    df = pd.concat(frames, ignore_index=True)
    return df[(df["error"] == "") & df["ms_median"].notna()].copy()


def _series_cols(df: pd.DataFrame, level: str) -> list[str]:
    cols = OP_SERIES if level == "op" else MODEL_SERIES
    return [c for c in cols if c in df.columns]


def speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per series (same everything but d_k), speed-up over the series' largest d_k.

    Model rows of one architecture at one d_k (e.g. several pruning methods) are pooled first
    (median of their medians). Columns added: d_k0, ideal (= d_k0 / d_k = 1 / (1 - r)), r, speedup,
    pow2.
    """
    out = []
    for level, part in df.groupby("level"):
        cols = _series_cols(part, level)
        pooled = part.groupby(cols + ["d_k"], dropna=False, as_index=False).agg(
            ms_median=("ms_median", "median"), tokens_per_s=("tokens_per_s", "median"))
        for _, s in pooled.groupby(cols, dropna=False):
            s = s.copy()
            d_k0 = s["d_k"].max()
            ms0 = s.loc[s["d_k"] == d_k0, "ms_median"].iloc[0]
            s["d_k0"] = d_k0
            s["ideal"] = d_k0 / s["d_k"]
            s["r"] = 1 - s["d_k"] / d_k0
            s["speedup"] = ms0 / s["ms_median"]
            out.append(s)
    if not out:
        return pd.DataFrame()
    res = pd.concat(out, ignore_index=True)
    res["pow2"] = res["d_k"].map(is_pow2)
    return res


def _label(key: dict, varying: list[str]) -> str:
    label = style.family_label(key["family"])
    if "impl" in varying:
        label += f" [{key['impl']}]"
    if "decode_mode" in varying and isinstance(key.get("decode_mode"), str):
        label += f" ({key['decode_mode']})"
    extra = [f"{c}={key[c]}" for c in varying
             if c not in ("family", "impl", "phase", "level", "device", "decode_mode")]
    return label + (f" ({', '.join(extra)})" if extra else "")


def _series(df: pd.DataFrame, cols: list[str]):
    """(label, colour, marker, rows sorted by d_k) for each series in df."""
    varying = [c for c in cols if df[c].nunique(dropna=False) > 1]
    for i, (key, s) in enumerate(df.groupby(cols, dropna=False)):
        key = dict(zip(cols, key if isinstance(key, tuple) else (key,)))
        yield _label(key, varying), style.family_color(key["family"]), MARKERS[i % len(MARKERS)], s.sort_values("d_k")


def _points(ax, x, y, d_k, color, marker):
    """Filled markers at power-of-two d_k, hollow ones elsewhere."""
    pow2 = [is_pow2(d) for d in d_k]
    for filled in (True, False):
        sel = [p == filled for p in pow2]
        if any(sel):
            ax.scatter([a for a, s in zip(x, sel) if s], [b for b, s in zip(y, sel) if s], s=22, marker=marker,
                       facecolors=color if filled else "white", edgecolors=color, linewidths=1.1, zorder=3)


def _marker_legend(ax):
    from matplotlib.lines import Line2D

    return [Line2D([], [], ls="", marker="o", color="0.3", label="power-of-two $d_k$"),
            Line2D([], [], ls="", marker="o", markerfacecolor="white", color="0.3", label="other $d_k$")]


def _figure(figsize):
    """A matplotlib Figure outside pyplot: no global backend or figure registry is touched."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig, fig_dir: Path, name: str) -> list[Path]:
    return provenance.save_figure(fig, Path(fig_dir) / name, bbox_inches="tight")


def _eng(ax):
    """Throughput tick labels as 40k, 2.5M, ... (no shared 1e7 offset)."""
    from matplotlib.ticker import EngFormatter

    ax.yaxis.set_major_formatter(EngFormatter(sep=""))


def _dk_axis(ax, d_ks):
    ticks = sorted(set(int(d) for d in d_ks))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks], fontsize=7, rotation=90 if len(ticks) > 8 else 0)
    ax.set_xlabel("key dimension $d_k$")


def _title(device: str, df: pd.DataFrame) -> str:
    names = sorted(set(df.get("device_name", pd.Series(dtype=str)).dropna().astype(str)))
    return f"{device.upper()}" + (f": {', '.join(names)}" if names else "")


def ops_figure(df: pd.DataFrame, device: str, fig_dir: Path) -> list[Path]:
    phases = [p for p in PHASES if p in set(df["phase"])]
    fig = _figure((3.5 * len(phases), 5.0))
    axes = fig.subplots(2, len(phases), squeeze=False)
    cols = _series_cols(df, "op")
    for j, phase in enumerate(phases):
        part = df[df["phase"] == phase]
        for label, color, marker, s in _series(part, cols):
            d_k = s["d_k"].tolist()
            ms = s["ms_median"]
            yerr = [(ms - s["ms_q25"]).clip(lower=0), (s["ms_q75"] - ms).clip(lower=0)] if "ms_q25" in s else None
            axes[0, j].errorbar(d_k, ms, yerr=yerr, color=color, lw=1.2, capsize=2, label=label)
            _points(axes[0, j], d_k, ms.tolist(), d_k, color, marker)
            axes[1, j].plot(d_k, s["tokens_per_s"], color=color, lw=1.2, label=label)
            _points(axes[1, j], d_k, s["tokens_per_s"].tolist(), d_k, color, marker)
        tokens = "B·T" if phase == "prefill" else "B (one per sequence)"
        axes[0, j].set_title(f"{phase}", fontsize=9)
        axes[0, j].set_ylabel("time per call (ms, median ± IQR)" if j == 0 else "")
        axes[1, j].set_ylabel("throughput (tokens/s)" if j == 0 else "")
        _eng(axes[1, j])
        axes[1, j].annotate(f"tokens = {tokens}", (0.02, 0.02), xycoords="axes fraction", fontsize=7)
        for ax in axes[:, j]:
            _dk_axis(ax, part["d_k"])
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += _marker_legend(axes[0, 0])
    labels += [h.get_label() for h in _marker_legend(axes[0, 0])]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Delta-rule kernels vs $d_k$ — {_title(device, df)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, fig_dir, f"bench_ops_{device}")


def _ratio_axis(axis, hi: float):
    """Log-2 axis with plain 'N×' labels at 1, 1.5, 2, 3, 4, 6, 8, ..."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32) if t <= hi * 1.01]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))


def speedup_figure(df: pd.DataFrame, device: str, fig_dir: Path) -> list[Path]:
    from matplotlib.lines import Line2D

    sp = speedup_table(df)
    levels = [lvl for lvl in ("op", "model") if (sp["level"] == lvl).any()]
    phases = [ph for ph in PHASES if (sp["phase"] == ph).any()]
    fig = _figure((3.5 * len(phases), 2.9 * len(levels) + 0.6))
    axes = fig.subplots(len(levels), len(phases), squeeze=False)
    handles: dict = {}
    for i, level in enumerate(levels):
        for j, phase in enumerate(phases):
            ax = axes[i, j]
            part = sp[(sp["level"] == level) & (sp["phase"] == phase)]
            if part.empty:
                ax.set_visible(False)
                continue
            lo = min(part["speedup"].min(), 1.0) / 1.1
            hi = max(part["ideal"].max(), part["speedup"].max(), 1.0) * 1.15
            ax.plot([1, hi], [1, hi], ls="--", color="0.4", lw=1, label="ideal $1/(1-r) = d_{k0}/d_k$")
            ax.axhline(1, ls=":", color="0.6", lw=1, label="no speed-up")
            series = []
            for label, color, marker, s in _series(part, _series_cols(part, level)):
                s = s.sort_values("ideal")
                ax.plot(s["ideal"], s["speedup"], color=color, lw=1.2)
                series.append(Line2D([], [], color=color, lw=1.2, marker=marker, ms=4, label=label))
                _points(ax, s["ideal"].tolist(), s["speedup"].tolist(), s["d_k"].tolist(), color, marker)
                for x, y, d in zip(s["ideal"], s["speedup"], s["d_k"]):
                    if not is_pow2(d):
                        ax.annotate(f"$d_k$={int(d)}", (x, y), textcoords="offset points", xytext=(3, -9),
                                    fontsize=6, color=color)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_xlim(1 / 1.1, hi)
            ax.set_ylim(lo, hi)
            _ratio_axis(ax.xaxis, hi)
            _ratio_axis(ax.yaxis, hi)
            ax.set_xlabel("ideal speed-up $d_{k0}/d_k$ = state-size ratio")
            ax.set_ylabel("measured speed-up (time ratio)" if j == 0 else "")
            d_k0 = "/".join(str(int(d)) for d in sorted(set(part["d_k0"])))
            ax.set_title(f"{level} level, {phase} ($d_{{k0}}$ = {d_k0})", fontsize=9)
            ax.grid(alpha=0.3)
            # series legend per panel (markers differ between panels); the upper left stays free
            # because measured speed-ups lie below the ideal diagonal
            ax.legend(handles=series, loc="upper left", fontsize=6, frameon=False, handlelength=1.8)
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
    for h in _marker_legend(axes[0, 0]):
        handles.setdefault(h.get_label(), h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(f"Speed-up vs state-size reduction — {_title(device, df)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, fig_dir, f"bench_speedup_{device}")


def model_figure(df: pd.DataFrame, device: str, fig_dir: Path) -> list[Path]:
    fig = _figure((7.0, 2.8))
    axes = fig.subplots(1, 3, squeeze=False)
    axes = axes[0]
    cols = _series_cols(df, "model")
    pooled = df.groupby(cols + ["d_k"], dropna=False, as_index=False).agg(
        tokens_per_s=("tokens_per_s", "median"), state_bytes_per_seq=("state_bytes_per_seq", "median"))
    for ax, phase in zip(axes[:2], PHASES):
        part = pooled[pooled["phase"] == phase]
        if part.empty:
            ax.set_visible(False)
            continue
        for label, color, marker, s in _series(part, cols):
            ax.plot(s["d_k"], s["tokens_per_s"], color=color, lw=1.2, label=label)
            _points(ax, s["d_k"].tolist(), s["tokens_per_s"].tolist(), s["d_k"].tolist(), color, marker)
        ax.set_ylabel(f"{phase} throughput (tokens/s)")
        _eng(ax)
        ax.set_title(phase, fontsize=9)
    state = pooled.drop_duplicates(["family", "hidden_size", "num_layers", "H", "d_v", "d_k"])
    for fam, s in state.groupby("family"):
        s = s.sort_values("d_k")
        axes[2].plot(s["d_k"], s["state_bytes_per_seq"] / 2**10, color=style.family_color(fam), lw=1.2,
                     label=style.family_label(fam))
        _points(axes[2], s["d_k"].tolist(), (s["state_bytes_per_seq"] / 2**10).tolist(), s["d_k"].tolist(),
                style.family_color(fam), "o")
    axes[2].set_ylabel("state per sequence (KiB, fp32)")
    axes[2].set_title("recurrent state", fontsize=9)
    for ax in axes:
        _dk_axis(ax, df["d_k"])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = (axes[0] if axes[0].get_visible() else axes[1]).get_legend_handles_labels()
    handles += _marker_legend(axes[2])
    labels += [h.get_label() for h in _marker_legend(axes[2])]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"Model throughput vs $d_k$ — {_title(device, df)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, fig_dir, f"bench_model_{device}")


def make_figures(bench_csvs: Iterable, fig_dir) -> list[Path]:
    """All bench figures for the CSVs (op and/or model level, any devices); returns the paths written."""
    df = load_rows(bench_csvs)
    if df.empty:
        raise ValueError("make_figures: the bench CSVs hold no successful rows")
    if "level" not in df:
        df["level"] = "op"
    fig_dir = Path(fig_dir)
    paths: list[Path] = []
    for device, part in df.groupby("device"):
        ops_rows = part[part["level"] == "op"]
        model_rows = part[part["level"] == "model"]
        if not ops_rows.empty:
            paths += ops_figure(ops_rows, device, fig_dir)
        if not model_rows.empty:
            paths += model_figure(model_rows, device, fig_dir)
        paths += speedup_figure(part, device, fig_dir)
    return paths


__all__ = ["FIGURES", "make_figures", "speedup_table", "load_rows", "is_pow2"]
