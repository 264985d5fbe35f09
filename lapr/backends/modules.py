"""Pure-PyTorch stand-ins for fla's fused Triton modules (norms, short conv, SwiGLU, cross-entropy).

Each function keeps the signature of the fla function it replaces, so `lapr.backends.use_cpu_backend`
can rebind it where fla looks it up. Numerics follow fla's kernels: statistics in float32,
output in the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, weight, bias=None, residual=None, eps=1e-5, prenorm=False, residual_in_fp32=False, **unused):
    """fla.modules.norm.layernorm.rms_norm: optional residual add, then RMS norm."""
    dtype = x.dtype
    if residual is not None:
        x = x.float() + residual.float()
        residual_out = x.to(torch.float32 if residual_in_fp32 else residual.dtype)
    else:
        residual_out = x.float() if residual_in_fp32 else x
    xf = x.float()
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    y = y.to(dtype)
    return (y, residual_out) if prenorm else y


def rms_norm_gated(x, g, weight, bias=None, activation="swish", residual=None, prenorm=False,
                   residual_in_fp32=False, eps=1e-5, **unused):
    """fla.modules.norm.fused_norm_gate.rms_norm_gated: RMS norm, then a swish or sigmoid output gate."""
    out = rms_norm(x, weight, bias, residual, eps, prenorm, residual_in_fp32)
    y, res = out if prenorm else (out, None)
    gf = g.float()
    gate = gf * gf.sigmoid() if activation in ("swish", "silu") else gf.sigmoid()
    y = (y.float() * gate).to(x.dtype)
    return (y, res) if prenorm else y


def short_conv(x, weight, bias=None, residual=None, initial_state=None, output_final_state=False,
               activation=None, cu_seqlens=None, **unused):
    """fla's causal_conv1d: depthwise causal conv over time. x [B, T, D], weight [D, W].

    The cache (initial/final state) holds the last W inputs, newest last ([N, D, W]), as in fla.
    """
    if cu_seqlens is not None:
        bounds = cu_seqlens.tolist()
        ys, states = [], []
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = None if initial_state is None else initial_state[i : i + 1]
            y, st = short_conv(x[:, s:e], weight, bias, None if residual is None else residual[:, s:e],
                               h0, output_final_state, activation)
            ys.append(y)
            states.append(st)
        return torch.cat(ys, 1), (torch.cat(states, 0) if output_final_state else None)
    B, T, D = x.shape
    W = weight.shape[-1]
    xt = x.transpose(1, 2)                                           # [B, D, T]
    prev = xt.new_zeros(B, D, W - 1) if initial_state is None else initial_state[..., 1:].to(xt)
    full = torch.cat([prev, xt], -1)                                 # [B, D, W - 1 + T]
    y = F.conv1d(full.float(), weight.float().unsqueeze(1), None if bias is None else bias.float(), groups=D)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    y = y.transpose(1, 2).to(x.dtype)
    if residual is not None:
        y = y + residual
    final = full[..., -W:].contiguous() if output_final_state else None
    return y, final


def short_conv_forward(self, x, residual=None, mask=None, cache=None, output_final_state=False,
                       cu_seqlens=None, **unused):
    """Replacement for ShortConvolution.forward; a decode step updates `cache` in place as fla does."""
    if mask is not None:
        x = x * mask.unsqueeze(-1)
    y, final = short_conv(x, self.weight.squeeze(1), self.bias, residual, cache,
                          output_final_state or cache is not None, self.activation, cu_seqlens)
    if cache is not None and not torch.is_grad_enabled():
        cache.copy_(final)
        final = cache
    return y, (final if output_final_state else None)


def swiglu(x, y):
    return F.silu(x.float()).to(x.dtype) * y


def swiglu_linear(x, y, weight, bias=None):
    return F.linear(swiglu(x, y), weight, bias)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Accepts fla's FusedCrossEntropyLoss arguments; plain PyTorch cross-entropy."""

    def __init__(self, ignore_index=-100, reduction="mean", label_smoothing=0.0, **unused):
        super().__init__(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)

    def forward(self, input, target):
        return super().forward(input.float(), target)


class LinearCrossEntropyLoss(nn.Module):
    """Accepts fla's FusedLinearCrossEntropyLoss call (hidden, labels, weight, bias)."""

    def __init__(self, ignore_index=-100, reduction="mean", label_smoothing=0.0, **unused):
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, x, target, weight, bias=None):
        logits = F.linear(x, weight, bias).float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)
