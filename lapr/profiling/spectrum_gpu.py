"""Singular values of many small matrices on the GPU: fp64 Gram matrix -> Householder
tridiagonalisation -> Sturm-count bisection.

    sv = gram_singular_values(states)       # [..., d_k, d_v] -> [..., min(d_k, d_v)], descending
    python -m lapr.profiling.spectrum_gpu --out results/gpu_timing/spectrum   # benchmark (CUDA)

Why not the SVD. One profiling context of the GPU profile holds 14 layers x 6 heads x 32 positions x
batch 4 = 10,752 states of 128 x 128. On an H200 their exact SVDs took 1.5 s with LAPACK on 32 CPU
threads, 33 s with cuSOLVER's batched svdvals and 7.7 s (fp64) / 18 s (fp32) with its batched
eigvalsh of the Gram matrices, against a 0.03-0.06 s forward. cuSOLVER's small-matrix paths are
(batched) Jacobi sweeps: each sweep costs ~n^3 flops per matrix on n^2/2 rotations with a
synchronisation per rotation set, and ~6-10 sweeps are needed, so ~10 n^3 flops with poor
parallelism inside a matrix. The rank metrics only need singular VALUES, and only to ~1e-4 sigma_1
(the threshold rank's eps), so the classical eigenvalue route is enough:

1. G = S^T S (or S S^T, the smaller side) in fp64: one batched GEMM, 2 m n^2 flops. sigma_i^2 =
   lambda_i(G). Squaring the condition number costs nothing here: in fp64 the eigenvalues of G have
   absolute error ~ n eps_64 lambda_1 ~ 1e-14 lambda_1, so sigma_i = sqrt(lambda_i) has absolute error
   <= sqrt(1e-14) sigma_1 ~ 1e-7 sigma_1, the size of the fp32 states' own rounding and 1000x below
   the 1e-4 sigma_1 the metrics resolve. The states are scaled by 1/max|S| first (sigma scaled
   back at the end) so G's entries are O(n) whatever the states' magnitude.
2. Householder tridiagonalisation T = Q^T G Q (n - 2 reflections). Two implementations of the same
   reflections:
   - `tridiagonalize` (PyTorch, batched over matrices; CPU path and reference): per step a batched
     matvec p = A22 v and a rank-2 update A22 -= 2 (v w^T + w v^T) on the trailing (n-k-1)^2 block
     only, ~6 m^2 flops at step size m, sum ~2 n^3 flops per matrix (LAPACK's dsytrd, which also
     exploits symmetry, needs 4/3 n^3). It is memory-bound on a GPU: each step reads the trailing
     blocks twice and writes them once, ~24 sum m^2 ~ 8 n^3 bytes = 17 MB per 128 x 128 matrix, so
     ~180 GB (~40-50 ms at H200 bandwidth) for a context, plus ~10 kernel launches per step.
   - `_tridiag_kernel` (Triton, CUDA, n <= 128): one program per matrix holds the whole padded
     matrix in registers (128 x 128 fp64 = 32k registers, spread over 16 warps; ptxas for sm_90a
     reports 128 registers per thread and ~1 kB of spills, so part of it lives in L1) and runs all n - 2
     reflections on it with full-tile masked updates (the reflector is zero on the leading rows, so
     the full update is the exact similarity transform; ~8 n^3 flops, 4x the trailing-block count,
     but no memory traffic beyond reading G once). That is ~17 M fp64 flops per matrix, 180 GFLOP for
     a context, a few ms at the H200's ~34 TFLOP/s fp64 if it stays in registers. The benchmark
     reports both.
3. Eigenvalues of T by Sturm-count bisection, all n at once (`sturm_bisection`, Triton kernel
   `_sturm_kernel`: one program per matrix, the n eigen-indices as the vector dimension, the
   bisection steps and the sequential n-row LDL^T recurrence as loops inside). The count
   #{lambda < x^2} is computed for the sigma-space midpoint x, i.e. the bisection runs on sigma in
   [0, sqrt(Gershgorin bound)]: every sigma, large or small, is then located to the same absolute
   accuracy, and negative rounding eigenvalues of G end at sigma = 0 (the clamp). Step count: the
   Gershgorin bound of T is <= 3 lambda_1 (|d_i| <= lambda_1, |e_i| <= lambda_1), so after k steps the
   midpoint is within sqrt(3) sigma_1 / 2^(k+1) of the sigma whose count it brackets: k = 14 already
   gives 1e-4 sigma_1; the default 32 gives 2e-10 sigma_1, far below the 1e-7 sigma_1 floor of
   step 1, so the bisection never limits the accuracy (the count itself is backward stable: it is
   exact for a T perturbed by ~n eps_64 lambda_1, LAPACK's dlaebz argument, with its pivmin guard).
   Cost: 32 steps x n rows x n indices ~ 0.5 M fp64 divisions per 128 x 128 matrix.

The "bidiag" route (`bidiag_singular_values`, the default on CUDA since it measured 52 ms against
the Gram route's 100 ms for the context above, results/gpu_speed/spectrum_bidiag) skips step 1 and
reduces the scaled fp32 states themselves to upper bidiagonal form B = U^T S V in one Triton kernel
(`_bidiag_kernel`: one program per matrix, the tile in registers, alternating left / right
reflections), then runs step 3 on the tridiagonal B^T B formed exactly in fp64. Acting on S rather than
S^T S, fp32 is enough (backward stable, error ~sqrt(n) eps_32 sigma_1 ~ 1e-7 sigma_1, measured 2.5e-7),
and an fp32 tile fits the registers where the fp64 Gram tile spills.

Contract (same as metrics.singular_values): descending, length min(d_k, d_v), an all-zero state gives
zeros; half precisions are upcast to float32, float64 input gives float64 output, the work is fp64.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lapr.bench.timing import synchronize

try:  # fla needs triton on every platform, but keep this module importable without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is a declared dependency
    triton = None

DEFAULT_STEPS = 32
BACKENDS = ("auto", "torch", "triton")
TRIDIAG_MAX_N = 128  # the Triton tridiagonaliser keeps a BLOCK x BLOCK fp64 tile in registers
TOLERANCE = 1e-4     # the stated accuracy |sigma - sigma_lapack| <= TOLERANCE * sigma_1


# ------------------------------------------------------------------------------------------------
# 1. scaled fp64 Gram matrices

def _scaled(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, m, n] -> (s / max|s| per matrix, that max [B]; 0 for an all-zero matrix, left as it is):
    both routes work on entries of size <= 1 whatever the states' magnitude."""
    c = s.abs().amax(dim=(-2, -1))
    return s / torch.where(c > 0, c, torch.ones_like(c))[:, None, None], c


