"""PyTorch stand-in for fla's `chunk_bwd_dqkwg`, the one Gated DeltaNet backward kernel that fla
0.6.0 refuses on Hopper GPUs with 3.4 <= Triton < 3.7.1.

Why this exists: Triton 3.4-3.7.0 miscompiles the *gated* `chunk_bwd_kernel_dqkwg` on Hopper
(fla issue #640), so fla raises a RuntimeError there instead of returning wrong gradients. Every
other GDN kernel (forward, `chunk_gated_delta_rule_bwd_dhu`, `chunk_bwd_dv_local`,
`prepare_wy_repr_bwd`, the cumsums) is fine, so `lapr.backends.for_training` patches this one
function into fla's gated backward instead of swapping the whole op for lapr's chunked PyTorch
delta rule (which made GDN training 3.7x slower than DeltaNet on an H200).

What it costs: a handful of chunk-batched matmuls over [B, NT, HV, BT, .] views in float32 (or
float64 for float64 inputs), plus transient float32 copies of h and dh ([B, NT, HV, K, V] each,
2x the bf16 states fla already holds). No Python loop over chunks; varlen inputs (`cu_seqlens`)
loop over sequences. On an H200 (bf16, B 16, T 4096, H 4, K = V 128) it took ~5 ms of the 8.1 ms
of fla's GDN forward+backward, against 112 ms for lapr's whole PyTorch op.

Transcription of `chunk_bwd_kernel_dqkwg` and its launcher `chunk_bwd_dqkwg` in fla 0.6.0,
fla/ops/common/chunk_o.py. Conventions, as there:
  q, k [B, T, H, K]; v (= v_new of the delta rule), do, dv [B, T, HV, V]; w [B, T, HV, K];
  g [B, T, HV]: the chunk-local cumulative log-decay in log2 units (fla's GDN forward builds it
  with `chunk_local_cumsum(g, scale=RCP_LN2)`), used through exp2; g_gamma [HV]: a constant
  per-head log2 decay (g = g_gamma * (i + 1) inside a chunk);
  h[:, c] the state *before* chunk c and dh[:, c] the gradient w.r.t. the state *after* chunk c,
  both [B, NT, HV, K, V] ([B, NT, HV, V, K] with state_v_first; [NT_total, HV, ...] for varlen).
Returns (dq, dk, dw, dg): dq/dk [B, T, H, K] in q/k's dtype (value-head groups summed back to
their q/k head), dw = -(dv @ h^T) in w's dtype (None without w), dg [B, T, HV] float32 (None
without g) -- the gradient w.r.t. the in-chunk cumulative gate *before* fla's reverse cumsum, in
fla's scaling: d(exp2(x))/dx without the ln 2 factor, i.e. the gradient w.r.t. g * ln 2 (the
natural-log cumulative gate).
"""
from __future__ import annotations

import torch


def _prepare_chunk_counts(cu_seqlens: torch.Tensor, BT: int) -> list[tuple[int, int, int]]:
    """(bos, eos, first global chunk) of every sequence, in fla's chunk order."""
    bounds = cu_seqlens.tolist()
    out, c = [], 0
    for bos, eos in zip(bounds[:-1], bounds[1:]):
        out.append((bos, eos, c))
        c += -(-(eos - bos) // BT)
    return out


def chunk_bwd_dqkwg(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    do: torch.Tensor,
    h: torch.Tensor,
    dh: torch.Tensor,
    w: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    dv: torch.Tensor | None = None,
    scale: float | None = None,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    chunk_size: int = 64,
    chunk_indices: torch.LongTensor | None = None,
):
    """Drop-in for fla.ops.common.chunk_o.chunk_bwd_dqkwg (same signature, layouts and outputs)."""
    if scale is None:
        scale = k.shape[-1] ** -0.5
    use_dw = w is not None and dv is not None
    if cu_seqlens is None:
        dq, dk, dw, dg = _dqkwg(q, k, v, do, h, dh, dv if use_dw else None, g, g_gamma, scale,
                                state_v_first, chunk_size)
    else:  # varlen: B == 1, h/dh hold every sequence's chunks back to back
        HV = v.shape[2]
        hf = h.reshape(-1, HV, *h.shape[-2:])
        dhf = dh.reshape(-1, HV, *dh.shape[-2:])
        parts = []
        for bos, eos, c0 in _prepare_chunk_counts(cu_seqlens, chunk_size):
            nt = -(-(eos - bos) // chunk_size)
            sl = slice(bos, eos)
            parts.append(_dqkwg(
                q[:, sl], k[:, sl], v[:, sl], do[:, sl], hf[None, c0:c0 + nt], dhf[None, c0:c0 + nt],
                dv[:, sl] if use_dw else None, None if g is None else g[:, sl], g_gamma, scale,
                state_v_first, chunk_size))
        dq, dk = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
        dw = torch.cat([p[2] for p in parts], 1) if use_dw else None
        dg = torch.cat([p[3] for p in parts], 1) if g is not None else None
    dq = dq.to(q.dtype, memory_format=torch.contiguous_format)
    dk = dk.to(k.dtype, memory_format=torch.contiguous_format)
    if w is not None:
        dw = dw.to(w.dtype, memory_format=torch.contiguous_format) if use_dw else torch.zeros_like(w)
    else:
        dw = None
    return dq, dk, dw, dg


def _chunks(x: torch.Tensor, NT: int, BT: int, acc: torch.dtype) -> torch.Tensor:
    """[B, T, N, D] -> zero-padded [B, NT, N, BT, D] in the accumulation dtype."""
    B, T = x.shape[:2]
    x = x.to(acc)
    if NT * BT != T:
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, NT * BT - T))
    return x.view(B, NT, BT, *x.shape[2:]).transpose(2, 3)


