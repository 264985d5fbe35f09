"""The arithmetic of the ratio grid, shared by the workflow (parsed without torch) and the stages:
one definition of a ratio's file name and of the key dimension a ratio keeps."""
from __future__ import annotations

import math


def ratio_name(value) -> str:
    """A ratio or head budget as its folder / file name (0.5 -> '0.5', 0.5000001 -> '0.5')."""
    return f"{float(value):g}"


def kept_channels(d_k: int, ratio: float, multiple: int = 1) -> int:
    """floor(d_k (1 - ratio)), rounded down to a multiple of `multiple`, unchecked (0 when nothing
    is left). The product is rounded to 9 decimals before the floor, so that e.g.
    10 * (1 - 0.3) = 6.999999999999999 keeps 7 (lapr.pruning.ratio.kept_dim checks the arguments)."""
    return math.floor(round(d_k * (1.0 - float(ratio)), 9)) // multiple * multiple


def heads_removed(budget: float, heads: int) -> int:
    """round(budget * heads), half up (the tolerance keeps e.g. 0.5 * 3 = 1.5 at 2): the heads a
    head budget removes (lapr.heads.methods, per model or per layer)."""
    return math.floor(budget * heads + 0.5 + 1e-9)


__all__ = ["heads_removed", "kept_channels", "ratio_name"]