def _sigma(d: torch.Tensor, e2: torch.Tensor, c: torch.Tensor, steps: int, use_triton: bool,
           out_dtype: torch.dtype, lead: tuple) -> torch.Tensor:
    """Both routes' last step: the singular values of the scaled matrices from their tridiagonal
    (d, e2) by Sturm bisection, descending, scaled back by c and shaped [*lead, r]."""
    sv = sturm_bisection_triton(d, e2, steps) if use_triton else sturm_bisection(d, e2, steps)
    sv = torch.sort(sv, dim=-1, descending=True).values * c.double()[:, None]
    return sv.to(out_dtype).reshape(*lead, d.shape[-1])


def gram(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, m, n] -> (G [B, r, r] fp64 of S / c on the smaller side r = min(m, n), c [B] = max|S|).

    c is 0 for an all-zero state (then G = 0): sigma(S) = c * sqrt(lambda(G))."""
    s, c = _scaled(states.double())
    g = s.transpose(-1, -2) @ s if s.shape[-2] >= s.shape[-1] else s @ s.transpose(-1, -2)
    return g, c


# ------------------------------------------------------------------------------------------------
# 2. Householder tridiagonalisation

def tridiagonalize(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric [B, n, n] -> (d [B, n], e2 [B, n]) of a similar tridiagonal matrix, e2[:, i] =
    e_{i-1}^2 (the squared off-diagonal entry left of row i) and e2[:, 0] = 0. PyTorch, batched,
    working on the trailing block only (module doc, step 2)."""
    a = g.clone()
    nb, n = a.shape[0], a.shape[-1]
    d = a.new_zeros(nb, n)
    e = a.new_zeros(nb, n)
    for k in range(n - 2):
        x = a[:, k + 1:, k]                                          # the column to reduce
        nx = torch.linalg.vector_norm(x, dim=-1)
        alpha = torch.where(x[:, 0] >= 0, -nx, nx)                   # H x = alpha e_1, no cancellation
        v = x.clone()
        v[:, 0] -= alpha
        nv = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        v = v / torch.where(nv > 0, nv, torch.ones_like(nv))         # x = 0: H = I
        a22 = a[:, k + 1:, k + 1:]
        p = (a22 @ v[..., None])[..., 0]
        w = p - (v * p).sum(-1, keepdim=True) * v                    # H A H = A - 2 (v w^T + w v^T)
        a22.baddbmm_(torch.stack([v, w], -1), torch.stack([w, v], -1).transpose(-1, -2), alpha=-2.0)
        d[:, k] = a[:, k, k]
        e[:, k + 1] = alpha
    if n >= 2:
        d[:, n - 2] = a[:, n - 2, n - 2]
        e[:, n - 1] = a[:, n - 1, n - 2]
    d[:, n - 1] = a[:, n - 1, n - 1]
    return d, e.square()


# ------------------------------------------------------------------------------------------------
# 2b. Householder bidiagonalisation of S itself (the "bidiag" route)

