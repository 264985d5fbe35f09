"""Pure-PyTorch (gated) delta rule: the attention math of DeltaNet and Gated DeltaNet.

One chunked implementation serves both families (DeltaNet is the gated rule with log-decay 0)
and mirrors the signatures of fla's `chunk_*` / `fused_recurrent_*` entry points, so it can stand
in for the Triton kernels on a machine without CUDA. The math follows fla's `ops/*/naive.py`:
within a chunk the delta-rule updates are folded into a WY representation, solved with one
batched triangular solve instead of a row loop; across chunks a Python loop carries the state
(T / chunk_size iterations, batched over batch and heads).

Conventions (as fla): q, k [B, T, H, K]; v [B, T, HV, V] with HV a multiple of H (grouped value
heads: value head i reads q/k head i // (HV // H)); beta, g [B, T, HV]; state [B, HV, K, V]
(or [B, HV, V, K] with state_v_first). The output at t reads the state *after* token t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla's in-kernel normalisation: x / sqrt(sum x^2 + eps), in float32."""
    x = x.float()
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + eps)


def gdn_gate(g: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None) -> torch.Tensor:
    """Gated DeltaNet's log-decay, -exp(A_log) * softplus(g + dt_bias), as fla fuses it in-kernel."""
    g = g.float()
    if dt_bias is not None:
        g = g + dt_bias.float()
    return -A_log.float().exp() * F.softplus(g)


