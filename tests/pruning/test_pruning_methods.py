"""Tests for lapr.pruning.channels: registry contract, planted-score recovery, QR/RRQR, PCA."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from lapr.pruning.channels import (
    METHODS, ChannelContext, pca_basis, pca_qk_basis, rotation_basis, select_channels)
from lapr.pruning.channels.qr import (
    DEFAULT_F, max_swap_ratio, pivoted_qr_columns, square_triangle, strong_rrqr_columns)

H, D_K, HIDDEN, TOKENS = 3, 16, 24, 40


def full_context(seed: int = 0) -> ChannelContext:
    """Every optional field filled, fresh Gaussian values."""
    gen = torch.Generator().manual_seed(seed)
    w = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    return ChannelContext(
        q_weight=w(H, D_K, HIDDEN), k_weight=w(H, D_K, HIDDEN),
        q_grad=w(H, D_K, HIDDEN), k_grad=w(H, D_K, HIDDEN),
        input_rms=w(HIDDEN).abs() + 0.1,
        q_act=w(H, TOKENS, D_K), k_act=w(H, TOKENS, D_K), seed=seed)


def weights_only(q_weight, k_weight, **extra) -> ChannelContext:
    return ChannelContext(q_weight=q_weight, k_weight=k_weight, **extra)


def planted_sets(seed: int, keep: int, d_k: int = D_K) -> list[list[int]]:
    """A different sorted index set per head."""
    gen = torch.Generator().manual_seed(1000 + seed)
    return [sorted(torch.randperm(d_k, generator=gen)[:keep].tolist()) for _ in range(H)]


def r11(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
    rest = np.setdiff1d(np.arange(matrix.shape[1]), columns)
    r, _ = square_triangle(matrix[:, np.concatenate([columns, rest])], pivoting=False)
    return r[:len(columns), :len(columns)]


def independent_rho(matrix: np.ndarray, columns: np.ndarray) -> float:
    """Gu-Eisenstat max rho recomputed here (dense inverse), not via the module under test."""
    rest = np.setdiff1d(np.arange(matrix.shape[1]), columns)
    r = np.linalg.qr(matrix[:, np.concatenate([columns, rest])], mode="r")
    k = len(columns)
    inv = np.linalg.inv(r[:k, :k])
    gamma = np.linalg.norm(r[k:, k:], axis=0)
    rho = (inv @ r[:k, k:]) ** 2 + (np.linalg.norm(inv, axis=1)[:, None] * gamma[None]) ** 2
    return float(rho.max())


def kahan(n: int, c: float = 0.285) -> np.ndarray:
    """Kahan's matrix: every column has unit norm yet trailing R is tiny, the classic case where
    column pivoting fails; norms shrink by 1e-10 per column so pivoting keeps the given order."""
    s = np.sqrt(1 - c * c)
    k = np.diag(s ** np.arange(n)) @ (np.eye(n) - c * np.triu(np.ones((n, n)), 1))
    return k * (1 - 1e-10) ** np.arange(n)


# ---- registry contract -------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("keep", [1, 5, D_K])
def test_contract_shape_unique_sorted_deterministic(method, keep):
    chosen = select_channels(method, full_context(seed=7), keep)
    assert chosen.dtype == torch.long and tuple(chosen.shape) == (H, keep)
    assert (chosen >= 0).all() and (chosen < D_K).all()
    assert (chosen.diff(dim=-1) > 0).all()  # strictly increasing: sorted and unique
    again = select_channels(method, full_context(seed=7), keep)
    assert torch.equal(chosen, again)


def test_expected_methods_registered():
    assert set(METHODS) == {"random", "l1", "l2", "wanda", "taylor", "pivoted_qr", "strong_rrqr"}


def test_random_depends_on_seed_and_head():
    keep = 6
    a = select_channels("random", full_context(seed=1), keep)
    b = select_channels("random", full_context(seed=2), keep)
    assert not torch.equal(a, b)
    assert len({tuple(row.tolist()) for row in a}) > 1  # heads are not all identical
    # head h with seed s uses generator seed s + h, so seed 1 head 1 == seed 2 head 0
    assert torch.equal(a[1], b[0])


# ---- planted scores ----------------------------------------------------------------------

def test_magnitude_picks_planted_rows_in_q_or_k():
    keep = 4
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(H, D_K, HIDDEN, generator=gen)
    k = torch.randn(H, D_K, HIDDEN, generator=gen)
    planted = planted_sets(3, keep)
    for h, idx in enumerate(planted):
        q[h, idx[:2]] *= 5   # half the planted rows are large only in q,
        k[h, idx[2:]] *= 5   # half only in k: both must count
    for method in ("l1", "l2"):
        assert select_channels(method, weights_only(q, k), keep).tolist() == planted


def test_l1_and_l2_differ_on_spiky_versus_flat_rows():
    # base rows: |w| = 1 everywhere (l1 = 64, l2 = 8); spiky: one 20 (l1 = l2 = 20);
    # flat: all 1.5 (l1 = 96, l2 = 12). l1 must pick flat, l2 spiky.
    d = 64
    gen = torch.Generator().manual_seed(4)
    q = torch.randint(0, 2, (H, D_K, d), generator=gen).float() * 2 - 1
    spiky, flat = [1, 9], [4, 12]
    q[:, spiky] = 0
    q[:, spiky, 5] = 20
    q[:, flat] = 1.5
    ctx = weights_only(q, q.clone())
    assert select_channels("l1", ctx, 2).tolist() == [flat] * H
    assert select_channels("l2", ctx, 2).tolist() == [spiky] * H


def test_wanda_uses_input_rms_where_magnitude_would_not():
    keep, hot = 3, 4  # first `hot` input features have rms 10, the rest 0.1
    rms = torch.full((HIDDEN,), 0.1)
    rms[:hot] = 10.0
    gen = torch.Generator().manual_seed(5)
    sign = lambda: torch.randint(0, 2, (H, D_K, HIDDEN), generator=gen).float() * 2 - 1  # noqa
    q, k = sign(), sign()
    q[..., :hot] = 0
    k[..., :hot] = 0    # ordinary rows: l1 = 20, wanda = 2 per projection
    planted = planted_sets(5, keep)
    for h, idx in enumerate(planted):
        for w in (q, k):
            w[h, idx] = 0
            w[h, idx, :hot] = 1.0  # planted rows: l1 = 4, wanda = 40 per projection
    ctx = weights_only(q, k, input_rms=rms)
    assert select_channels("wanda", ctx, keep).tolist() == planted
    l1 = select_channels("l1", ctx, keep).tolist()
    assert all(not set(a) & set(b) for a, b in zip(l1, planted))  # discriminating setup


def test_taylor_uses_gradients_where_magnitude_would_not():
    keep = 3
    gen = torch.Generator().manual_seed(6)
    w = lambda scale: torch.randn(H, D_K, HIDDEN, generator=gen) * scale  # noqa: E731
    q, k, q_grad, k_grad = w(1), w(1), w(1e-2), w(1e-2)
    planted = planted_sets(6, keep)
    for h, idx in enumerate(planted):
        q[h, idx] *= 0.3
        k[h, idx] *= 0.3         # smaller weights ...
        q_grad[h, idx] *= 100    # ... but much larger gradients
        k_grad[h, idx] *= 100
    ctx = weights_only(q, k, q_grad=q_grad, k_grad=k_grad)
    assert select_channels("taylor", ctx, keep).tolist() == planted
    l2 = select_channels("l2", ctx, keep).tolist()
    assert all(not set(a) & set(b) for a, b in zip(l2, planted))


def test_taylor_without_grads_names_missing_field():
    with pytest.raises(ValueError, match="q_grad"):
        select_channels("taylor", weights_only(torch.ones(1, 4, 3), torch.ones(1, 4, 3)), 2)


# ---- QR / strong RRQR --------------------------------------------------------------------

def low_rank_activations(seed: int, keep: int, d_k: int = 24, rows: int = 30):
    """Per head X [2*rows, d_k]: columns `spanning` independent Gaussian (norm ~ 8); of the
    rest, a third are zero and the others combinations of the spanning ones with coefficients
    1e-3 plus 1e-6 noise, i.e. ~1e3 times smaller norm and (almost) inside their span."""
    gen = torch.Generator().manual_seed(seed)
    spanning = planted_sets(seed, keep, d_k)
    acts = torch.zeros(H, 2 * rows, d_k)
    for h, idx in enumerate(spanning):
        basis = torch.randn(2 * rows, keep, generator=gen)
        acts[h][:, idx] = basis
        others = [c for c in range(d_k) if c not in idx]
        for n, c in enumerate(others):
            if n % 3:
                acts[h][:, c] = (basis @ torch.randn(keep, generator=gen) * 1e-3
                                 + torch.randn(2 * rows, generator=gen) * 1e-6)
    ctx = ChannelContext(q_weight=torch.zeros(H, d_k, 8), k_weight=torch.zeros(H, d_k, 8),
                         q_act=acts[:, :rows], k_act=acts[:, rows:])
    return ctx, spanning


@pytest.mark.parametrize("method", ["pivoted_qr", "strong_rrqr"])
@pytest.mark.parametrize("seed,keep", [(0, 6), (1, 1), (2, 11)])
def test_qr_recovers_spanning_columns(method, seed, keep):
    ctx, spanning = low_rank_activations(seed, keep)
    assert select_channels(method, ctx, keep).tolist() == spanning


@pytest.mark.parametrize("keep,gain", [(7, 2), (47, 1e4)])
def test_strong_rrqr_fixes_kahan_where_pivoted_qr_fails(keep, gain):
    # keep=47: the coupling term |R11^-1 R12| drives the swaps; keep=7: the gamma/omega term.
    n = 48
    x = kahan(n)
    pivoted, strong = pivoted_qr_columns(x, keep), strong_rrqr_columns(x, keep)
    assert independent_rho(x, pivoted) > DEFAULT_F**2           # pivoted QR is not strong here
    assert independent_rho(x, strong) <= DEFAULT_F**2 * (1 + 1e-6)
    assert max_swap_ratio(x, strong) <= DEFAULT_F**2 * (1 + 1e-9)
    smin = lambda cols: np.linalg.svd(r11(x, cols), compute_uv=False).min()  # noqa: E731
    sigma_k = np.linalg.svd(x, compute_uv=False)[keep - 1]
    assert smin(strong) >= gain * smin(pivoted)
    assert smin(strong) >= sigma_k / np.sqrt(1 + DEFAULT_F**2 * keep * (n - keep))


@pytest.mark.parametrize("seed", range(6))
def test_strong_rrqr_bounds_on_random_matrices(seed):
    # Correlated columns (decaying row scales) so that some seeds need swaps. sigma_min(R11)
    # is *not* monotone under Gu-Eisenstat swaps (|det R11| is), so we check: det never
    # decreases, sigma_min >= pivoted's on plain Gaussian input (where no swap is needed),
    # the f-bound on exit, and the theorem's sigma_min lower bound.
    rng = np.random.default_rng(seed)
    n, keep = 32, int(rng.integers(2, 31))
    mix = rng.standard_normal((n, n)) * np.logspace(0, -3, n)[:, None]
    gaussian = rng.standard_normal((100, n))
    for x in (rng.standard_normal((100, n)) @ mix, gaussian):
        pivoted, strong = pivoted_qr_columns(x, keep), strong_rrqr_columns(x, keep)
        logdet = lambda cols: np.log(np.abs(np.diag(r11(x, cols)))).sum()  # noqa: E731
        assert logdet(strong) >= logdet(pivoted) - 1e-9
        assert max_swap_ratio(x, strong) <= DEFAULT_F**2 * (1 + 1e-9)
        assert independent_rho(x, strong) <= DEFAULT_F**2 * (1 + 1e-6)
        smin = np.linalg.svd(r11(x, strong), compute_uv=False).min()
        sigma_k = np.linalg.svd(x, compute_uv=False)[keep - 1]
        assert smin >= sigma_k / np.sqrt(1 + DEFAULT_F**2 * keep * (n - keep))
    smin_strong, smin_pivoted = (
        np.linalg.svd(r11(gaussian, cols), compute_uv=False).min()
        for cols in (strong_rrqr_columns(gaussian, keep), pivoted_qr_columns(gaussian, keep)))
    assert smin_strong >= smin_pivoted * (1 - 1e-12)


def test_strong_rrqr_swaps_on_some_correlated_matrix():
    # Guards against a strong_rrqr that silently returns the pivoted choice.
    differs = 0
    rng = np.random.default_rng(0)
    for _ in range(40):
        mix = rng.standard_normal((32, 32)) * np.logspace(0, -3, 32)[:, None]
        x, keep = rng.standard_normal((100, 32)) @ mix, int(rng.integers(2, 31))
        differs += not np.array_equal(pivoted_qr_columns(x, keep), strong_rrqr_columns(x, keep))
    assert differs > 0


def test_strong_rrqr_swap_cap_warns():
    x = kahan(48)
    with pytest.warns(RuntimeWarning, match="0 swaps"):
        capped = strong_rrqr_columns(x, 47, max_swaps=0)
    assert np.array_equal(capped, pivoted_qr_columns(x, 47))


def test_strong_rrqr_rank_deficient_keeps_spanning_columns():
    rng = np.random.default_rng(1)
    x = np.zeros((50, 12))
    x[:, [2, 7, 9]] = rng.standard_normal((50, 3))   # rank 3 < keep 5
    chosen = strong_rrqr_columns(x, 5)
    assert {2, 7, 9} <= set(chosen.tolist()) and len(chosen) == 5


def test_qr_without_activations_names_missing_field():
    ctx = weights_only(torch.ones(1, 4, 3), torch.ones(1, 4, 3))
    with pytest.raises(ValueError, match="q_act"):
        select_channels("strong_rrqr", ctx, 2)


# ---- PCA ---------------------------------------------------------------------------------

def test_pca_qk_basis_orthonormal_and_spans_top_subspace():
    # pca_qk: uncentred second moment of the stacked q/k rows
    keep, rows = 5, 60
    gen = torch.Generator().manual_seed(8)
    true = []
    acts = torch.empty(H, 2 * rows, D_K, dtype=torch.float64)
    scales = torch.cat([torch.linspace(10, 6, keep), torch.linspace(1, 0.1, D_K - keep)])
    for h in range(H):
        rot = torch.linalg.qr(torch.randn(D_K, D_K, generator=gen, dtype=torch.float64))[0]
        left = torch.linalg.qr(torch.randn(2 * rows, D_K, generator=gen, dtype=torch.float64))[0]
        acts[h] = left @ torch.diag(scales.double()) @ rot.T  # X^T X = rot diag(s^2) rot^T
        true.append(rot[:, :keep])
    ctx = ChannelContext(q_weight=torch.zeros(H, D_K, 8), k_weight=torch.zeros(H, D_K, 8),
                         q_act=acts[:, :rows].float(), k_act=acts[:, rows:].float())
    basis = pca_qk_basis(ctx, keep)
    assert basis.dtype == torch.float32 and tuple(basis.shape) == (H, D_K, keep)
    eye = torch.eye(keep).expand(H, keep, keep)
    assert torch.allclose(basis.mT @ basis, eye, atol=1e-5)
    for h in range(H):
        u, t = basis[h].double(), true[h]
        gap = torch.linalg.matrix_norm(u @ u.T - t @ t.T, ord=2)  # sin of largest angle
        assert gap < 1e-4
        # columns come in eigenvalue order: the first one is the top direction (up to sign)
        assert abs(float(u[:, 0] @ t[:, 0])) > 1 - 1e-4
    assert torch.equal(basis, pca_qk_basis(ctx, keep))
    assert torch.equal(basis, rotation_basis("pca_qk", ctx, keep))


def lap_key_statistics(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LAP's pca.py by hand: l2_norm per head (l. 236), k_sum / k_outer / n (l. 245-247), then
    cov = (k_outer - n mu mu^T) / (n - 1) (l. 76-77). keys [H, N, d_k], pre-norm."""
    k = keys.double()
    k = k / (k.square().sum(-1, keepdim=True) + 1e-6).sqrt()
    n = k.shape[1]
    k_sum, k_outer = k.sum(1), k.mT @ k
    mu = k_sum / n
    return mu.float(), ((k_outer - n * mu[..., :, None] * mu[..., None, :]) / (n - 1)).float()