def _reflector(x: torch.Tensor, lead: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Householder vector of x [B, m] that maps x to alpha e_lead: (v, 2 / v^T v (0 when x = 0), alpha),
    so that (I - tau v v^T) x = alpha e_lead; alpha has the opposite sign of x[lead] (no cancellation)."""
    nx = torch.linalg.vector_norm(x, dim=-1)
    alpha = torch.where(x[:, lead] >= 0, -nx, nx)
    v = x.clone()
    v[:, lead] -= alpha
    nv2 = (v * v).sum(-1)
    tau = torch.where(nv2 > 0, 2.0 / torch.where(nv2 > 0, nv2, torch.ones_like(nv2)), torch.zeros_like(nv2))
    return v, tau, alpha


def bidiagonalize(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, m, n] with m >= n -> (d [B, n], f [B, n]): the upper bidiagonal B = U^T S V (diagonal d,
    superdiagonal f[:, :n-1], f[:, n-1] = 0) by alternating left and right Householder reflections,
    in s's dtype. PyTorch, batched, on the trailing block only; `_bidiag_kernel` applies the same
    reflections to the whole tile."""
    a = s.clone()
    nb, m, n = a.shape
    if m < n:
        raise ValueError(f"bidiagonalize needs m >= n (transpose first), got {m} x {n}")
    d = a.new_zeros(nb, n)
    f = a.new_zeros(nb, n)
    for k in range(n):
        v, tau, alpha = _reflector(a[:, k:, k], 0)                     # zero column k below the diagonal
        blk = a[:, k:, k:]
        u = (v[:, None, :] @ blk)[:, 0] * tau[:, None]
        blk.sub_(v[:, :, None] * u[:, None, :])
        d[:, k] = alpha
        if k < n - 1:
            w, tau, beta = _reflector(a[:, k, k + 1:], 0)              # zero row k right of the superdiagonal
            blk = a[:, k:, k + 1:]
            z = (blk @ w[:, :, None])[..., 0] * tau[:, None]
            blk.sub_(z[:, :, None] * w[:, None, :])
            f[:, k] = beta
    return d, f


def bidiagonal_gram(d: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tridiagonal T = B^T B of the upper bidiagonal (d, f), in fp64 as (diagonal [B, n], e2 [B, n])
    in `tridiagonalize`'s convention: T_ii = d_i^2 + f_{i-1}^2, T_{i-1,i} = d_{i-1} f_{i-1}. The
    products are exact in fp64 for fp32 d, f, so T's eigenvalues are B's singular values squared
    up to the bisection's fp64 rounding (~n eps_64 sigma_1^2, i.e. ~1e-7 sigma_1 on sigma)."""
    d, f = d.double(), f.double()
    prev_f = torch.cat([torch.zeros_like(f[:, :1]), f[:, :-1]], dim=1)
    prev_d = torch.cat([torch.zeros_like(d[:, :1]), d[:, :-1]], dim=1)
    return d * d + prev_f * prev_f, (prev_d * prev_f).square()


# ------------------------------------------------------------------------------------------------
# 3. Sturm-count bisection

def _bounds(d: torch.Tensor, e2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma upper bound [B], pivmin [B]): sqrt of the Gershgorin bound of T (with a margin so that
    the count there is n), and LAPACK's pivot guard safmin * max(1, max e^2)."""
    e = e2.sqrt()
    radius = e + torch.cat([e[:, 1:], torch.zeros_like(e[:, :1])], dim=1)  # |e_{i-1}| + |e_i|
    hi = (d + radius).amax(dim=1).clamp_min(0)
    pivmin = torch.finfo(torch.float64).tiny * e2.amax(dim=1).clamp_min(1)
    return (hi * (1 + 1e-10) + pivmin).sqrt(), pivmin


def sturm_bisection(d: torch.Tensor, e2: torch.Tensor, steps: int = DEFAULT_STEPS) -> torch.Tensor:
    """sqrt of the eigenvalues of the tridiagonal (d, e2) clamped at 0, [B, n] descending. PyTorch
    reference of `_sturm_kernel` (same math, same order of operations)."""
    nb, n = d.shape
    hi, pivmin = _bounds(d, e2)
    pivmin = pivmin[:, None]
    target = (n - 1 - torch.arange(n, device=d.device))[None, :]     # ascending index of the j-th largest
    lo_x = d.new_zeros(nb, n)
    hi_x = hi[:, None].expand(nb, n).clone()
    for _ in range(steps):
        x = 0.5 * (lo_x + hi_x)
        shift = x * x
        q = torch.ones_like(x)
        count = torch.zeros(nb, n, dtype=torch.int32, device=d.device)
        for i in range(n):                                           # LDL^T of T - x^2 I; count negative pivots
            q = d[:, i:i + 1] - shift - e2[:, i:i + 1] / q
            q = torch.where(q.abs() < pivmin, -pivmin, q)
            count += q < 0
        above = count > target                                       # #{lambda < x^2} > target: lambda_target < x^2
        hi_x = torch.where(above, x, hi_x)
        lo_x = torch.where(above, lo_x, x)
    return 0.5 * (lo_x + hi_x)


if triton is not None:
    @triton.jit
    def _sturm_kernel(d_ptr, e2_ptr, hi_ptr, piv_ptr, out_ptr, n, STEPS: tl.constexpr, BLOCK: tl.constexpr):
        """One program per matrix: the n bisections of `sturm_bisection` as a BLOCK-vector."""
        pid = tl.program_id(0).to(tl.int64)
        j = tl.arange(0, BLOCK)
        target = n - 1 - j
        pivmin = tl.load(piv_ptr + pid)
        lo_x = tl.zeros([BLOCK], dtype=tl.float64)
        hi_x = tl.zeros([BLOCK], dtype=tl.float64) + tl.load(hi_ptr + pid)
        base = pid * n
        for _ in range(STEPS):
            x = 0.5 * (lo_x + hi_x)
            shift = x * x
            q = tl.full([BLOCK], 1.0, dtype=tl.float64)
            count = tl.zeros([BLOCK], dtype=tl.int32)
            for i in range(n):
                di = tl.load(d_ptr + base + i)
                ei = tl.load(e2_ptr + base + i)
                q = di - shift - ei / q
                q = tl.where(tl.abs(q) < pivmin, -pivmin, q)
                count += (q < 0).to(tl.int32)
            above = count > target
            hi_x = tl.where(above, x, hi_x)
            lo_x = tl.where(above, lo_x, x)
        tl.store(out_ptr + base + j, 0.5 * (lo_x + hi_x), mask=j < n)

    @triton.jit
    def _tridiag_kernel(g_ptr, d_ptr, e2_ptr, n, BLOCK: tl.constexpr):
        """One program per matrix, the padded matrix in registers; full-tile reflections (module doc).
        After step k the reflector (zero on rows <= k) leaves A[:k+1, :k+1] alone, so at the end
        A is tridiagonal and d, e are read off its diagonals."""
        pid = tl.program_id(0).to(tl.int64)
        rows = tl.arange(0, BLOCK)
        cols = tl.arange(0, BLOCK)
        inside = (rows[:, None] < n) & (cols[None, :] < n)
        a = tl.load(g_ptr + pid * n * n + rows[:, None] * n + cols[None, :], mask=inside, other=0.0)
        for k in range(n - 2):
            x = tl.sum(tl.where(cols[None, :] == k, a, 0.0), axis=1)   # column k, indexed by row
            x = tl.where(rows > k, x, 0.0)
            x0 = tl.sum(tl.where(rows == k + 1, x, 0.0), axis=0)
            nx = tl.sqrt(tl.sum(x * x, axis=0))
            alpha = tl.where(x0 >= 0, -nx, nx)
            v = tl.where(rows == k + 1, x - alpha, x)
            nv = tl.sqrt(tl.sum(v * v, axis=0))
            v = v / tl.where(nv > 0, nv, 1.0)
            p = tl.sum(a * v[None, :], axis=1)                         # A v (A symmetric)
            w = p - tl.sum(v * p, axis=0) * v
            a = a - 2.0 * (v[:, None] * w[None, :] + w[:, None] * v[None, :])
        diag = tl.sum(tl.where(rows[:, None] == cols[None, :], a, 0.0), axis=1)
        sub = tl.sum(tl.where(rows[:, None] == cols[None, :] + 1, a, 0.0), axis=1)  # A[i, i-1]
        tl.store(d_ptr + pid * n + rows, diag, mask=rows < n)
        tl.store(e2_ptr + pid * n + rows, sub * sub, mask=rows < n)


    @triton.jit
    def _bidiag_kernel(s_ptr, d_ptr, f_ptr, m, n, BM: tl.constexpr, BN: tl.constexpr):
        """One program per matrix (m >= n), the padded [BM, BN] fp32 tile in registers: the left and
        right reflections of `bidiagonalize`, applied to the whole tile (the reflectors are zero on
        the leading rows / columns, so the full update is the same transform)."""
        pid = tl.program_id(0).to(tl.int64)
        rows = tl.arange(0, BM)
        cols = tl.arange(0, BN)
        a = tl.load(s_ptr + pid * m * n + rows[:, None] * n + cols[None, :],
                    mask=(rows[:, None] < m) & (cols[None, :] < n), other=0.0).to(tl.float32)
        dv = tl.zeros([BN], dtype=tl.float32)
        fv = tl.zeros([BN], dtype=tl.float32)
        for k in range(n):
            x = tl.sum(tl.where(cols[None, :] == k, a, 0.0), axis=1)      # column k, by row
            x = tl.where(rows >= k, x, 0.0)
            x0 = tl.sum(tl.where(rows == k, x, 0.0), axis=0)
            alpha = tl.sqrt(tl.sum(x * x, axis=0))
            alpha = tl.where(x0 >= 0, -alpha, alpha)
            v = tl.where(rows == k, x - alpha, x)
            vv = tl.sum(v * v, axis=0)
            tau = tl.where(vv > 0, 2.0 / tl.where(vv > 0, vv, 1.0), 0.0)
            u = tl.sum(a * v[:, None], axis=0) * tau                       # tau v^T A, by column
            a = a - v[:, None] * u[None, :]
            dv = tl.where(cols == k, alpha, dv)
            y = tl.sum(tl.where(rows[:, None] == k, a, 0.0), axis=0)      # row k, by column
            y = tl.where(cols > k, y, 0.0)                                 # k = n - 1: y = 0, a no-op
            y0 = tl.sum(tl.where(cols == k + 1, y, 0.0), axis=0)
            beta = tl.sqrt(tl.sum(y * y, axis=0))
            beta = tl.where(y0 >= 0, -beta, beta)
            w = tl.where(cols == k + 1, y - beta, y)
            ww = tl.sum(w * w, axis=0)
            tau = tl.where(ww > 0, 2.0 / tl.where(ww > 0, ww, 1.0), 0.0)
            z = tl.sum(a * w[None, :], axis=1) * tau                       # tau A w, by row
            a = a - z[:, None] * w[None, :]
            fv = tl.where(cols == k, beta, fv)
        tl.store(d_ptr + pid * n + cols, dv, mask=cols < n)
        tl.store(f_ptr + pid * n + cols, fv, mask=cols < n)


def triton_available() -> bool:
    return triton is not None


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def tridiagonalize_triton(g: torch.Tensor, num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`tridiagonalize` as one Triton kernel (n <= TRIDIAG_MAX_N); same (d, e2) up to rounding."""
    nb, n = g.shape[0], g.shape[-1]
    if n > TRIDIAG_MAX_N:
        raise ValueError(f"the Triton tridiagonaliser handles n <= {TRIDIAG_MAX_N}, got {n}")
    g = g.contiguous()
    d = torch.empty(nb, n, dtype=torch.float64, device=g.device)
    e2 = torch.empty_like(d)
    block = _block(n)
    if nb:
        _tridiag_kernel[(nb,)](g, d, e2, n, BLOCK=block, num_warps=num_warps or (16 if block >= 128 else 4))
    return d, e2


def bidiagonalize_triton(s: torch.Tensor, num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`bidiagonalize` as one Triton kernel (fp32, m >= n, m <= TRIDIAG_MAX_N); same (d, f) up to
    rounding."""
    nb, m, n = s.shape
    if m < n:
        raise ValueError(f"bidiagonalize needs m >= n (transpose first), got {m} x {n}")
    if m > TRIDIAG_MAX_N:
        raise ValueError(f"the Triton bidiagonaliser handles m <= {TRIDIAG_MAX_N}, got {m}")
    s = s.float().contiguous()
    d = torch.empty(nb, n, dtype=torch.float32, device=s.device)
    f = torch.empty_like(d)
    bm, bn = _block(m), _block(n)
    if nb:
        # 8 warps at 128 x 128: the launch the recorded GPU run verified (results/gpu_speed/spectrum_bidiag,
        # 42.7 ms for 10,752 matrices); 4 warps measured 22.5 ms there but has no recorded accuracy check
        _bidiag_kernel[(nb,)](s, d, f, m, n, BM=bm, BN=bn, num_warps=num_warps or (8 if bm * bn >= 128 * 64 else 4))
    return d, f


def sturm_bisection_triton(d: torch.Tensor, e2: torch.Tensor, steps: int = DEFAULT_STEPS) -> torch.Tensor:
    """`sturm_bisection` as one Triton kernel."""
    nb, n = d.shape
    hi, pivmin = _bounds(d, e2)
    out = torch.empty_like(d)
    if nb:
        _sturm_kernel[(nb,)](d.contiguous(), e2.contiguous(), hi.contiguous(), pivmin.contiguous(), out, n,
                             STEPS=steps, BLOCK=_block(n), num_warps=4)
    return out


# ------------------------------------------------------------------------------------------------
# the whole path

def _use_triton(backend: str, device: torch.device) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        if triton is None:
            raise RuntimeError("backend='triton' but triton is not importable")
        return True
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    return backend == "auto" and triton is not None and (device.type == "cuda" or interpret)


def _batch(states: torch.Tensor, steps) -> tuple[torch.Tensor | None, tuple, torch.dtype]:
    """Both routes' input checks: (states as [B, m, n] or None when there is nothing to compute,
    the leading dims, the output dtype: float64 for float64 input, else float32)."""
    if states.dim() < 2:
        raise ValueError(f"states must be [..., d_k, d_v], got shape {tuple(states.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    out_dtype = torch.float64 if states.dtype == torch.float64 else torch.float32
    lead, (m, n) = tuple(states.shape[:-2]), states.shape[-2:]
    flat = states.reshape(-1, m, n)
    return (None if min(m, n) == 0 or flat.shape[0] == 0 else flat), lead, out_dtype


def gram_singular_values(states: torch.Tensor, steps: int = DEFAULT_STEPS, backend: str = "auto",
                         tridiag: str | None = None) -> torch.Tensor:
    """[..., d_k, d_v] -> [..., min(d_k, d_v)] descending, via the fp64 Gram route (module doc).

    backend: "triton" (the kernels; on CPU tensors only under TRITON_INTERPRET=1), "torch" (the
    PyTorch reference) or "auto" (triton on CUDA). tridiag overrides the tridiagonaliser alone
    ("torch" / "triton"; default: torch). Measured on an H200 at 10,752 states of 128 x 128
    (results/gpu_speed/spectrum_bidiag): PyTorch tridiagonalisation 88 ms vs 107-248 ms for the Triton
    one (register spills at 8-32 warps); with the Triton Sturm bisection (9 ms) the whole route took
    100 ms. The bidiag route (`bidiag_singular_values`) took 52 ms there and is the default."""
    flat, lead, out_dtype = _batch(states, steps)
    if flat is None:
        return states.new_zeros(*lead, min(states.shape[-2:]), dtype=out_dtype)
    use_triton = _use_triton(backend, states.device)
    if tridiag is None:
        tridiag = "torch"  # the faster of the two on the H200 (docstring)
    if tridiag not in ("torch", "triton"):
        raise ValueError(f"tridiag must be 'torch' or 'triton', got {tridiag!r}")
    g, c = gram(flat)
    d, e2 = tridiagonalize_triton(g) if tridiag == "triton" else tridiagonalize(g)
    return _sigma(d, e2, c, steps, use_triton, out_dtype, lead)


ROUTES = ("gram", "bidiag")
DEFAULT_ROUTE = "bidiag"  # the faster on the H200 (results/gpu_speed/spectrum_bidiag)


def bidiag_singular_values(states: torch.Tensor, steps: int = DEFAULT_STEPS, backend: str = "auto") -> torch.Tensor:
    """[..., d_k, d_v] -> [..., min(d_k, d_v)] descending, by Householder bidiagonalisation of the
    scaled fp32 states (the "bidiag" route) and Sturm bisection on B^T B in fp64.

    Why fp32 is enough here, where the Gram route needs fp64: the reflections act on S itself, so
    the condition number is not squared; Householder bidiagonalisation is backward stable, B =
    U^T (S + dS) V with ||dS|| ~ n eps_32 ||S|| in the worst case and ~sqrt(n) eps_32 ||S|| in
    practice (~1e-6 sigma_1 at n = 128: tests), and sigma moves by at most ||dS||_2 (Weyl). B^T B is
    formed exactly in fp64 from fp32 entries (`bidiagonal_gram`). fp32 halves the registers of the
    fp64 Gram kernel (a 128 x 128 tile spills in fp64) and doubles the arithmetic rate.
    backend: "triton" (kernel; CPU only under TRITON_INTERPRET=1), "torch" (PyTorch reference,
    trailing blocks) or "auto" (triton on CUDA)."""
    flat, lead, out_dtype = _batch(states, steps)
    if flat is None:
        return states.new_zeros(*lead, min(states.shape[-2:]), dtype=out_dtype)
    use_triton = _use_triton(backend, states.device)
    if flat.shape[-2] < flat.shape[-1]:
        flat = flat.transpose(-1, -2)                                    # same singular values, m >= n
    flat, c = _scaled(flat.float())
    d, f = bidiagonalize_triton(flat) if use_triton else bidiagonalize(flat)
    return _sigma(*bidiagonal_gram(d, f), c, steps, use_triton, out_dtype, lead)


def fast_singular_values(states: torch.Tensor, route: str = DEFAULT_ROUTE, **kwargs) -> torch.Tensor:
    """The GPU singular values by `route` ("gram" or "bidiag"; kwargs go to that route's function)."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    return (bidiag_singular_values if route == "bidiag" else gram_singular_values)(states, **kwargs)


def near_threshold(sv_ref: torch.Tensor, eps: float, tol: float = TOLERANCE) -> torch.Tensor:
    """Bool [...]: some reference sigma_i lies within tol * sigma_1 of the threshold eps * sigma_1,
    so a sigma accurate to tol * sigma_1 may fall on either side of it: the threshold ranks of such
    matrices may differ between methods (all others must agree)."""
    top = sv_ref[..., :1]
    return ((sv_ref - eps * top).abs() <= tol * top).any(dim=-1) & (top[..., 0] > 0)


def compare(sv: torch.Tensor, sv_ref: torch.Tensor, eps: float, tol: float = TOLERANCE) -> dict:
    """Max |sigma - sigma_ref| / sigma_1, threshold-rank mismatches outside / inside the
    near-threshold set, and its size."""
    from lapr.profiling.metrics import threshold_rank

    sv, sv_ref = sv.double().cpu(), sv_ref.double().cpu()
    top = sv_ref[..., :1].clamp_min(torch.finfo(torch.float64).tiny)
    near = near_threshold(sv_ref, eps, tol)
    differ = threshold_rank(sv, eps) != threshold_rank(sv_ref, eps)
    return {"max_rel_error": float(((sv - sv_ref).abs() / top).max()) if sv.numel() else 0.0,
            "n_matrices": int(near.numel()), "near_threshold": int(near.sum()),
            "rank_mismatch_far": int((differ & ~near).sum()), "rank_mismatch_near": int((differ & near).sum())}


# ------------------------------------------------------------------------------------------------
# benchmark driver

SHAPES = {  # (n_matrices, d): the context shape, and a tiny one to test the driver on CPU
    "issue": (14 * 6 * 32 * 4, 128),
    "small": (24, 16),
}
MODEL_SPECS = {  # the GPU profile's DeltaNet (random init) and a tiny one for the CPU test
    "issue": dict(spec=dict(family="delta_net", hidden_size=768, num_layers=14, num_heads=6, head_k_dim=128,
                            head_v_dim=128, vocab_size=8192, mlp_ratio=4), T=2048, batch=4, n_positions=32),
    "small": dict(spec=dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=16,
                            head_v_dim=16, vocab_size=256, mlp_ratio=2), T=64, batch=2, n_positions=8),
}


def synthetic_states(n_mat: int, d: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """[n_mat, d, d] fp32: half U diag(sigma) V^T with sigma_i = 10^(-8 i / r) for ranks r cycling
    through 1, 4, 16, 64, d (exact low rank, spectra spanning 8 decades), half products
    [d x r][r x d] of Gaussians with column scales decaying as i^-1.5 (state-like: full-looking
    spectra with a tail through the threshold)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ranks = [r for r in (1, 4, 16, 64, d) if r <= d]
    out = torch.empty(n_mat, d, d)
    for i in range(n_mat):
        r = ranks[i % len(ranks)]
        if i % 2 == 0:
            u, _ = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))
            v, _ = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))
            sigma = 10.0 ** (-8.0 * torch.arange(r, dtype=torch.float64) / r)
            out[i] = ((u * sigma) @ v.T).float()
        else:
            a = torch.randn(d, r, generator=gen) * torch.arange(1, r + 1).pow(-1.5)
            out[i] = a @ torch.randn(r, d, generator=gen)
    return out.to(device)