def _prepare(q, k, v, beta, g, scale, initial_state, use_qk_l2norm, state_v_first,
             use_gate_in_kernel=False, A_log=None, dt_bias=None,
             use_beta_sigmoid=False, allow_neg_eigval=False):
    """Bring inputs to float32 [B, HV, T, D] layout with every in-kernel transform applied."""
    H, HV = q.shape[2], v.shape[2]
    if HV % H:
        raise ValueError(f"value heads ({HV}) must be a multiple of q/k heads ({H})")
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k = q.float() * scale, k.float()
    if HV != H:
        q, k = q.repeat_interleave(HV // H, dim=2), k.repeat_interleave(HV // H, dim=2)
    if beta is None:
        beta = torch.ones_like(v[..., 0], dtype=torch.float32)
    beta = beta.float()
    if use_beta_sigmoid:
        beta = beta.sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    if g is None:
        g = torch.zeros_like(beta)
    elif use_gate_in_kernel:
        if A_log is None:
            raise ValueError("`A_log` must be provided when `use_gate_in_kernel=True`.")
        g = gdn_gate(g, A_log, dt_bias)
    q, k, v, beta, g = (x.transpose(1, 2).float() for x in (q, k, v, beta, g))
    S = None
    if initial_state is not None:
        S = initial_state.float()
        if state_v_first:
            S = S.transpose(-1, -2)
    return q, k, v.contiguous(), beta, g, S


def delta_rule(q, k, v, beta=None, g=None, scale=None, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, A_log=None, dt_bias=None,
               use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False, state_v_first=False,
               cu_seqlens=None, chunk_size: int = 64, states_at=None, **unused):
    """Chunked gated delta rule. Returns (o [B, T, HV, V], final_state or None).

    `states_at`: optional sorted 0-based token positions; then a third value is returned, the
    states after those tokens, [B, HV, P, K, V] in float32 (used by rank profiling).
    """
    if cu_seqlens is not None:
        return _varlen(delta_rule, q, k, v, beta, g, initial_state, output_final_state, cu_seqlens,
                       scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                       use_gate_in_kernel=use_gate_in_kernel, A_log=A_log, dt_bias=dt_bias,
                       use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                       allow_neg_eigval=allow_neg_eigval, state_v_first=state_v_first,
                       chunk_size=chunk_size)
    out_dtype = v.dtype
    q, k, v, beta, g, S = _prepare(q, k, v, beta, g, scale, initial_state, use_qk_l2norm_in_kernel,
                                   state_v_first, use_gate_in_kernel, A_log, dt_bias,
                                   use_beta_sigmoid_in_kernel, allow_neg_eigval)
    B, HV, T, K = k.shape
    Vd = v.shape[-1]
    C = max(1, min(chunk_size, T))
    pad = (-T) % C
    if pad:  # zero keys/betas/decays leave the state untouched on padded steps
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    N = (T + pad) // C
    q, k, v = (x.reshape(B, HV, N, C, -1) for x in (q, k, v))
    beta, g = beta.reshape(B, HV, N, C), g.reshape(B, HV, N, C)

    gamma = g.cumsum(-1)                                            # log decay from chunk start
    decay = (gamma[..., :, None] - gamma[..., None, :]).tril()      # [.., C, C], i >= j
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    L = torch.where(incl, decay.exp(), torch.zeros((), device=q.device))
    k_beta = k * beta[..., None]
    # WY form: T_mat = (I + strict_tril(diag(beta) K K^T * L))^-1
    A = (k_beta @ k.transpose(-1, -2) * L).tril(-1)
    eye = torch.eye(C, device=q.device)
    T_mat = torch.linalg.solve_triangular(A + eye, eye.expand_as(A), upper=False, unitriangular=True)
    u = T_mat @ (v * beta[..., None])                               # "new values" before state term
    w = T_mat @ (k_beta * gamma.exp()[..., None])
    qk = q @ k.transpose(-1, -2) * L                                # intra-chunk scores, causal incl. diag

    if S is None:
        S = q.new_zeros(B, HV, K, Vd)
    starts, v_news, outs = [], [], []                               # per chunk, for states_at
    for n in range(N):
        v_new = u[:, :, n] - w[:, :, n] @ S
        outs.append((q[:, :, n] * gamma[:, :, n, :, None].exp()) @ S + qk[:, :, n] @ v_new)
        if states_at is not None:
            starts.append(S)
            v_news.append(v_new)
        g_n = gamma[:, :, n]
        k_dec = k[:, :, n] * (g_n[..., -1:] - g_n).exp()[..., None]
        S = S * g_n[..., -1, None, None].exp() + k_dec.transpose(-1, -2) @ v_new
    o = torch.stack(outs, 2).reshape(B, HV, N * C, Vd)[:, :, :T].transpose(1, 2).to(out_dtype)
    final = None
    if output_final_state:
        final = S.transpose(-1, -2).contiguous() if state_v_first else S
    if states_at is not None:
        states = states_in_chunks(torch.stack(starts, 2), k.flatten(2, 3), torch.cat(v_news, 2),
                                  gamma.flatten(2, 3), states_at, C)
        return o, final, states
    return o, final


def chunk_positions(positions, T: int, chunk_size: int, device):
    """Token positions p in [0, T) split by chunk: (p, chunk n, offset i, offsets j = 0..C-1, and
    rows [P, C], the tokens of p's chunk, clamped to T - 1); for reading states out of a chunked pass."""
    pos = torch.as_tensor(positions, dtype=torch.long, device=device)
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= T):
        raise ValueError(f"positions must lie in [0, {T - 1}], got {pos.tolist()}")
    n, i = pos // chunk_size, pos % chunk_size
    j = torch.arange(chunk_size, device=device)
    return pos, n, i, j, (n[:, None] * chunk_size + j).clamp(max=T - 1)


