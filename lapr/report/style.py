"""One look for every figure: each method's colour, marker, display name and place in the order.

Every plotting module (lapr.report.figures, lapr.heads.plots, lapr.bench.plots, lapr.profiling.plots)
takes its method colours, markers and names from here, so a method looks the same in every figure:

    from lapr.report import style
    ax.plot(x, y, **style.line_kwargs("wanda"))   # colour, marker and label "Wanda"
    style.color("strong_rrqr"), style.marker("strong_rrqr"), style.label("strong_rrqr")
    methods = style.sort_methods(df["method"])    # unpruned, then channel methods, then head methods

Methods
- channel pruning (lapr.pruning.channels): random, l1, l2, wanda, taylor, pca, pca_qk, pivoted_qr,
  strong_rrqr. Their order, colour, marker and display name are the registry's: each method's
  `@register(..., order=, color=, marker=, label=)`, read without torch by lapr.config.channel_registry,
  so a new method module brings its look (one that declares none comes after the others, with a
  fallback look and its name as label). METHOD+lora (recovered by LoRA fine-tuning)
  keeps METHOD's colour and marker, drawn hollow, and is shown as points (it exists at the recovered
  ratios only, so a line from r = 0 would claim values nobody measured).
- head pruning (lapr.heads.methods; `head_methods()` reads that registry): joint_rank_norm,
  high_rank_first, low_rank_first, norm_only, random (the same 'random' as the channel method: one
  name, one look), and the disjoint arms arm_low / arm_high / arm_random.
- 'none': the unpruned model, black star.
A method without a declared look (a registry entry that declares none, a synthetic name in a test)
gets a colour and marker from FALLBACK_PALETTE / FALLBACK_MARKERS picked by a CRC-32 of its name: the
same name gets the same look in every figure and every run, and never the colour of a built-in method.

Models and architecture families (bench series, loss curves, state saved) use FAMILY_COLORS
(DeltaNet teal, Gated DeltaNet orange, GLA blue: each family module's `color`; model names such as 'deltanet' / 'gdn' are matched to their
family), other models MODEL_PALETTE; low / high-rank head classes use CLASS_COLORS.

`probe_failed(ax, baseline)` writes "unpruned model fails this probe (0 %)" into a panel whose
retrieval probe the unpruned model does not solve (lines at zero would read as a result).

Importing this module is cheap: no matplotlib, pandas or torch at import time.
"""
from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

from lapr import families as _families
from lapr.config import channel_registry

UNPRUNED = "none"  # = lapr.report.results.UNPRUNED (checked by tests/report/test_style.py)
RECOVERED_SUFFIX = "+lora"

# Channel-pruning methods in display order, the registry's `order` (undeclared: last, by name): the
# weight-only baselines, the calibrated scores, PCA (pca: paper A's / LAP's rotation; pca_qk: lapr's
# variant, beside it), the rank-revealing QRs.
_CHANNEL = channel_registry()
CHANNEL_METHODS = tuple(sorted(_CHANNEL, key=lambda m: ("order" not in _CHANNEL[m], _CHANNEL[m].get("order", 0), m)))
# Head-pruning methods (lapr.heads.methods.METHODS, then the disjoint arms of heads/MODEL/arms).
HEAD_METHODS = ("joint_rank_norm", "high_rank_first", "low_rank_first", "norm_only", "random",
                "arm_low", "arm_high", "arm_random")
METHOD_ORDER = (UNPRUNED,) + CHANNEL_METHODS  # the channel-pruning tables' row order (lapr.report.tables)

# method -> (colour, marker, display name). Colours are hex so tests can compare them exactly.
STYLES: dict[str, tuple[str, str, str]] = {
    UNPRUNED: ("#000000", "*", "Unpruned"),
    # channel pruning: the methods that declare colour and marker (label: the name where it declares none)
    **{m: (_CHANNEL[m]["color"], _CHANNEL[m]["marker"], _CHANNEL[m].get("label", m))
       for m in CHANNEL_METHODS if {"color", "marker"} <= set(_CHANNEL[m])},
    # head pruning ('random' above)
    "joint_rank_norm": ("#ff7f0e", "h", "Joint rank-norm"),
    "high_rank_first": ("#393b79", "^", "High-rank first"),
    "low_rank_first": ("#e7ba52", "v", "Low-rank first"),
    "norm_only": ("#637939", "s", "Norm only"),
    "arm_low": ("#843c39", "<", "Low-rank arm"),
    "arm_high": ("#5254a3", ">", "High-rank arm"),
    "arm_random": ("#bdbdbd", "8", "Random arm"),
}
# Unlisted methods: colours none of STYLES uses (mostly tab20's light half), and markers.
FALLBACK_PALETTE = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
                    "#dbdb8d", "#9edae5", "#b5cf6b", "#e7969c", "#de9ed6", "#a55194", "#8dd3c7", "#fdb462")
