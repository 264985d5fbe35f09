"""lapr's chunked GLA (lapr.backends.gla) == a straightforward float64 recurrence, and fla's naive one.

fla's Triton GLA kernels do not run here: under TRITON_INTERPRET=1 fla 0.6.0's kernels stop at
import-time driver selection ("0 active drivers") on this CPU-only machine, so the comparison with
them is left to a GPU run (the op benchmark's 'fla' impl calls them the way the layer does).
"""
import pytest
import torch
import torch.nn.functional as F
from fla.ops.gla.naive import naive_recurrent_gla

from lapr.backends.gla import gla, gla_recurrent

ATOL = 1e-4


def _inputs(seed, B=2, T=77, H=3, K=12, V=10, strength=3.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g)
    k = torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    # log decays from ~0 to ~-5 per step: strong enough that exp(G) ratios would overflow in a chunk
    gk = F.logsigmoid(torch.randn(B, T, H, K, generator=g) * strength)
    h0 = torch.randn(B, H, K, V, generator=g) * 0.1
    return q, k, v, gk, h0


def _f64(*xs):
    return [x.double() for x in xs]


@pytest.mark.parametrize("K,chunk", [(12, 32), (16, 16), (7, 64), (8, 1)])
@pytest.mark.parametrize("v_first", [False, True])
def test_chunked_equals_float64_recurrence(K, chunk, v_first):
    q, k, v, gk, h0 = _inputs(seed=K + chunk, K=K)
    init = h0.transpose(-1, -2).contiguous() if v_first else h0
    ref_o, ref_s = gla_recurrent(*_f64(q, k, v), gk=gk.double(), initial_state=init.double(),
                                 output_final_state=True, state_v_first=v_first)
    o, s = gla(q, k, v, g=gk, initial_state=init, output_final_state=True, state_v_first=v_first,
               chunk_size=chunk)
    assert o.dtype == torch.float32 and s.shape == init.shape
    torch.testing.assert_close(o.double(), ref_o, atol=ATOL, rtol=0)
    torch.testing.assert_close(s.double(), ref_s, atol=ATOL, rtol=0)


def test_recurrence_is_fla_naive():
    q, k, v, gk, h0 = _inputs(seed=1)
    ref_o, ref_s = naive_recurrent_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    o, s = gla_recurrent(q, k, v, gk=gk, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=0)
    torch.testing.assert_close(s, ref_s, atol=1e-5, rtol=0)


def test_states_at_positions():
    q, k, v, gk, h0 = _inputs(seed=2, T=50)
    want = [0, 15, 16, 31, 49]
    _, final, states = gla(q, k, v, gk=gk, initial_state=h0, output_final_state=True, chunk_size=16,
                           states_at=want)
    assert states.shape == (2, 3, len(want), 12, 10)
    for i, p in enumerate(want):
        _, ref = gla_recurrent(*_f64(q[:, :p + 1], k[:, :p + 1], v[:, :p + 1]), gk=gk[:, :p + 1].double(),
                               initial_state=h0.double(), output_final_state=True)
        torch.testing.assert_close(states[:, :, i].double(), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(states[:, :, -1], final)


def test_packed_sequences_run_one_by_one():
    q, k, v, gk, _ = _inputs(seed=3, B=1, T=40)
    cu = torch.tensor([0, 13, 40])
    o, s = gla(q, k, v, gk=gk, cu_seqlens=cu, output_final_state=True)
    for i, (a, b) in enumerate([(0, 13), (13, 40)]):
        ref_o, ref_s = gla_recurrent(q[:, a:b], k[:, a:b], v[:, a:b], gk=gk[:, a:b], output_final_state=True)
        torch.testing.assert_close(o[:, a:b], ref_o, atol=ATOL, rtol=0)
        torch.testing.assert_close(s[i:i + 1], ref_s, atol=ATOL, rtol=0)


def test_gradients_match_the_recurrence():
    q, k, v, gk, h0 = _inputs(seed=4, B=1, T=21, H=2, K=6, V=5)
    leaves = [x.double().requires_grad_() for x in (q, k, v, gk)]
    ref = [x.detach().clone().requires_grad_() for x in leaves]
    o, _ = gla(*leaves[:3], gk=leaves[3], chunk_size=8)
    o_ref, _ = gla_recurrent(*ref[:3], gk=ref[3])
    w = torch.randn(o.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (o * w).sum().backward()
    (o_ref * w).sum().backward()
    for a, b in zip(leaves, ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=0)


def test_model_cached_decoding_matches_full_forward():
    """fla's GLA layer on lapr's backend: the chunked prefill (mode 'chunk', T > 64) and the
    fused-recurrent decode steps (T <= 64) continue one another."""
    from lapr.models import build_model

    model = build_model(dict(family="gla", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=8,
                             head_v_dim=16, vocab_size=64, mlp_ratio=2), seed=0).eval()
    x = torch.randint(0, 64, (1, 72), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :68], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(68, 72):
            out = model(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
