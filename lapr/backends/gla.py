"""Pure-PyTorch gated linear attention (GLA): the attention math of fla's GatedLinearAttention.

The recurrence (fla `ops/gla/naive.py`), per head, with a key-wise log decay g_t [K]:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t          (S [K, V])
    o_t = scale * q_t S_t

Chunked like lapr's delta rule (`delta_rule.py`): within a chunk the scores
A_ij = sum_c q_ic k_jc exp(G_ic - G_jc) (G = log decay cumulated from the chunk start) are formed
from the pairwise decay differences directly, [C, C, K] per chunk, never as exp(G) / exp(G) ratios,
so no term overflows however strong the decay; across chunks a Python loop carries the state.
It stands in for fla's `chunk_gla`, `fused_chunk_gla` and `fused_recurrent_gla` (same signatures:
fused_recurrent / chunk take the gate as `gk` / `g`) on a machine without CUDA, forward and
backward (autograd).

Conventions (as fla): q, k, g [B, T, H, K]; v [B, T, H, V]; state [B, H, K, V] (or [B, H, V, K]
with state_v_first). The output at t reads the state *after* token t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lapr.backends.delta_rule import _varlen, chunk_positions


def _gate(g, gk):
    gate = gk if gk is not None else g
    if gate is None:
        raise ValueError("GLA needs a key-wise gate (`g` or `gk`, [B, T, H, K])")
    return gate


def gla(q, k, v, g=None, gk=None, gv=None, scale=None, initial_state=None, output_final_state=False,
        state_v_first=False, cu_seqlens=None, chunk_size: int = 32, states_at=None, reverse=False, **unused):
    """Chunked GLA. Returns (o [B, T, H, V], final_state or None); with `states_at` (sorted 0-based
    token positions) a third value, the states after those tokens, [B, H, P, K, V] float32."""
    if gv is not None or reverse:
        raise NotImplementedError("lapr's GLA backend has no value gate (gv) and no reverse pass")
    gate = _gate(g, gk)
    if cu_seqlens is not None:
        if states_at is not None:
            raise NotImplementedError("states_at with packed sequences")
        return _varlen(lambda q, k, v, _b, gate, **kw: gla(q, k, v, g=gate, **kw), q, k, v, None, gate,
                       initial_state, output_final_state, cu_seqlens, scale=scale,
                       state_v_first=state_v_first, chunk_size=chunk_size)
    out_dtype = v.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, gate = (x.transpose(1, 2).float() for x in (q, k, v, gate))   # [B, H, T, .]
    B, H, T, K = k.shape
    Vd = v.shape[-1]
    C = max(1, min(chunk_size, T))
    pad = (-T) % C
    if pad:  # zero keys and zero log decay leave the state untouched on padded steps
        q, k, v, gate = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, gate))
    N = (T + pad) // C
    q, k, v, gate = (x.reshape(B, H, N, C, -1) for x in (q, k, v, gate))
    G = gate.cumsum(-2)                                             # [B, H, N, C, K]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    diff = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[..., None], float("-inf"))
    A = torch.einsum("bhnik,bhnjk,bhnijk->bhnij", q, k, diff.exp())  # intra-chunk scores, j <= i
    S = q.new_zeros(B, H, K, Vd)
    if initial_state is not None:
        S = initial_state.float()
        S = S.transpose(-1, -2) if state_v_first else S
    outs, starts = [], []
    for n in range(N):
        G_n = G[:, :, n]
        outs.append((q[:, :, n] * G_n.exp()) @ S + A[:, :, n] @ v[:, :, n])
        starts.append(S)
        k_dec = k[:, :, n] * (G_n[..., -1:, :] - G_n).exp()
        S = S * G_n[..., -1, :, None].exp() + k_dec.transpose(-1, -2) @ v[:, :, n]
    o = (scale * torch.stack(outs, 2)).reshape(B, H, N * C, Vd)[:, :, :T].transpose(1, 2).to(out_dtype)
    final = None
    if output_final_state:
        final = S.transpose(-1, -2).contiguous() if state_v_first else S
    if states_at is not None:
        states = gla_states(torch.stack(starts, 2), k.flatten(2, 3), v.flatten(2, 3), G.flatten(2, 3),
                            states_at, C)
        return o, final, states
    return o, final


def gla_states(h, k, v, G, positions, chunk_size: int) -> torch.Tensor:
    """States after the 0-based token `positions` from a chunked pass's by-products: h [B, H, N, K, V]
    the state at each chunk start, k [B, H, T', K], v [B, H, T', V], G [B, H, T', K] the key-wise log
    decay cumulated from each chunk's start. The state after token p (chunk n, offset i) is
        S_p = diag(exp(G_i)) h_n + sum_{j <= i} (k_j * exp(G_i - G_j))^T v_j.
    Returns [B, H, P, K, V] float32."""
    pos, n, i, j, rows = chunk_positions(positions, k.shape[2], chunk_size, h.device)
    if pos.numel() == 0:
        return h.new_zeros(*h.shape[:2], 0, *h.shape[3:], dtype=torch.float32)
    G_i = G[:, :, pos]                                               # [B, H, P, K]
    logw = G_i[:, :, :, None, :] - G[:, :, rows]                     # [B, H, P, C, K]
    logw = logw.masked_fill((j > i[:, None])[None, None, :, :, None], float("-inf"))
    kv = torch.einsum("bhpck,bhpcv->bhpkv", k[:, :, rows] * logw.exp(), v[:, :, rows])
    return G_i.exp()[..., None] * h[:, :, n] + kv


def gla_recurrent(q, k, v, g=None, gk=None, scale=None, initial_state=None, output_final_state=False,
                  state_v_first=False, **unused):
    """Token-by-token reference of the same recurrence (slow; for tests)."""
    gate = _gate(g, gk)
    out_dtype = v.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, gate = (x.transpose(1, 2).to(torch.promote_types(x.dtype, torch.float32)) for x in (q, k, v, gate))
    B, H, T, K = k.shape
    S = q.new_zeros(B, H, K, v.shape[-1])
    if initial_state is not None:
        S = initial_state.to(q.dtype)
        S = S.transpose(-1, -2) if state_v_first else S
    outs = []
    for t in range(T):
        S = S * gate[:, :, t, :, None].exp() + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(scale * (q[:, :, t, :, None] * S).sum(-2))
    o = torch.stack(outs, 2).transpose(1, 2).to(out_dtype)
    final = None
    if output_final_state:
        final = S.transpose(-1, -2).contiguous() if state_v_first else S
    return o, final


__all__ = ["gla", "gla_recurrent", "gla_states"]
