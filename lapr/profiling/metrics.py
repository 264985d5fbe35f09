"""Rank metrics of linear-attention recurrent states S_t (one d_k x d_v matrix per head).

All tensor functions are batched over any leading dims and run on the tensor's device.
They take the singular values `sv` [..., min(d_k, d_v)] (descending, as returned by
`singular_values`) so one SVD serves every metric. An all-zero state gives 0 for every
metric, never NaN.

Definitions
- threshold rank (paper B, Sun et al. 2026): #{i : sigma_i > eps * sigma_1}.
- stable rank (paper A, Nazari & Rusch 2026): ||S||_F^2 / ||S||_2^2 = sum sigma_i^2 / sigma_1^2.
- rank utilisation (paper A): stable rank / min(d_k, d_v).
- entropy rank (Roy & Vetterli 2007): exp(H(p)), p_i = sigma_i / sum sigma.

`rank_table` and `spectrum_table` turn stacks of states into tidy pandas frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

DEFAULT_EPS = 1e-4

RANK_COLUMNS = [
    "position", "layer", "head", "threshold_rank", "stable_rank", "utilisation",
    "entropy_rank", "frobenius", "nuclear", "spectral", "bound",
]
SPECTRUM_COLUMNS = ["position", "layer", "head", "index", "sigma", "sigma_rel"]


GPU_METHODS = ("gram", "bidiag")  # = spectrum_gpu.ROUTES (a test holds them equal; metrics stays free of Triton)
SVD_METHODS = ("lapack", *GPU_METHODS, "auto")


def singular_values(states: torch.Tensor, method: str = "lapack") -> torch.Tensor:
    """[..., d_k, d_v] -> [..., min(d_k, d_v)], descending.

    Half precisions are upcast to float32 (svdvals has no bf16/fp16 kernels and their
    rounding would swamp small singular values); float64 input stays float64.
    method: "lapack" (torch.linalg.svdvals, the reference), "gram" (fp64 Gram matrix ->
    tridiagonalisation -> Sturm bisection) or "bidiag" (fp32 Householder bidiagonalisation ->
    Sturm bisection): the two GPU routes of lapr.profiling.spectrum_gpu, for where svdvals of many
    small matrices is slow, both accurate to 1e-4 * sigma_1; or "auto" (on CUDA tensors the
    GPU route measured fastest, spectrum_gpu.DEFAULT_ROUTE; LAPACK otherwise).
    """
    if method not in SVD_METHODS:
        raise ValueError(f"method must be one of {SVD_METHODS}, got {method!r}")
    if states.dtype not in (torch.float32, torch.float64):
        states = states.float()
    if method in GPU_METHODS or (method == "auto" and states.is_cuda):
        from lapr.profiling.spectrum_gpu import DEFAULT_ROUTE, fast_singular_values
        return fast_singular_values(states, route=DEFAULT_ROUTE if method == "auto" else method)
    return torch.linalg.svdvals(states)


def _relative(sv: torch.Tensor) -> torch.Tensor:
    """sigma_i / sigma_1, with 0 for an all-zero matrix (dividing first avoids overflow of sigma^2)."""
    top = sv[..., :1]
    return torch.where(top > 0, sv / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(sv))


def threshold_rank(sv: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Number of sigma_i strictly above eps * sigma_1 (int64); 0 for an all-zero matrix."""
    return (sv > eps * sv[..., :1]).sum(dim=-1)


def eps_label(eps: float) -> str:
    """Short, exact text of a threshold eps for column names: 1e-3 -> '1e-3', 2.5e-4 -> '2.5e-4'."""
    return np.format_float_scientific(float(eps), trim="-", exp_digits=1)


def threshold_rank_column(eps: float, prefix: str = "threshold_rank") -> str:
    """Column of the threshold rank at another eps (eps sensitivity): 'threshold_rank_1e-3' in rank
    tables, 'final_rank_1e-3' in heads.csv (prefix='final_rank')."""
    return f"{prefix}_{eps_label(eps)}"


def stable_rank(sv: torch.Tensor) -> torch.Tensor:
    """sum sigma_i^2 / sigma_1^2, in [1, min(d_k, d_v)]; 0 for an all-zero matrix."""
    return _relative(sv).square().sum(dim=-1)


def rank_utilisation(sv: torch.Tensor, d_k: int, d_v: int) -> torch.Tensor:
    """Stable rank / min(d_k, d_v), in [0, 1]."""
    return stable_rank(sv) / min(d_k, d_v)