def mean_dominated_keys(n: int = 400, seed: int = 0) -> torch.Tensor:
    """[H, n, D_K] keys: a large constant along channel 0 (the mean), most variance along
    channel 3, a little along channel 7, noise elsewhere. Centred PCA's top direction is e3, the
    uncentred moment's is e0."""
    gen = torch.Generator().manual_seed(seed)
    keys = 0.01 * torch.randn(H, n, D_K, generator=gen)
    keys[..., 0] += 10.0
    keys[..., 3] += 3.0 * torch.randn(H, n, generator=gen)
    keys[..., 7] += 1.0 * torch.randn(H, n, generator=gen)
    return keys


def test_pca_is_laps_centred_post_norm_key_pca():
    keys = mean_dominated_keys()
    mean, cov = lap_key_statistics(keys)
    ctx = ChannelContext(q_weight=torch.zeros(H, D_K, 8), k_weight=torch.zeros(H, D_K, 8),
                         k_norm_mean=mean, k_norm_cov=cov)
    basis = pca_basis(ctx, 2)
    assert tuple(basis.shape) == (H, D_K, 2)
    for h in range(H):  # the known top subspace, in order: e3 (largest variance), then e7
        assert abs(float(basis[h, 3, 0])) > 0.999 and abs(float(basis[h, 7, 1])) > 0.999
    # centring is what finds it: the same unit keys' UNcentred moment puts e0 (the mean) first
    unit = keys / keys.norm(dim=-1, keepdim=True)
    uncentred = ChannelContext(q_weight=ctx.q_weight, k_weight=ctx.k_weight,
                               k_norm_cov=unit.mT @ unit / unit.shape[1])
    assert (pca_basis(uncentred, 1)[:, 0].abs().argmax(-1) == 0).all()
    assert torch.equal(rotation_basis("pca", ctx, 2), basis)


