"""Rank metrics against closed forms on states S = U diag(sigma) V^T of known spectrum.

U, V are fresh random orthonormal frames (QR of Gaussians, fixed seeds). Tolerances: float64
states 1e-9 relative; float32 states 1e-4 relative (SVD error ~1e-6 * sigma_1, well inside; entropy rank 1e-3, see
below);
bf16 states 3e-2 relative (bf16 keeps ~3 significant digits).
"""

import math

import numpy as np
import pytest
import torch

from lapr.profiling.metrics import (
    RANK_COLUMNS, SPECTRUM_COLUMNS, entropy_rank, rank_table, rank_utilisation, singular_values,
    spectrum_table, stable_rank, state_norm, threshold_rank,
)

SHAPES = [(48, 64), (64, 48), (40, 128), (64, 64), (7, 5)]


def orthonormal(n: int, r: int, gen: torch.Generator, batch=()) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(*batch, n, r, generator=gen, dtype=torch.float64))
    return q


def with_spectrum(sigma: torch.Tensor, d_k: int, d_v: int, seed: int) -> torch.Tensor:
    """[..., r] descending sigma -> [..., d_k, d_v] state with exactly those nonzero singular values."""
    gen = torch.Generator().manual_seed(seed)
    batch, r = sigma.shape[:-1], sigma.shape[-1]
    u, v = orthonormal(d_k, r, gen, batch), orthonormal(d_v, r, gen, batch)
    return u @ torch.diag_embed(sigma.double()) @ v.transpose(-1, -2)


# closed forms in numpy float64, written independently of the torch code
def np_stable(s):
    return 0.0 if s.max() == 0 else float((s**2).sum() / s.max() ** 2)


def np_entropy(s):
    if s.sum() == 0:
        return 0.0
    p = s[s > 0] / s.sum()
    return math.exp(-(p * np.log(p)).sum())