def timed(fn, device, repeats: int, warmup: int = 1) -> tuple[object, float, list[float]]:
    """fn's last result, the median and all wall times of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def _subset(n_mat: int, k: int) -> torch.Tensor:
    return torch.from_numpy(np.unique(np.linspace(0, n_mat - 1, num=min(k, n_mat)).round().astype(np.int64)))


def rank_metrics(sv: torch.Tensor, eps: float) -> dict:
    """Every metric of rank_table from sv, on sv's device (what the GPU path times end to end)."""
    from lapr.profiling import metrics as M

    return {"threshold_rank": M.threshold_rank(sv, eps), "stable_rank": M.stable_rank(sv),
            "entropy_rank": M.entropy_rank(sv), "frobenius": M.state_norm(sv), "spectral": sv[..., 0]}


def benchmark(device, shape: str, repeats: int, steps: int, lapack_subset: int, gpu_svd_subset: int,
              eps: float, model: bool, seed: int = 0) -> tuple[list[dict], dict]:
    device = torch.device(device)
    n_mat, d = SHAPES[shape]
    states = synthetic_states(n_mat, d, seed).to(device)
    rows, extra = [], {}

    def row(method, seconds, n_timed, note, times=None, acc=None):
        rows.append({"method": method, "device": device.type, "n_matrices": n_mat, "d": d, "n_timed": n_timed,
                     "seconds": seconds, "seconds_per_context": seconds * n_mat / n_timed,
                     "times": " ".join(f"{t:.5f}" for t in (times or [seconds])), "note": note, **(acc or {})})
        print(f"[spectrum] {method}: {seconds * n_mat / n_timed:.4f}s per {n_mat} matrices ({note})", flush=True)

    # reference: LAPACK fp64 on the CPU, on an evenly spaced subset, time extrapolated linearly
    idx = _subset(n_mat, lapack_subset)
    ref_states = states[idx.to(device)].cpu()
    ref, t_lapack, times = timed(lambda: torch.linalg.svdvals(ref_states.double()), "cpu", 1, warmup=0)
    row("lapack_fp64_cpu", t_lapack, len(idx), f"torch.linalg.svdvals fp64 on {torch.get_num_threads()} CPU "
        f"threads, {len(idx)} matrices, extrapolated", times)
    _, t32, times = timed(lambda: torch.linalg.svdvals(ref_states), "cpu", 1, warmup=0)
    row("lapack_fp32_cpu", t32, len(idx), "torch.linalg.svdvals fp32 (metrics.singular_values today), "
        "extrapolated", times, compare(torch.linalg.svdvals(ref_states), ref, eps))

    if device.type == "cuda":
        sub = states[_subset(n_mat, gpu_svd_subset).to(device)]
        _, t_svd, times = timed(lambda: torch.linalg.svdvals(sub), device, 1)
        row("svdvals_fp32_cuda", t_svd, sub.shape[0], "torch.linalg.svdvals on the GPU (cuSOLVER), extrapolated",
            times)

    variants = [("gram_torch", dict(route="gram", backend="torch")),
                ("bidiag_torch", dict(route="bidiag", backend="torch"))]
    if device.type == "cuda" and triton is not None:
        variants = [("bidiag_triton", dict(route="bidiag", backend="triton")),
                    ("gram_triton", dict(route="gram", backend="triton", tridiag="triton")),
                    ("gram_torch_tridiag_triton_sturm", dict(route="gram", backend="triton", tridiag="torch"))
                    ] + variants
    what = {"gram": "fp64 Gram + tridiag", "bidiag": "fp32 bidiagonalisation"}
    for name, kw in variants:
        reps = repeats if not name.endswith("_torch") or device.type == "cuda" else 1
        sv, t, times = timed(lambda: fast_singular_values(states, steps=steps, **kw), device, reps)
        row(name, t, n_mat, f"{what[kw['route']]} + {steps}-step Sturm bisection, median of {reps}", times,
            compare(sv[idx.to(device)], ref, eps))
        if name in ("bidiag_triton", "gram_torch_tridiag_triton_sturm", "gram_torch"):
            _, t_all, times = timed(lambda: rank_metrics(fast_singular_values(states, steps=steps, **kw), eps),
                                    device, reps)
            row(name + "+metrics", t_all, n_mat, "singular values and every rank_table metric", times)
    if device.type == "cuda" and triton is not None:  # where the time goes
        g, c = gram(states)
        _, t, times = timed(lambda: gram(states), device, repeats)
        row("stage_gram", t, n_mat, "fp64 scaled Gram matrices", times)
        for warps in (8, 16, 32):
            _, t, times = timed(lambda: tridiagonalize_triton(g, num_warps=warps), device, repeats)
            row(f"stage_tridiag_triton_w{warps}", t, n_mat, f"Triton tridiagonalisation, {warps} warps", times)
        _, t, times = timed(lambda: tridiagonalize(g), device, max(1, repeats // 2))
        row("stage_tridiag_torch", t, n_mat, "PyTorch trailing-block tridiagonalisation", times)
        de = tridiagonalize_triton(g)
        _, t, times = timed(lambda: sturm_bisection_triton(*de, steps), device, repeats)
        row("stage_sturm_triton", t, n_mat, f"Triton Sturm bisection, {steps} steps", times)
        scaled = states / states.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        for warps in (4, 8, 16):
            _, t, times = timed(lambda: bidiagonalize_triton(scaled, num_warps=warps), device, repeats)
            row(f"stage_bidiag_triton_w{warps}", t, n_mat, f"Triton fp32 bidiagonalisation, {warps} warps", times)

    if model:
        try:
            extra["model"] = model_comparison(device, shape, steps, eps, repeats)
        except Exception as exc:  # fla missing, out of memory, ...: the spectrum numbers still stand
            extra["model"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[spectrum] model: {extra['model']}", flush=True)
    return rows, extra


def model_comparison(device, shape: str, steps: int, eps: float, repeats: int) -> dict:
    """One plain forward of a randomly initialised model of the profile's shape vs capture_states +
    singular values + every metric on all captured states (one context), by each route; and the
    profile stage's own metrics step (lapr.profiling.stage._metrics: the same, plus building its
    rank and spectrum tables on the host), which is what `lapr profile` times as metrics_s."""
    from lapr.models import build_model, default_dtype
    from lapr.profiling.capture import capture_states, log_positions, plain_forward
    from lapr.profiling.stage import Profiling, _metrics

    cfg = MODEL_SPECS[shape]
    model = build_model(cfg["spec"], seed=0).to(device=device, dtype=default_dtype(device)).eval()
    ids = torch.randint(0, cfg["spec"]["vocab_size"], (cfg["batch"], cfg["T"]),
                        generator=torch.Generator().manual_seed(0)).to(device)
    positions = log_positions(cfg["T"], cfg["n_positions"])
    reps = max(repeats, 10) if device.type == "cuda" else repeats
    _, t_fwd, fwd_times = timed(lambda: plain_forward(model, ids), device, reps, warmup=2)
    states, t_cap, cap_times = timed(lambda: capture_states(model, ids, positions), device, reps, warmup=2)
    flat = torch.cat([s.reshape(-1, *s.shape[-2:]) for s in states.values()])
    out = {"spec": cfg["spec"], "T": cfg["T"], "batch": cfg["batch"], "n_positions": len(positions),
           "n_states": int(flat.shape[0]), "dtype": str(next(model.parameters()).dtype), "repeats": reps,
           "forward_s": t_fwd, "capture_s": t_cap, "forward_times": fwd_times, "capture_times": cap_times}
    routes = ROUTES if device.type == "cuda" else ("bidiag",)
    for route in routes:
        _, t_met, _ = timed(lambda: rank_metrics(fast_singular_values(flat, route=route, steps=steps), eps),
                            device, repeats)
        out[f"metrics_s_{route}"] = t_met
        out[f"profile_over_forward_{route}"] = (t_cap + t_met) / t_fwd
    settings = Profiling.parse({"eps": eps, "svd": "auto" if device.type == "cuda" else DEFAULT_ROUTE}).as_dict()
    _, t_stage, _ = timed(lambda: _metrics(states, positions, settings, "timing"), device, repeats)
    out.update(metrics_s=out[f"metrics_s_{DEFAULT_ROUTE}"], stage_metrics_s=t_stage, default_route=DEFAULT_ROUTE,
               profile_over_forward=(t_cap + out[f"metrics_s_{DEFAULT_ROUTE}"]) / t_fwd,
               stage_profile_over_forward=(t_cap + t_stage) / t_fwd)
    return out


def main(argv=None) -> None:
    from lapr import provenance
    from lapr.profiling.metrics import DEFAULT_EPS

    p = argparse.ArgumentParser(prog="python -m lapr.profiling.spectrum_gpu", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory (spectrum_timing.csv, provenance.json)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="issue")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--lapack-subset", type=int, default=1024, help="matrices timed with LAPACK (extrapolated)")
    p.add_argument("--gpu-svd-subset", type=int, default=256, help="matrices timed with cuSOLVER (extrapolated)")
    p.add_argument("--eps", type=float, default=DEFAULT_EPS)
    p.add_argument("--model", choices=["auto", "run", "skip"], default="auto",
                   help="time a forward and capture of a profile-shaped model (auto: on CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", metavar="RUN_DIR", default=None,
                   help="only draw RUN_DIR's recorded benchmark as OUT/spectrum_timing.{png,pdf}")
    args = p.parse_args(argv)
    if args.figure:
        from lapr.profiling.plots import spectrum_timing
        for path in spectrum_timing(args.figure, Path(args.out) / "spectrum_timing"):
            print(f"[spectrum] wrote {path}")
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.repeats < 1 or args.steps < 1 or args.lapack_subset < 1 or args.gpu_svd_subset < 1:
        p.error("--repeats, --steps, --lapack-subset and --gpu-svd-subset must be >= 1")
    model = args.model == "run" or (args.model == "auto" and device.type == "cuda")
    t0 = time.perf_counter()
    rows, extra = benchmark(device, args.shape, args.repeats, args.steps, args.lapack_subset,
                            args.gpu_svd_subset, args.eps, model, args.seed)
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    provenance.write_table(out / "spectrum_timing.csv", pd.DataFrame(rows))
    provenance.write_json(out / "provenance.json", provenance.record(
        vars(args), args.seed, device, stage="spectrum_gpu_benchmark", shape=SHAPES[args.shape],
        triton=getattr(triton, "__version__", None), tolerance=TOLERANCE, total_s=time.perf_counter() - t0,
        **extra))
    print(f"[spectrum] wrote {out} in {time.perf_counter() - t0:.1f}s")


__all__ = ["gram_singular_values", "bidiag_singular_values", "fast_singular_values", "bidiagonalize",
           "bidiagonalize_triton", "bidiagonal_gram", "ROUTES", "DEFAULT_ROUTE",
           "gram", "tridiagonalize", "tridiagonalize_triton", "sturm_bisection",
           "sturm_bisection_triton", "near_threshold", "compare", "triton_available", "DEFAULT_STEPS", "TOLERANCE"]

if __name__ == "__main__":
    main()