FALLBACK_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "d")

# Architecture families (bench series; lapr.models families) and the model names that mean them: each
# family module's own `color`, `display_name` and `aliases` (read without torch by lapr.families).
FAMILY_COLORS = {name: facts["color"] for name, facts in _families.declared().items()}
FAMILY_LABELS = {name: facts["display_name"] for name, facts in _families.declared().items()}
FAMILY_ALIASES = {alias: name for name, facts in _families.declared().items()
                  for alias in (name, *facts["aliases"])}
MODEL_PALETTE = ("#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
CLASS_COLORS = {"low": "#1f77b4", "high": "#d62728"}  # low / high-rank head classes
UNPRUNED_LINE = {"color": "#000000", "ls": "--", "lw": 0.9}  # the unpruned reference line

PROBE_FAIL = 0.005  # accuracy (fraction) below which the unpruned model counts as failing a probe (rounds to 0 %)


@dataclass(frozen=True)
class MethodStyle:
    color: str
    marker: str
    label: str
    recovered: bool = False  # METHOD+lora: hollow marker, drawn as points only
    known: bool = True       # listed in STYLES (else: the CRC-32 fallback)


def split_recovered(method: str) -> tuple[str, bool]:
    """'wanda+lora' -> ('wanda', True); 'wanda' -> ('wanda', False)."""
    m = str(method)
    if m.endswith(RECOVERED_SUFFIX) and len(m) > len(RECOVERED_SUFFIX):
        return m[: -len(RECOVERED_SUFFIX)], True
    return m, False


def _fallback(name: str) -> tuple[str, str]:
    h = zlib.crc32(name.encode("utf-8"))
    return FALLBACK_PALETTE[h % len(FALLBACK_PALETTE)], FALLBACK_MARKERS[(h // len(FALLBACK_PALETTE))
                                                                        % len(FALLBACK_MARKERS)]


@functools.lru_cache(maxsize=None)
def method_style(method) -> MethodStyle:
    """Colour, marker and display name of a method id (module doc)."""
    base, recovered = split_recovered(method)
    if base in STYLES:
        color, marker, label = STYLES[base]
        known = True
    else:
        color, marker = _fallback(base)
        label, known = base, False
    if recovered:
        label = f"{label} + LoRA"
    return MethodStyle(color, marker, label, recovered, known)


def color(method) -> str:
    return method_style(method).color


def marker(method) -> str:
    return method_style(method).marker


def label(method) -> str:
    """Display name: 'Wanda', 'Strong RRQR', 'PCA (LAP)', 'Wanda + LoRA', 'Unpruned'; unknown ids as they are."""
    return method_style(method).label


def line_kwargs(method, **overrides) -> dict:
    """Keyword arguments for Axes.plot: colour, marker, display label; recovered methods hollow, no line."""
    s = method_style(method)
    kw = {"color": s.color, "marker": s.marker, "label": s.label}
    if s.recovered:
        kw.update(ls="none", markerfacecolor="white", markeredgecolor=s.color, markeredgewidth=1.1)
    if method == UNPRUNED:
        kw["markersize"] = 6
    kw.update(overrides)
    return kw


def method_key(method, heads: bool = False):
    """Sort key: unpruned, channel methods (CHANNEL_METHODS order, each followed by its +lora), head
    methods, then unlisted names alphabetically; heads=True: head methods before channel methods (so
    'random', in both lists, comes last among head methods)."""
    base, recovered = split_recovered(method)
    groups = (HEAD_METHODS, CHANNEL_METHODS) if heads else (CHANNEL_METHODS, HEAD_METHODS)
    if base == UNPRUNED:
        return (0, 0, "", recovered)
    for g, names in enumerate(groups, start=1):
        if base in names:
            return (g, names.index(base), "", recovered)
    return (3, 0, base, recovered)


def sort_methods(methods) -> list[str]:
    """Methods in display order (method_key); head-method order when a head-only method is among them."""
    names = {str(m) for m in methods}
    heads = any(split_recovered(m)[0] in HEAD_METHODS and split_recovered(m)[0] not in CHANNEL_METHODS
                for m in names)
    return sorted(names, key=functools.partial(method_key, heads=heads))


@functools.lru_cache(maxsize=None)
def channel_methods() -> tuple[str, ...]:
    """Every channel-pruning method of the registry (lapr.pruning.channels.ALL_METHODS; imported on the
    first call, it imports torch), in display order; CHANNEL_METHODS where the registry cannot be imported."""
    try:
        from lapr.pruning.channels import ALL_METHODS
    except ImportError:
        return CHANNEL_METHODS
    return tuple(sort_methods(ALL_METHODS))


@functools.lru_cache(maxsize=None)
def head_methods() -> tuple[str, ...]:
    """Every head-pruning method of the registry (lapr.heads.methods.METHODS), in display order."""
    try:
        from lapr.heads.methods import METHODS
    except ImportError:
        return HEAD_METHODS[:5]
    return tuple(sort_methods(METHODS))


# ----------------------------------------------------------------------------- models, families

def family_of(name) -> str | None:
    """The architecture family a model / family name means ('gdn' -> 'gated_deltanet'), or None."""
    key = str(name).lower().replace("-", "_")
    return FAMILY_ALIASES.get(key) or FAMILY_ALIASES.get(key.replace("_", ""))


def family_color(family) -> str:
    fam = family_of(family)
    return FAMILY_COLORS[fam] if fam else _fallback(str(family))[0]


def family_label(family) -> str:
    return FAMILY_LABELS.get(str(family), str(family))


def model_label(model) -> str:
    """A model's name in figure titles: its family's display name when the model id is one of the
    family's names ('gdn' -> 'Gated DeltaNet'), else the id itself (e.g. 'deltanet-1_3b')."""
    fam = family_of(model)
    return FAMILY_LABELS[fam] if fam else str(model)


CORPUS_LABELS = {  # dataset ids (lapr.data.registry) as figure titles say them
    "wikitext2_test_raw": "WikiText-2 test", "gutenberg_valid": "Gutenberg validation",
    "gutenberg_train": "Gutenberg train", "lambada_openai_test": "LAMBADA test",
}


def corpus_label(corpus) -> str:
    """A corpus id in figure titles ('ppl/' prefix dropped): CORPUS_LABELS, else the id."""
    corpus = str(corpus).removeprefix("ppl/")
    return CORPUS_LABELS.get(corpus, corpus)


def model_colors(models) -> dict:
    """Colour per model name: its family's colour where the name means one (deltanet, gdn, delta_net,
    gated_deltanet), else MODEL_PALETTE in sorted order; two models of one family keep apart."""
    out, used = {}, set()
    rest = []
    for m in sorted({str(m) for m in models}):
        fam = family_of(m)
        if fam and FAMILY_COLORS[fam] not in used:
            out[m] = FAMILY_COLORS[fam]
            used.add(out[m])
        else:
            rest.append(m)
    palette = [c for c in MODEL_PALETTE if c not in used]
    for i, m in enumerate(rest):
        out[m] = palette[i % len(palette)]
    return out


# ----------------------------------------------------------------------------- panel notes

def probe_failed(values, baseline=None) -> str:
    """'' when the probe is informative, else the note to show: the unpruned model's accuracy is below
    PROBE_FAIL, or (no unpruned number) every value is. `values`, `baseline`: fractions in [0, 1]."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if baseline is not None and not math.isnan(float(baseline)):
        if float(baseline) < PROBE_FAIL:
            return f"unpruned model fails this probe ({100 * float(baseline):.0f} %)"
        return ""
    if vals and max(vals) < PROBE_FAIL:
        return f"every checkpoint fails this probe ({100 * max(vals):.0f} %)"
    return ""


def note_panel(ax, text: str) -> None:
    """Write a notice across a panel (e.g. a failed probe) instead of data."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.3",
            wrap=True, bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "linewidth": 0.5})


__all__ = ["UNPRUNED", "RECOVERED_SUFFIX", "CHANNEL_METHODS", "HEAD_METHODS", "METHOD_ORDER", "STYLES",
           "FALLBACK_PALETTE", "FALLBACK_MARKERS", "FAMILY_COLORS", "FAMILY_LABELS", "MODEL_PALETTE",
           "CLASS_COLORS", "UNPRUNED_LINE", "MethodStyle", "method_style", "color", "marker", "label",
           "line_kwargs", "method_key", "sort_methods", "split_recovered", "channel_methods", "head_methods",
           "family_of", "family_color", "family_label", "model_colors", "probe_failed", "note_panel",
           "note_failed_probe"]


def note_failed_probe(ax, values, baseline) -> bool:
    """True (and the notice in the panel) when the unpruned model fails this accuracy probe (fractions):
    a panel of flat lines at zero would read as 'pruning kept everything'."""
    note = probe_failed(values, baseline)
    if note:
        note_panel(ax, note)
    return bool(note)