def random_spectrum(r: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.sort(torch.rand(r, generator=gen, dtype=torch.float64) * 3 + 0.1, descending=True).values


@pytest.mark.parametrize("d_k,d_v", SHAPES)
@pytest.mark.parametrize("rank", [1, 3, 5])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_closed_forms(d_k, d_v, rank, dtype, rtol):
    sigma = random_spectrum(rank, seed=rank * 1000 + d_k)
    state = with_spectrum(sigma, d_k, d_v, seed=d_k * d_v + rank).to(dtype)
    sv = singular_values(state)
    n = min(d_k, d_v)
    assert sv.shape == (n,) and sv.dtype == dtype
    assert torch.all(sv[:-1] >= sv[1:])  # descending
    s = sigma.numpy()
    assert threshold_rank(sv).item() == rank
    assert stable_rank(sv).item() == pytest.approx(np_stable(s), rel=rtol)
    assert rank_utilisation(sv, d_k, d_v).item() == pytest.approx(np_stable(s) / n, rel=rtol)
    # entropy sees every float32 noise singular value (~1e-7 * sigma_1 each, -p log p ~ 1e-6 each,
    # up to ~60 of them: measured <= 5e-5): float32 entropy tolerance 1e-3 instead of 1e-4
    assert entropy_rank(sv).item() == pytest.approx(np_entropy(s), rel=max(rtol, 1e-3 if dtype == torch.float32 else 0))
    assert state_norm(sv).item() == pytest.approx(float(np.sqrt((s**2).sum())), rel=rtol)


@pytest.mark.parametrize("d_k,d_v", [(48, 64), (40, 128)])
@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_threshold_just_below_and_above(d_k, d_v, eps):
    # sigma_1 = 2; two values at eps*sigma_1*(1 +- 10%): only the one above counts
    top = 2.0
    sigma = torch.tensor([top, 1.0, 0.5, eps * top * 1.1, eps * top * 0.9, eps * top * 0.1], dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        sv = singular_values(with_spectrum(sigma, d_k, d_v, seed=7).to(dtype))
        assert threshold_rank(sv, eps).item() == 4


def test_threshold_is_strict_on_exact_values():
    sv = torch.tensor([1.0, 0.5, 1e-4, 0.0])
    assert threshold_rank(sv, eps=1e-4).item() == 2  # sigma equal to eps*sigma_1 is not counted
    assert threshold_rank(sv, eps=0.5 - 1e-6).item() == 2
    assert threshold_rank(sv, eps=0.5).item() == 1


def test_batched_any_leading_dims():
    d_k, d_v, rank = 40, 128, 6
    shape = (2, 3, 4)
    gen = torch.Generator().manual_seed(3)
    sigma = torch.sort(torch.rand(*shape, rank, generator=gen, dtype=torch.float64) + 0.05, descending=True).values
    sigma[0, 1, 2, 3:] = 0  # one state of rank 3 inside the batch
    state = with_spectrum(sigma, d_k, d_v, seed=11).float()
    sv = singular_values(state)
    assert sv.shape == (*shape, min(d_k, d_v))
    tr, sr, er = threshold_rank(sv), stable_rank(sv), entropy_rank(sv)
    assert tr.shape == sr.shape == er.shape == shape
    for idx in np.ndindex(*shape):
        s = sigma[idx].numpy()
        assert tr[idx].item() == (s > 1e-4 * s[0]).sum()
        assert sr[idx].item() == pytest.approx(np_stable(s), rel=1e-4)
        assert er[idx].item() == pytest.approx(np_entropy(s), rel=1e-4)
    assert tr[0, 1, 2].item() == 3


@pytest.mark.parametrize("d_k,d_v", [(48, 64), (5, 5)])
def test_zero_state_gives_zero_not_nan(d_k, d_v):
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        sv = singular_values(torch.zeros(2, d_k, d_v, dtype=dtype))
        for metric in (threshold_rank(sv), stable_rank(sv), rank_utilisation(sv, d_k, d_v),
                       entropy_rank(sv), state_norm(sv)):
            assert not torch.isnan(metric.float()).any()
            assert torch.all(metric == 0)


def test_rank_one_and_identity():
    gen = torch.Generator().manual_seed(5)
    k, v = torch.randn(48, generator=gen), torch.randn(64, generator=gen)
    sv = singular_values(torch.outer(k, v))
    assert threshold_rank(sv).item() == 1
    assert stable_rank(sv).item() == pytest.approx(1.0, rel=1e-5)
    assert entropy_rank(sv).item() == pytest.approx(1.0, rel=1e-4)
    assert state_norm(sv).item() == pytest.approx((k.norm() * v.norm()).item(), rel=1e-5)
    for n, m in [(64, 64), (48, 64), (40, 128)]:
        sv = singular_values(torch.eye(n, m))
        r = min(n, m)
        assert threshold_rank(sv).item() == r
        assert stable_rank(sv).item() == pytest.approx(r, rel=1e-6)
        assert entropy_rank(sv).item() == pytest.approx(r, rel=1e-5)
        assert rank_utilisation(sv, n, m).item() == pytest.approx(1.0, rel=1e-6)


def test_bf16_input():
    d_k, d_v = 48, 64
    sigma = torch.tensor([2.0, 1.5, 1.0, 0.6, 0.3], dtype=torch.float64)
    state = with_spectrum(sigma, d_k, d_v, seed=13).to(torch.bfloat16)
    sv = singular_values(state)
    assert sv.dtype == torch.float32
    torch.testing.assert_close(sv, torch.linalg.svdvals(state.float()))  # upcast, then exact SVD
    # bf16 rounding leaves noise singular values ~1e-2 * sigma_1: count with eps = 5e-2
    assert threshold_rank(sv, eps=5e-2).item() == 5
    s = sigma.numpy()
    assert stable_rank(sv).item() == pytest.approx(np_stable(s), rel=3e-2)


def linear_attention_states(n_pos, n_layers, n_heads, d_k, d_v, seed):
    """S_t = sum_{i<=t} k_i v_i^T: rank min(t, d_k, d_v) for generic keys/values. -> [T, L, H, d_k, d_v]."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(n_pos, n_layers, n_heads, d_k, generator=gen, dtype=torch.float64)
    v = torch.randn(n_pos, n_layers, n_heads, d_v, generator=gen, dtype=torch.float64)
    return torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=0)


def test_rank_table_matches_metrics_and_bound():
    n_pos, n_layers, n_heads, d_k, d_v = 12, 2, 3, 5, 8
    states = linear_attention_states(n_pos, n_layers, n_heads, d_k, d_v, seed=17)
    states[:, 1, 2] = 0  # a dead head
    positions = list(range(1, n_pos + 1))
    table = rank_table(states, positions)
    assert list(table.columns) == RANK_COLUMNS
    assert len(table) == n_pos * n_layers * n_heads
    assert not table.isna().any().any()
    assert (table["bound"] == np.minimum(table["position"], min(d_k, d_v))).all()
    live = table[~((table["layer"] == 1) & (table["head"] == 2))]
    assert (live["threshold_rank"] == live["bound"]).all()  # generic sums reach the bound
    dead = table[(table["layer"] == 1) & (table["head"] == 2)]
    assert (dead[["threshold_rank", "stable_rank", "entropy_rank", "frobenius"]] == 0).all().all()
    row = table[(table["position"] == 4) & (table["layer"] == 1) & (table["head"] == 0)].iloc[0]
    sv = singular_values(states[3, 1, 0])
    assert row["stable_rank"] == pytest.approx(stable_rank(sv).item(), rel=1e-12)
    assert row["entropy_rank"] == pytest.approx(entropy_rank(sv).item(), rel=1e-12)
    assert row["utilisation"] == pytest.approx(stable_rank(sv).item() / 5, rel=1e-12)
    assert row["spectral"] == pytest.approx(sv[0].item(), rel=1e-12)
    assert row["frobenius"] == pytest.approx(states[3, 1, 0].norm().item(), rel=1e-12)


def test_rank_table_dict_keeps_layer_ids_and_shapes():
    a = linear_attention_states(3, 1, 2, 48, 64, seed=1)[:, 0].float()
    b = linear_attention_states(3, 1, 4, 40, 128, seed=2)[:, 0].float()
    table = rank_table({7: a, 3: b}, torch.tensor([1, 50, 100]), eps=1e-4)
    assert len(table) == 3 * 2 + 3 * 4
    assert list(pd_unique(table["layer"])) == [7, 3]  # input order, not sorted ids
    assert set(table.loc[table["layer"] == 7, "head"]) == {0, 1}
    expect = {(7, 1): 1, (7, 50): 48, (7, 100): 48, (3, 1): 1, (3, 50): 40, (3, 100): 40}
    for (layer, pos), bound in expect.items():
        rows = table[(table["layer"] == layer) & (table["position"] == pos)]
        assert (rows["bound"] == bound).all()
    # 3 tokens absorbed at most: rank <= 3 whatever the position label
    assert (table["threshold_rank"] <= 3).all()
    with pytest.raises(ValueError):
        rank_table({0: a}, [1, 2])  # wrong number of positions


def pd_unique(series):
    return list(dict.fromkeys(series.tolist()))


def test_spectrum_table():
    n_pos, d_k, d_v = 6, 40, 128
    states = linear_attention_states(n_pos, 2, 3, d_k, d_v, seed=23).float()
    states[:, 0, 1] = 0
    positions = [1, 2, 4, 8, 16, 32]
    table = spectrum_table(states, positions, keep=[2, 32])
    assert list(table.columns) == SPECTRUM_COLUMNS
    assert len(table) == 2 * 2 * 3 * d_k
    assert set(table["position"]) == {2, 32}
    first = table[table["index"] == 0]
    live = first[~((first["layer"] == 0) & (first["head"] == 1))]
    assert np.allclose(live["sigma_rel"], 1.0)
    dead = table[(table["layer"] == 0) & (table["head"] == 1)]
    assert (dead[["sigma", "sigma_rel"]] == 0).all().all()
    one = table[(table["position"] == 32) & (table["layer"] == 1) & (table["head"] == 2)]
    sv = singular_values(states[5, 1, 2])
    assert np.allclose(one["sigma"], sv.numpy(), rtol=1e-6)
    assert np.allclose(one["sigma_rel"], (sv / sv[0]).numpy(), rtol=1e-6)
    assert (np.diff(one["sigma"].to_numpy()) <= 0).all()
    # int keep: evenly spaced incl. first and last; n_sigma truncates
    top = spectrum_table(states, positions, keep=3, n_sigma=4)
    assert sorted(set(top["position"])) == [1, 4, 32]  # indices linspace(0, 5, 3) = 0, 2.5 -> 2, 5
    assert set(top["index"]) == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        spectrum_table(states, positions, keep=[3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_like_cpu():
    states = linear_attention_states(4, 2, 3, 48, 64, seed=29).float()
    sv = singular_values(states.cuda())
    assert sv.is_cuda and stable_rank(sv).is_cuda
    cpu, gpu = rank_table(states, [1, 2, 3, 4]), rank_table(states.cuda(), [1, 2, 3, 4])
    assert (cpu["threshold_rank"] == gpu["threshold_rank"]).all()
    assert np.allclose(cpu["stable_rank"], gpu["stable_rank"], rtol=1e-4)