def states_in_chunks(h: torch.Tensor, k: torch.Tensor, v_new: torch.Tensor, g_cum: torch.Tensor,
                     positions, chunk_size: int) -> torch.Tensor:
    """States after the 0-based token `positions`, read out of a chunked pass's by-products.

    h [B, HV, N, K, V]: the state at the start of each chunk; k [B, HV, T, K] (normalised keys,
    value-head layout); v_new [B, HV, T, V]: the WY "new values" u - w @ h of every token; g_cum
    [B, HV, T]: log decay cumulated from each chunk's start (natural log; zeros without a gate).
    The state after token p (chunk n, offset i) is
        S_p = exp(g_i) h_n + sum_{j <= i} exp(g_i - g_j) k_j^T v_new_j,
    the chunk kernels' own state update stopped at i, so any chunked implementation that exposes
    h and v_new (lapr's loop above, fla's `chunk_gated_delta_rule_fwd_h`) yields exact states at
    near no cost. Returns [B, HV, P, K, V] float32.
    """
    pos, n, i, j, rows = chunk_positions(positions, k.shape[2], chunk_size, h.device)
    if pos.numel() == 0:
        return h.new_zeros(*h.shape[:2], 0, *h.shape[3:], dtype=torch.float32)
    g_cum = g_cum.float()
    g_i = g_cum[..., pos]                                           # [B, HV, P]
    logw = g_i[..., None] - g_cum[..., rows]                        # [B, HV, P, C]
    logw = logw.masked_fill(j > i[:, None], float("-inf"))          # tokens after p do not count
    kv = torch.einsum("bhpc,bhpck,bhpcv->bhpkv", logw.exp(), k.float()[:, :, rows], v_new.float()[:, :, rows])
    return g_i.exp()[..., None, None] * h.float()[:, :, n] + kv


def delta_rule_recurrent(q, k, v, beta=None, g=None, scale=None, initial_state=None,
                         output_final_state=False, use_qk_l2norm_in_kernel=False,
                         use_gate_in_kernel=False, A_log=None, dt_bias=None,
                         use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                         state_v_first=False, cu_seqlens=None, **unused):
    """Token-by-token reference of the same recurrence (slow; for tests and tiny decode steps)."""
    if cu_seqlens is not None:
        return _varlen(delta_rule_recurrent, q, k, v, beta, g, initial_state, output_final_state,
                       cu_seqlens, scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                       use_gate_in_kernel=use_gate_in_kernel, A_log=A_log, dt_bias=dt_bias,
                       use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
                       allow_neg_eigval=allow_neg_eigval, state_v_first=state_v_first)
    out_dtype = v.dtype
    q, k, v, beta, g, S = _prepare(q, k, v, beta, g, scale, initial_state, use_qk_l2norm_in_kernel,
                                   state_v_first, use_gate_in_kernel, A_log, dt_bias,
                                   use_beta_sigmoid_in_kernel, allow_neg_eigval)
    B, HV, T, K = k.shape
    if S is None:
        S = q.new_zeros(B, HV, K, v.shape[-1])
    outs = []
    for t in range(T):
        S = S * g[:, :, t, None, None].exp()
        kt = k[:, :, t]
        delta = beta[:, :, t, None] * (v[:, :, t] - (S * kt[..., None]).sum(-2))
        S = S + kt[..., None] * delta[..., None, :]
        outs.append((q[:, :, t, :, None] * S).sum(-2))
    o = torch.stack(outs, 2).transpose(1, 2).to(out_dtype)
    final = None
    if output_final_state:
        final = S.transpose(-1, -2).contiguous() if state_v_first else S
    return o, final


def _varlen(fn, q, k, v, beta, g, initial_state, output_final_state, cu_seqlens, **kw):
    """Packed sequences (batch 1, boundaries in cu_seqlens): run each sequence on its own."""
    if q.shape[0] != 1:
        raise ValueError("cu_seqlens requires batch size 1 (packed sequences)")
    bounds = cu_seqlens.tolist()
    outs, finals = [], []
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        o, ht = fn(q[:, s:e], k[:, s:e], v[:, s:e],
                   None if beta is None else beta[:, s:e], None if g is None else g[:, s:e],
                   initial_state=h0, output_final_state=output_final_state, **kw)
        outs.append(o)
        finals.append(ht)
    final = torch.cat(finals, 0) if output_final_state else None
    return torch.cat(outs, 1), final