def test_pca_and_pca_qk_differ_on_a_mean_dominated_head():
    # pca: keys only, L2-normalised, centred -> e3. pca_qk: q and k stacked, pre-norm,
    # uncentred -> e0 (the mean). And pca ignores the queries, pca_qk does not.
    keys = mean_dominated_keys()
    queries = mean_dominated_keys(seed=1).roll(5, dims=-1)  # queries' mass on channels 5, 8, 12
    mean, cov = lap_key_statistics(keys)
    ctx = ChannelContext(q_weight=torch.zeros(H, D_K, 8), k_weight=torch.zeros(H, D_K, 8),
                         q_act=queries, k_act=keys, k_norm_mean=mean, k_norm_cov=cov)
    lap, ours = pca_basis(ctx, 1)[:, :, 0], pca_qk_basis(ctx, 1)[:, :, 0]
    assert (lap.abs().argmax(-1) == 3).all()
    assert torch.isin(ours.abs().argmax(-1), torch.tensor([0, 5])).all()
    assert ((lap * ours).sum(-1).abs() < 0.1).all()  # nearly orthogonal first directions
    swapped = ChannelContext(q_weight=ctx.q_weight, k_weight=ctx.k_weight, q_act=keys.flip(1),
                             k_act=keys, k_norm_mean=mean, k_norm_cov=cov)
    assert torch.equal(pca_basis(swapped, 3), pca_basis(ctx, 3))
    assert not torch.allclose(pca_qk_basis(swapped, 3), pca_qk_basis(ctx, 3), atol=1e-3)


