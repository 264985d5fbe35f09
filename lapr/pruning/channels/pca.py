"""PCA of q/k activations: a per-head rotation to `keep` channels, not a channel selection.

`pca_basis(ctx, keep)` returns U [H, d_k, keep] with orthonormal columns: the top-`keep`
eigenvectors of the per-head second-moment matrix C_h = X^T X / rows of the stacked
post-conv, pre-L2-norm activations X = [q_act[h]; k_act[h]]. q and k share one basis so that
q.k ~ (U^T q).(U^T k) keeps the directions both use. C_h is *not* mean-centred: the layer has
no bias that could carry a mean back in, and the mean direction contributes to q.k like any
other, so the uncentred moment is the one whose top subspace loses the least of X. Eigenvector
signs are fixed (largest-magnitude entry positive) so the basis is deterministic. The L2 norm
inside the layer is then taken over U^T q, as it is taken over the surviving channels when
channels are dropped.

Short-conv caveat (lapr.pruning.surgery uses (a) with a U^2-weighted kernel; see
its module doc). The layer computes
    q = l2norm(act(conv_q(W_q x))),   conv_q depthwise (one kernel per channel), act = SiLU in fla.
A rotation mixes channels, so it does not commute with a per-channel conv (nor with SiLU):
conv(U^T W_q x) != U^T conv(W_q x) unless all kernels are equal and act is the identity.
Two ways to use U:
  (a) rotate the projection, W_q' = U^T W_q (keep x D), and drop the conv (or give the keep new
      channels some shared/refit kernel): structurally smaller in proj *and* conv, but exact
      only if a head's kernels are all equal and the conv has no activation; otherwise an
      approximation whose error must be measured.
  (b) keep W_q and the d_k-channel conv per original channel and apply U^T after conv+act,
      before the L2 norm: exact on the kept subspace and the state is still keep x d_v, but
      q/k proj and conv are not smaller (one extra keep x d_k map per head).
The same holds for k. Channel *selection* (METHODS) has no such issue: dropping a channel
commutes with a per-channel conv.
"""

from __future__ import annotations

import torch

from lapr.pruning.channels import ChannelContext


def pca_basis(ctx: ChannelContext, keep: int) -> torch.Tensor:
    """[H, d_k, keep] float32, orthonormal columns, descending eigenvalue order."""
    ctx.require("pca", "q_act", "k_act")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= ctx.d_k:
        raise ValueError(f"keep must be an int in [1, d_k={ctx.d_k}]; got {keep!r}")
    stacked = torch.cat([ctx.q_act, ctx.k_act], dim=1).double()  # [H, rows, d_k]
    moment = stacked.mT @ stacked / stacked.shape[1]
    _, vectors = torch.linalg.eigh(moment)                       # ascending eigenvalues
    top = vectors.flip(-1)[..., :keep]
    peak = top.abs().argmax(dim=-2, keepdim=True)
    top = top * torch.sign(top.gather(-2, peak))
    return top.float()