def entropy_rank(sv: torch.Tensor) -> torch.Tensor:
    """exp of the Shannon entropy of p_i = sigma_i / sum sigma; 0 for an all-zero matrix."""
    total = sv.sum(dim=-1, keepdim=True)
    p = sv / torch.where(total > 0, total, torch.ones_like(total))
    h = -torch.special.xlogy(p, p).sum(dim=-1)  # xlogy gives 0 * log 0 = 0
    return torch.where(total.squeeze(-1) > 0, h.exp(), torch.zeros_like(h))


def state_norm(sv: torch.Tensor) -> torch.Tensor:
    """Frobenius norm sqrt(sum sigma_i^2)."""
    return torch.linalg.vector_norm(sv, dim=-1)


def _layers(states: torch.Tensor | Mapping) -> list[tuple[object, torch.Tensor]]:
    """Normalise to [(layer id, [n_pos, H, d_k, d_v])]; a dict keeps its own layer ids."""
    if isinstance(states, Mapping):
        out = list(states.items())
    else:
        if states.dim() != 5:
            raise ValueError(f"states must be [n_pos, L, H, d_k, d_v], got {tuple(states.shape)}")
        out = [(layer, states[:, layer]) for layer in range(states.shape[1])]
    for layer, s in out:
        if s.dim() != 4:
            raise ValueError(f"layer {layer}: states must be [n_pos, H, d_k, d_v], got {tuple(s.shape)}")
    return out


def _positions(positions: Sequence[int] | torch.Tensor | np.ndarray, n_pos: int) -> np.ndarray:
    pos = np.asarray(positions.cpu() if isinstance(positions, torch.Tensor) else positions, dtype=np.int64)
    if pos.shape != (n_pos,):
        raise ValueError(f"need {n_pos} positions, got shape {pos.shape}")
    return pos


def _given(sv: Mapping, layer, s: torch.Tensor) -> torch.Tensor:
    """The precomputed singular values of `layer`, checked against its states [n_pos, H, d_k, d_v]."""
    if layer not in sv:
        raise ValueError(f"sv has no singular values for layer {layer!r}")
    out = sv[layer]
    want = (*s.shape[:2], min(s.shape[-2:]))
    if tuple(out.shape) != want:
        raise ValueError(f"layer {layer!r}: sv has shape {tuple(out.shape)}, states need {want}")
    return out


def rank_table(
    states: torch.Tensor | Mapping[object, torch.Tensor],
    positions: Sequence[int] | torch.Tensor | np.ndarray,
    eps: float = DEFAULT_EPS,
    method: str = "lapack",
    extra_eps: Sequence[float] = (),
    sv: Mapping[object, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Tidy frame of all rank metrics, one row per (position, layer, head).

    states: [n_pos, L, H, d_k, d_v] (layers numbered 0..L-1) or a dict layer -> [n_pos, H, d_k, d_v]
      (e.g. only the linear-attention layers of a hybrid model; head counts and shapes may differ).
    positions: the n_pos token counts t of the states S_t (1-based: S_t has absorbed t tokens),
      used for bound = min(t, d_k, d_v), the largest rank S_t can have.
    Columns: RANK_COLUMNS, then threshold_rank_column(e) for each e in extra_eps (the threshold rank
    at e, from the same singular values: eps sensitivity costs no extra SVD). SVDs run per layer on
    the states' device (method: see singular_values), unless `sv` gives them ({layer: [n_pos, H, r]},
    e.g. computed for many samples in one batch on the GPU); the states then only give the shapes.
    """
    extra = {threshold_rank_column(e): float(e) for e in extra_eps}
    columns: dict[str, list] = {}
    for order, (layer, s) in enumerate(_layers(states)):
        n_pos, n_heads, d_k, d_v = s.shape
        pos = _positions(positions, n_pos)
        sv_l = singular_values(s, method) if sv is None else _given(sv, layer, s)  # [n_pos, H, r]
        metrics = {
            "threshold_rank": threshold_rank(sv_l, eps),
            "stable_rank": stable_rank(sv_l),
            "utilisation": rank_utilisation(sv_l, d_k, d_v),
            "entropy_rank": entropy_rank(sv_l),
            "frobenius": state_norm(sv_l),
            # nuclear norm ||S||_* = sum of singular values: the norm SRA reads into paper B's
            # eq. 14 (lapr.heads.methods, settings.norm = "nuclear")
            "nuclear": sv_l.sum(-1),
            "spectral": sv_l[..., 0],
            **{col: threshold_rank(sv_l, e) for col, e in extra.items()},
        }
        pos_grid = np.repeat(pos, n_heads)
        _append(columns, {
            "position": pos_grid,
            "layer": _layer_column(layer, n_pos * n_heads),
            "head": np.tile(np.arange(n_heads), n_pos),
            **{k: v.reshape(-1).cpu().numpy() for k, v in metrics.items()},
            "bound": np.minimum(pos_grid, min(d_k, d_v)),
            "_order": np.full(n_pos * n_heads, order),
        })
    if not columns:
        return pd.DataFrame(columns=RANK_COLUMNS + list(extra))
    table = _frame(columns)
    for col in ("stable_rank", "utilisation", "entropy_rank", "frobenius", "spectral"):
        table[col] = table[col].astype(np.float64)
    return _sort(table, ["position", "_order", "head"])[RANK_COLUMNS + list(extra)]


def _layer_column(layer, n: int) -> np.ndarray:
    """A table's layer column for one layer id: an int array for int ids, else an object array."""
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        return np.full(n, int(layer), dtype=np.int64)
    out = np.empty(n, dtype=object)
    out[:] = [layer] * n
    return out


def _append(columns: dict[str, list], part: dict[str, np.ndarray]) -> None:
    for k, v in part.items():
        columns.setdefault(k, []).append(v)


def _frame(columns: dict[str, list]) -> pd.DataFrame:
    """One DataFrame from per-layer column arrays (building one frame per layer and concatenating
    them cost ~10x more at the gpu profile's 56 (sample, layer) pieces)."""
    return pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})