def test_pca_needs_the_post_norm_key_covariance():
    ctx = full_context()  # q_act / k_act but no k_norm_cov (e.g. an older calib.pt)
    with pytest.raises(ValueError, match="k_norm_cov"):
        pca_basis(ctx, 4)
    assert tuple(pca_qk_basis(ctx, 4).shape) == (H, D_K, 4)
    with pytest.raises(ValueError, match=r"k_norm_cov must be \[3, 16, 16\]"):
        ChannelContext(q_weight=ctx.q_weight, k_weight=ctx.k_weight,
                       k_norm_cov=torch.zeros(H, D_K, D_K - 1))


def test_pca_is_not_a_selection():
    for method in ("pca", "pca_qk"):
        with pytest.raises(ValueError, match="pca_basis"):
            select_channels(method, full_context(), 4)
    with pytest.raises(ValueError, match="keep"):
        pca_qk_basis(full_context(), 0)


# ---- bad input ---------------------------------------------------------------------------

def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match=r"unknown channel method 'nope'.*strong_rrqr"):
        select_channels("nope", full_context(), 4)


@pytest.mark.parametrize("keep", [0, -1, D_K + 1, 2.0, True])
def test_bad_keep(keep):
    with pytest.raises(ValueError, match=r"keep must be an int in \[1, d_k=16\]"):
        select_channels("l1", full_context(), keep)


def test_context_shape_mismatch():
    with pytest.raises(ValueError, match="k_weight"):
        ChannelContext(q_weight=torch.ones(2, 4, 3), k_weight=torch.ones(2, 5, 3))
    with pytest.raises(ValueError, match="q_act"):
        ChannelContext(q_weight=torch.ones(2, 4, 3), k_weight=torch.ones(2, 4, 3),
                       q_act=torch.ones(2, 7, 5), k_act=torch.ones(2, 7, 4))
