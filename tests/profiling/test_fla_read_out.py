"""The CUDA single-pass read-out (capture.fla_states_pass) on CPU, with a PyTorch stand-in for fla's
`chunk_gated_delta_rule_fwd_h` that takes and returns fla's layouts (k [B, T, H, K], w [B, T, HV, K],
u [B, T, HV, V], log2-scaled chunk-local gate cumsum, h [B, NT, HV, K, V] or V-first).

What is checked: the wrapper's layout handling (grouped value heads, state_v_first, log2 gates,
T not a multiple of the chunk) and `states_in_chunks` against token-by-token prefix states of
lapr's recurrent reference, float32: max |diff| <= 1e-4 * max |state| (observed ~1e-6). The
wrapper must also hand fla's forward the original result untouched.
"""
import math

import pytest
import torch

from lapr.backends import delta_rule_recurrent
from lapr.profiling.capture import fla_states_pass

C = 16


def fake_state_pass(k, w, u, g=None, initial_state=None, output_final_state=False, chunk_size=C,
                    save_new_value=True, state_v_first=False, **unused):
    """fla's state pass in PyTorch: h = state at each chunk start, v_new = u - w @ h."""
    B, T, H, K = k.shape
    HV, V = u.shape[2], u.shape[3]
    kk = k.float().repeat_interleave(HV // H, dim=2)
    S = torch.zeros(B, HV, K, V) if initial_state is None else initial_state.float()
    hs, v_new = [], torch.empty(B, T, HV, V)
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        hs.append(S.transpose(-1, -2) if state_v_first else S)
        vn = u[:, s:e].float().transpose(1, 2) - w[:, s:e].float().transpose(1, 2) @ S   # [B, HV, c, V]
        v_new[:, s:e] = vn.transpose(1, 2)
        gc = torch.zeros(B, HV, e - s) if g is None else g[:, s:e].float().transpose(1, 2)
        kd = kk[:, s:e].transpose(1, 2) * torch.exp2(gc[..., -1:] - gc)[..., None]
        S = S * torch.exp2(gc[..., -1])[..., None, None] + kd.transpose(-1, -2) @ vn
    return torch.stack(hs, 1).to(k.dtype), v_new.to(u.dtype), S if output_final_state else None


def wy_inputs(k, v, beta, g, chunk_size):
    """fla's w and u (WY form per chunk) and its log2 chunk-local gate cumsum from natural-log g."""
    B, T, H, K = k.shape
    HV = v.shape[2]
    kk = k.repeat_interleave(HV // H, dim=2)
    w, u, g2 = torch.empty(B, T, HV, K), torch.empty_like(v), torch.empty(B, T, HV)
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        kc, vc, bc = kk[:, s:e].transpose(1, 2), v[:, s:e].transpose(1, 2), beta[:, s:e].transpose(1, 2)
        gam = g[:, s:e].transpose(1, 2).cumsum(-1)
        L = (gam[..., :, None] - gam[..., None, :]).tril().exp().tril()
        A = ((kc * bc[..., None]) @ kc.transpose(-1, -2) * L).tril(-1)
        Tm = torch.linalg.inv(A + torch.eye(e - s))
        u[:, s:e] = (Tm @ (vc * bc[..., None])).transpose(1, 2)
        w[:, s:e] = (Tm @ (kc * bc[..., None] * gam.exp()[..., None])).transpose(1, 2)
        g2[:, s:e] = (gam / math.log(2.0)).transpose(1, 2)
    return w, u, g2


def prefix_states(q, k, v, beta, g, positions):
    """Reference: the recurrent rule's final state after each prefix, [B, HV, P, K, V]."""
    out = []
    for p in positions:
        _, S = delta_rule_recurrent(q[:, :p + 1], k[:, :p + 1], v[:, :p + 1], beta[:, :p + 1], g[:, :p + 1],
                                    output_final_state=True)
        out.append(S)
    return torch.stack(out, 2)


@pytest.mark.parametrize("H,HV,T,gated,v_first", [
    (2, 2, 45, False, False),   # DeltaNet-like: no gate, T not a multiple of C
    (2, 4, 40, True, True),     # Gated DeltaNet-like: grouped value heads, decay, V-first states
])
def test_read_out_equals_prefix_states(H, HV, T, gated, v_first):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    B, K, V = 2, 8, 6
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    q = torch.randn(B, T, H, K, generator=gen)
    v = torch.randn(B, T, HV, V, generator=gen)
    beta = torch.rand(B, T, HV, generator=gen)
    g = -torch.rand(B, T, HV, generator=gen) * 0.3 if gated else torch.zeros(B, T, HV)
    w, u, g2 = wy_inputs(k, v, beta, g, C)
    positions = [0, 1, 5, C - 1, C, C + 3, T - 1]
    sink = []
    wrapped = fla_states_pass(fake_state_pass, positions, sink)
    out = wrapped(k, w, u, g=g2 if gated else None, chunk_size=C, state_v_first=v_first)
    direct = fake_state_pass(k, w, u, g=g2 if gated else None, chunk_size=C, state_v_first=v_first)
    assert all(torch.equal(a, b) for a, b in zip(out[:2], direct[:2]))  # the forward's result untouched
    (got,) = sink
    ref = prefix_states(q, k, v, beta, g, positions)
    assert got.shape == (B, HV, len(positions), K, V)
    scale = ref.abs().max().item()
    assert scale > 1e-2
    assert (got - ref).abs().max().item() <= 1e-4 * scale


def test_unsupported_inputs_fail_clearly():
    k = torch.randn(1, 8, 1, 4)
    wrapped = fla_states_pass(fake_state_pass, [3], [])
    with pytest.raises(NotImplementedError, match="packed"):
        wrapped(k, torch.randn(1, 8, 1, 4), torch.randn(1, 8, 1, 4), cu_seqlens=torch.tensor([0, 8]))
