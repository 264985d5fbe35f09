"""CPU backend attention math == fla's naive PyTorch references (fla/ops/*/naive.py).

Fresh random inputs per case (seeded); float32 throughout, tolerance 1e-4 absolute on outputs
of unit scale (chunked vs token-by-token summation order differs).
"""
import pytest
import torch
import torch.nn.functional as F
from fla.ops.delta_rule.naive import delta_rule_recurrence
from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

from lapr.backends.delta_rule import delta_rule, delta_rule_recurrent, gdn_gate

ATOL = 1e-4


def _inputs(seed, B=2, T=77, H=3, HV=None, K=48, V=40):
    g = torch.Generator().manual_seed(seed)
    HV = HV or H
    q = torch.randn(B, T, H, K, generator=g)
    k = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    v = torch.randn(B, T, HV, V, generator=g)
    beta = torch.rand(B, T, HV, generator=g)
    logg = -torch.rand(B, T, HV, generator=g) * 0.3
    h0 = torch.randn(B, HV, K, V, generator=g) * 0.1
    return q, k, v, beta, logg, h0


@pytest.mark.parametrize("K,chunk", [(64, 64), (48, 16), (37, 32), (16, 8)])
def test_delta_rule_matches_fla_naive(K, chunk):
    q, k, v, beta, _, h0 = _inputs(seed=K + chunk, K=K)
    t = lambda x: x.transpose(1, 2)
    ref_o, ref_s = delta_rule_recurrence(t(q), t(k), t(v), t(beta), initial_state=h0)
    o, s = delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, chunk_size=chunk)
    torch.testing.assert_close(o, t(ref_o), atol=ATOL, rtol=0)
    torch.testing.assert_close(s, ref_s, atol=ATOL, rtol=0)


@pytest.mark.parametrize("K,chunk", [(64, 64), (40, 16), (24, 32)])
def test_gated_delta_rule_matches_fla_naive(K, chunk):
    q, k, v, beta, logg, h0 = _inputs(seed=100 + K, K=K)
    ref_o, ref_s = naive_recurrent_gated_delta_rule(q, k, v, beta, logg, initial_state=h0, output_final_state=True)
    o, s = delta_rule(q, k, v, beta, logg, initial_state=h0, output_final_state=True, chunk_size=chunk)
    torch.testing.assert_close(o, ref_o, atol=ATOL, rtol=0)
    torch.testing.assert_close(s, ref_s, atol=ATOL, rtol=0)


def test_in_kernel_gate_beta_l2norm_gva_and_layout():
    """GDN's in-kernel transforms and grouped value heads equal doing them by hand."""
    q, k, v, beta_raw, a, h0 = _inputs(seed=7, H=2, HV=4, K=24, V=16)
    A_log, dt_bias = torch.randn(4), torch.randn(4)
    o, s = delta_rule(q, k, v, beta_raw, a, initial_state=h0.transpose(-1, -2), output_final_state=True,
                      use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias,
                      use_beta_sigmoid_in_kernel=True, state_v_first=True, chunk_size=16)
    rep = lambda x: F.normalize(x, dim=-1, eps=0).repeat_interleave(2, dim=2)
    logg = -A_log.exp() * F.softplus(a + dt_bias)
    ref_o, ref_s = naive_recurrent_gated_delta_rule(rep(q), rep(k), v, beta_raw.sigmoid(), logg,
                                                    initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, atol=ATOL, rtol=0)
    torch.testing.assert_close(s.transpose(-1, -2), ref_s, atol=ATOL, rtol=0)
    torch.testing.assert_close(gdn_gate(a, A_log, dt_bias), logg)


def test_states_at_equal_prefix_final_states():
    q, k, v, beta, logg, _ = _inputs(seed=3, T=50, K=32)
    positions = [0, 5, 15, 16, 31, 49]
    _, _, states = delta_rule(q, k, v, beta, logg, chunk_size=16, states_at=positions)
    for i, p in enumerate(positions):
        _, s = delta_rule_recurrent(q[:, : p + 1], k[:, : p + 1], v[:, : p + 1], beta[:, : p + 1],
                                    logg[:, : p + 1], output_final_state=True)
        torch.testing.assert_close(states[:, :, i], s, atol=ATOL, rtol=0)


def test_varlen_equals_separate_sequences():
    q, k, v, beta, logg, _ = _inputs(seed=11, B=1, T=60, K=16)
    cu = torch.tensor([0, 25, 60])
    o, s = delta_rule(q, k, v, beta, logg, output_final_state=True, cu_seqlens=cu, chunk_size=8)
    for i, (a, b) in enumerate([(0, 25), (25, 60)]):
        oi, si = delta_rule(q[:, a:b], k[:, a:b], v[:, a:b], beta[:, a:b], logg[:, a:b], output_final_state=True)
        torch.testing.assert_close(o[:, a:b], oi, atol=ATOL, rtol=0)
        torch.testing.assert_close(s[i : i + 1], si, atol=ATOL, rtol=0)


def test_backward_matches_recurrent_reference():
    q, k, v, beta, logg, h0 = _inputs(seed=5, T=40, K=20, V=12)
    grads = []
    for fn in (delta_rule, delta_rule_recurrent):
        xs = [x.clone().requires_grad_() for x in (q, k, v, beta, logg)]
        o, _ = fn(*xs[:4], xs[4], initial_state=h0, chunk_size=16)
        o.square().sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
