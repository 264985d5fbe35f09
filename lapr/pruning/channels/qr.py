"""Rank-revealing QR selection on post-conv q/k activations.

Per head we stack X = [q_act[h]; k_act[h]] ([N_q + N_k, d_k], float64) and pick the `keep`
columns (channels) that best span the column space of X, i.e. the channels whose removal loses
the least of what q and k can express.

- `pivoted_qr`: Businger-Golub column pivoting (LAPACK geqp3 via scipy.linalg.qr(pivoting=True));
  keep the first `keep` pivots. Greedy: each step takes the column with the largest residual
  norm after projecting out those already taken.
- `strong_rrqr`: Gu & Eisenstat, "Efficient algorithms for computing a strong rank-revealing QR
  factorization", SIAM J. Sci. Comput. 17(4), 1996 (their Algorithm 4). Starting from the
  pivoted QR, with X Pi = Q [[R11, R12], [0, R22]] and R11 keep x keep, it swaps kept column i
  with dropped column j while
      rho_ij = (R11^{-1} R12)_{ij}^2 + (gamma_j(R22) / omega_i(R11))^2 > f^2,
  where gamma_j is the 2-norm of column j of R22 and omega_i = 1 / ||row i of R11^{-1}||.
  Each swap multiplies |det R11| by sqrt(rho_ij) > f, so it terminates; on exit
  |R11^{-1} R12|_ij <= f and sigma_i(R11) >= sigma_i(X) / sqrt(1 + f^2 keep (d_k - keep)).
  We take the largest rho each time, recompute the triangle by plain QR of the d_k x d_k
  factor (X Pi' = Q R Pi'', so X itself is never refactored; O(d_k^3) per swap, fine for
  d_k <= 256) and stop after at most 4 * d_k swaps (a warning says when the cap bites; the
  result is then still better, by det R11, than the pivoted start).

If X has numerical rank < keep (R11 singular), no swap can help the determinant and the
pivoted-QR choice is returned: the channels past the rank are then arbitrary but deterministic.
Activations are used as given (no per-token normalisation): tokens with larger pre-norm q/k
weigh more.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from lapr.pruning.channels import ChannelContext, register

DEFAULT_F = 1.5


def stacked_activations(ctx: ChannelContext, head: int) -> np.ndarray:
    """[N_q + N_k, d_k] float64 rows of q_act[head] then k_act[head]."""
    return torch.cat([ctx.q_act[head], ctx.k_act[head]]).double().numpy()


def square_triangle(matrix: np.ndarray, pivoting: bool) -> tuple[np.ndarray, np.ndarray]:
    """R (d_k x d_k, zero-padded when there are fewer rows) and the column order of X Pi = QR."""
    n = matrix.shape[1]
    if pivoting:
        r, perm = scipy.linalg.qr(matrix, mode="r", pivoting=True)
    else:
        r, perm = scipy.linalg.qr(matrix, mode="r")[0], np.arange(n)
    square = np.zeros((n, n))
    rows = min(r.shape[0], n)
    square[:rows] = r[:rows]
    return square, perm


def swap_ratios(r: np.ndarray, keep: int) -> np.ndarray:
    """rho [keep, d_k - keep] of Gu-Eisenstat for triangle r whose first `keep` columns are kept."""
    r11, r12, r22 = r[:keep, :keep], r[:keep, keep:], r[keep:, keep:]
    r11_inv = scipy.linalg.solve_triangular(r11, np.eye(keep))
    coupling = r11_inv @ r12
    gamma = np.linalg.norm(r22, axis=0)
    inv_row = np.linalg.norm(r11_inv, axis=1)  # = 1 / omega_i
    return coupling**2 + np.outer(inv_row**2, gamma**2)


def is_singular(r: np.ndarray, keep: int) -> bool:
    """R11 numerically singular: smallest kept diagonal below n * eps * largest."""
    diag = np.abs(np.diag(r)[:keep])
    return diag.min() <= r.shape[0] * np.finfo(np.float64).eps * max(diag.max(), 1e-300)


def max_swap_ratio(matrix: np.ndarray, columns, keep: int | None = None) -> float:
    """max_ij rho_ij for keeping `columns` of `matrix` (for checking the f-bound)."""
    columns = np.asarray(columns)
    rest = np.setdiff1d(np.arange(matrix.shape[1]), columns)
    r, _ = square_triangle(matrix[:, np.concatenate([columns, rest])], pivoting=False)
    return float(swap_ratios(r, len(columns)).max()) if len(rest) else 0.0


def pivoted_qr_columns(matrix: np.ndarray, keep: int) -> np.ndarray:
    """First `keep` pivots of column-pivoted QR, sorted ascending."""
    _, perm = square_triangle(matrix, pivoting=True)
    return np.sort(perm[:keep])


def strong_rrqr_columns(matrix: np.ndarray, keep: int, f: float = DEFAULT_F,
                        max_swaps: int | None = None) -> np.ndarray:
    """Gu-Eisenstat strong RRQR column choice (see module doc), sorted ascending."""
    n = matrix.shape[1]
    max_swaps = 4 * n if max_swaps is None else max_swaps
    r, perm = square_triangle(matrix, pivoting=True)
    if keep == n or is_singular(r, keep):
        return np.sort(perm[:keep])
    for _ in range(max_swaps):
        rho = swap_ratios(r, keep)
        i, j = np.unravel_index(np.argmax(rho), rho.shape)
        if rho[i, j] <= f * f:
            break
        order = np.arange(n)
        order[i], order[keep + j] = keep + j, i
        perm = perm[order]
        r, _ = square_triangle(r[:, order], pivoting=False)
    else:
        if swap_ratios(r, keep).max() > f * f:
            warnings.warn(f"strong_rrqr: stopped after {max_swaps} swaps with the f={f} bound "
                          f"not yet met", RuntimeWarning, stacklevel=2)
    return np.sort(perm[:keep])


def per_head(ctx: ChannelContext, method: str, choose) -> torch.Tensor:
    ctx.require(method, "q_act", "k_act")
    return torch.stack([torch.from_numpy(choose(stacked_activations(ctx, h))).long()
                        for h in range(ctx.heads)])


@register("pivoted_qr", requires=("q_act", "k_act"),
          order=80, color="#bcbd22", marker="<", label="Pivoted QR")
def select_pivoted_qr(ctx: ChannelContext, keep: int) -> torch.Tensor:
    return per_head(ctx, "pivoted_qr", lambda x: pivoted_qr_columns(x, keep))


@register("strong_rrqr", requires=("q_act", "k_act"),
          order=90, color="#2ca02c", marker="D", label="Strong RRQR")
def select_strong_rrqr(ctx: ChannelContext, keep: int) -> torch.Tensor:
    return per_head(ctx, "strong_rrqr", lambda x: strong_rrqr_columns(x, keep))
