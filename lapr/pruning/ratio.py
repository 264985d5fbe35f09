"""Pruning ratio -> kept key dimension, and up-front validation of a method x ratio grid.

A ratio r removes a fraction r of each head's d_k key channels:

    kept = floor(d_k * (1 - r))                      (multiple = 1)
    kept = multiple * floor(d_k * (1 - r) / multiple) (multiple > 1: kernel-friendly, rounded DOWN)

Rounding is always down, so the state is never larger than the ratio asks for; the effective
ratio 1 - kept / d_k is recorded next to the requested one. The product d_k * (1 - r) is
rounded to 9 decimals before the floor so that e.g. 10 * (1 - 0.3) = 6.999999999999999 gives 7.

Errors (ValueError, message naming the bad value):
- r not a number strictly inside (0, 1),
- r so large that no channel (or no full `multiple`) is left,
- r so small that no channel is removed,
- an unknown method name (`check_method`),
- multiple not a positive int.
`validate(methods, ratios, d_k, multiple)` checks a whole grid at once and reports every bad
entry in one error, so the workflow can call it before any job runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from lapr.grid import kept_channels
from lapr.pruning.channels import ALL_METHODS


def check_ratio(ratio) -> float:
    """`ratio` as a float strictly inside (0, 1), else a ValueError naming it."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float | str):
        raise ValueError(f"pruning ratio must be a number in (0, 1); got {ratio!r}")
    try:
        value = float(ratio)
    except ValueError:
        raise ValueError(f"pruning ratio must be a number in (0, 1); got {ratio!r}") from None
    if not 0.0 < value < 1.0:  # also rejects nan
        raise ValueError(f"pruning ratio must lie strictly between 0 and 1 (the fraction of d_k "
                         f"removed); got {ratio!r}")
    return value


def check_multiple(multiple) -> int:
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be a positive int (kept d_k is rounded down to a "
                         f"multiple of it); got {multiple!r}")
    return multiple


def check_method(method) -> str:
    if method not in ALL_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(ALL_METHODS)}")
    return method


def kept_dim(d_k: int, ratio, multiple: int = 1) -> int:
    """Key channels kept per head when a fraction `ratio` of `d_k` is pruned (see module doc)."""
    if isinstance(d_k, bool) or not isinstance(d_k, int) or d_k < 1:
        raise ValueError(f"d_k must be a positive int; got {d_k!r}")
    r = check_ratio(ratio)
    multiple = check_multiple(multiple)
    kept = kept_channels(d_k, r, multiple)
    if kept < 1:
        extra = f" rounded down to a multiple of {multiple}" if multiple > 1 else ""
        raise ValueError(f"pruning ratio {ratio!r} leaves no channel of d_k={d_k} "
                         f"(floor({d_k} * (1 - {r})){extra} = 0)")
    if kept >= d_k:
        raise ValueError(f"pruning ratio {ratio!r} removes no channel of d_k={d_k} "
                         f"(floor({d_k} * (1 - {r})) = {kept})")
    return kept


def validate(methods: Iterable[str], ratios: Iterable, d_k: int | Iterable[int],
             multiple: int = 1) -> dict[float, dict[int, int]]:
    """Check a method x ratio grid for one or several models (d_k: int or one per model).

    Returns {ratio: {d_k: kept}}; raises one ValueError listing every problem found.
    """
    methods, ratios = list(methods), list(ratios)
    dims = [d_k] if isinstance(d_k, int) else list(d_k)
    problems, table = [], {}
    if not methods:
        problems.append("no pruning method given")
    if not ratios:
        problems.append("no pruning ratio given")
    for method in methods:
        try:
            check_method(method)
        except ValueError as err:
            problems.append(str(err))
    try:
        check_multiple(multiple)
    except ValueError as err:
        problems.append(str(err))
        multiple = 1
    for ratio in ratios:
        for dim in dims:
            try:
                table.setdefault(check_ratio(ratio), {})[dim] = kept_dim(dim, ratio, multiple)
            except ValueError as err:
                problems.append(str(err))
    if problems:
        raise ValueError("invalid pruning grid:\n  " + "\n  ".join(dict.fromkeys(problems)))
    return table


__all__ = ["check_method", "check_multiple", "check_ratio", "kept_dim", "validate"]