def _sort(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Position-major rows; layers keep their input order (`_order`), whatever their ids."""
    return table.sort_values(by, kind="stable", ignore_index=True)


def _keep_index(pos: np.ndarray, keep: Iterable[int] | int | None) -> np.ndarray:
    """Indices into pos: None -> all; int n -> n evenly spaced incl. first and last; else position values."""
    if keep is None:
        return np.arange(len(pos))
    if isinstance(keep, (int, np.integer)):
        return np.unique(np.linspace(0, len(pos) - 1, num=min(int(keep), len(pos))).round().astype(np.int64))
    wanted = [int(k) for k in keep]
    missing = sorted(set(wanted) - set(pos.tolist()))
    if missing:
        raise ValueError(f"positions {missing} not among {pos.tolist()}")
    return np.flatnonzero(np.isin(pos, wanted))


def spectrum_table(
    states: torch.Tensor | Mapping[object, torch.Tensor],
    positions: Sequence[int] | torch.Tensor | np.ndarray,
    keep: Iterable[int] | int | None = None,
    n_sigma: int | None = None,
    method: str = "lapack",
    sv: Mapping[object, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Tidy singular spectra, one row per (position, layer, head, index).

    states/positions as in `rank_table`. keep: position values to keep, an int n for n evenly
    spaced positions (first and last included), or None for all. n_sigma: keep only the top
    n_sigma singular values. method: see singular_values. sigma_rel = sigma / sigma_1 (0 for an all-zero state).
    sv: precomputed singular values as in `rank_table` (all positions; the kept ones are selected here).
    """
    columns: dict[str, list] = {}
    for order, (layer, s) in enumerate(_layers(states)):
        pos = _positions(positions, s.shape[0])
        idx = _keep_index(pos, keep)
        if sv is None:
            sv_l = singular_values(s[torch.as_tensor(idx, device=s.device)], method)  # [k, H, r]
        else:
            given = _given(sv, layer, s)
            sv_l = given[torch.as_tensor(idx, device=given.device)]
        if n_sigma is not None:
            sv_l = sv_l[..., :n_sigma]
        k, n_heads, r = sv_l.shape
        _append(columns, {
            "position": np.repeat(pos[idx], n_heads * r),
            "layer": _layer_column(layer, k * n_heads * r),
            "head": np.tile(np.repeat(np.arange(n_heads), r), k),
            "index": np.tile(np.arange(r), k * n_heads),
            "sigma": sv_l.reshape(-1).cpu().numpy().astype(np.float64),
            "sigma_rel": _relative(sv_l).reshape(-1).cpu().numpy().astype(np.float64),
            "_order": np.full(k * n_heads * r, order),
        })
    if not columns:
        return pd.DataFrame(columns=SPECTRUM_COLUMNS)
    table = _frame(columns)
    return _sort(table, ["position", "_order", "head", "index"])[SPECTRUM_COLUMNS]