def _dqkwg(q, k, v, do, h, dh, dv, g, g_gamma, scale, state_v_first, BT):
    B, T, H, K = q.shape
    HV = v.shape[2]
    NT = -(-T // BT)
    acc = torch.promote_types(q.dtype, torch.float32)  # float32 (float64 for float64 inputs)
    dev = q.device

    # state [B, NT, HV, K, V] (state after/before: see the module docstring)
    h, dh = h.to(acc), dh.to(acc)
    if state_v_first:
        h, dh = h.transpose(-1, -2), dh.transpose(-1, -2)
    # q/k heads serve HV // H value heads each; work per value head as the kernel does
    if HV != H:
        q = q.repeat_interleave(HV // H, dim=2)
        k = k.repeat_interleave(HV // H, dim=2)
    qc, kc = _chunks(q, NT, BT, acc), _chunks(k, NT, BT, acc)    # [B, NT, HV, BT, K]
    vc, doc = _chunks(v, NT, BT, acc), _chunks(do, NT, BT, acc)  # [B, NT, HV, BT, V]

    ht = h.transpose(-1, -2)                                     # [B, NT, HV, V, K]
    ds = doc @ vc.transpose(-1, -2)                              # [B, NT, HV, BT, BT]
    dq = doc @ ht                                                # do @ h^T
    dk = vc @ dh.transpose(-1, -2)                               # v @ dh^T
    dw = None
    if dv is not None:
        dw = -(_chunks(dv, NT, BT, acc) @ ht)
    causal = torch.ones(BT, BT, dtype=torch.bool, device=dev).tril()
    rows = torch.arange(NT, device=dev)
    n_valid = (T - rows * BT).clamp(max=BT)                      # rows of each chunk inside T

    dg = None
    if g is not None or g_gamma is not None:
        if g is not None:
            gc = _chunks(g[..., None], NT, BT, acc)[..., 0]     # [B, NT, HV, BT]
            g_last = gc.gather(-1, (n_valid - 1).view(1, NT, 1, 1).expand(B, NT, HV, 1))[..., 0]
        else:
            gamma = g_gamma.to(acc).view(1, 1, HV, 1)
            gc = gamma * torch.arange(1, BT + 1, device=dev, dtype=acc)
            g_last = gamma[..., 0] * n_valid.to(acc).view(1, NT, 1)
            gc, g_last = gc.expand(B, NT, HV, BT), g_last.expand(B, NT, HV)
        in_t = torch.arange(BT, device=dev).view(1, BT) < n_valid.view(NT, 1)   # [NT, BT]
        dq = dq * (torch.exp2(gc)[..., None] * scale)
        decay_k = torch.where(in_t.view(1, NT, 1, BT), torch.exp2(g_last[..., None] - gc), 0)
        dk = dk * decay_k[..., None]
        # the kernel's m_A: causal and both rows inside T (padded rows' gates are 0, not g_last)
        m_A = causal & in_t.view(1, NT, 1, BT, 1) & in_t.view(1, NT, 1, 1, BT)
        diff = gc[..., :, None] - gc[..., None, :]
        ds = ds * torch.exp2(torch.where(m_A, diff, float("-inf"))) * scale
        if g is not None:
            # the state's decay exp2(g_last): h_next = exp2(g_last) h + ..., so d/dg_last picks up
            # <h, dh> exp2(g_last) and the inter-chunk part of dk . k (computed before ds is added)
            dg_last = (h * dh).sum((-1, -2)) * torch.exp2(g_last) + (dk * kc).sum((-1, -2))
        dq = dq + ds @ kc
        dk = dk + ds.transpose(-1, -2) @ qc
        if g is not None:
            dg = (dq * qc).sum(-1) - (dk * kc).sum(-1)             # [B, NT, HV, BT]
            last = torch.zeros(NT, BT, dtype=acc, device=dev)
            last[rows, n_valid - 1] = 1
            dg = dg + dg_last[..., None] * last.view(1, NT, 1, BT)
    else:
        ds = ds.masked_fill(~causal, 0)
        dq = (dq + ds @ kc) * scale
        dk = dk + (ds.transpose(-1, -2) @ qc) * scale

    def unchunk(x):  # [B, NT, N, BT, D] -> [B, T, N, D], contiguous as fla's outputs (its callers .view them)
        return x.transpose(2, 3).reshape(B, NT * BT, *x.shape[2:3], x.shape[-1])[:, :T].contiguous()

    dq, dk = unchunk(dq), unchunk(dk)
    if HV != H:
        dq = dq.view(B, T, H, HV // H, K).sum(3)
        dk = dk.view(B, T, H, HV // H, K).sum(3)
    if dw is not None:
        dw = unchunk(dw)
    if dg is not None:
        dg = unchunk(dg[..., None])[..., 0].float().contiguous()
    return dq, dk, dw, dg
