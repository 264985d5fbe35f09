"""PCA of keys: a per-head rotation to `keep` channels, not a channel selection. Two definitions.

`pca` (paper A's baseline, as LAP's code computes it). camail-official/LinearAttentionPruning,
src/key_reduction/pruners/pca.py: `collect_layer_statistics` (l. 213-261) hooks each attention
layer, recomputes q/k = short conv (+ its SiLU) of the projections and applies fla's `l2_norm`
per head (l. 235-236), then accumulates k_sum and k_outer over every calibration token;
`compute_pca_projection` (l. 42-129) forms the MEAN-CENTRED covariance
(k_outer - n mu mu^T) / (n - 1) (l. 75-77), takes `torch.linalg.eigh` and keeps the top
eigenvectors in descending eigenvalue order (l. 81-87, 120); `main` (l. 313-319) uses the keys
only unless --include_queries is given, which scripts/run_pruning/run_pca.sh (l. 42-51) does not
pass. So here: U [H, d_k, keep] = top-`keep` eigenvectors of ctx.k_norm_cov, the centred
covariance of the L2-normalised keys over all calibration tokens that lapr.profiling.calibrate
accumulates. LAP does not turn the subspace into a choice of channels: its T = U^T is absorbed
into q_proj and k_proj (`absorb_and_compress_deltanet_nonshared`, l. 169-211, with the q/k conv
kernels mixed by T**2, l. 203), which is what lapr.pruning.surgery does with any rotation basis.

`pca_qk` (lapr's earlier definition, reported beside `pca`). U = top-`keep` eigenvectors of the
per-head UNCENTRED second moment X^T X / rows of the stacked post-conv, PRE-L2-norm activations
X = [q_act[h]; k_act[h]] (the subsampled calibration rows). Differences from `pca`: it also
uses the queries; it weighs tokens by their pre-norm length (`pca` gives each token one unit
vector); and it keeps the mean direction, which the centred covariance removes (so a large,
shared mean key pulls `pca_qk`'s top direction towards it, while `pca` ignores it). Argument
for pca_qk: the layer has no bias that could carry a mean back in, and q.k uses the mean
direction like any other.

Both: q and k share one basis per head, so q.k ~ (U^T q).(U^T k) keeps the directions both
use; eigenvector signs are fixed (largest-magnitude entry positive; LAP leaves eigh's signs,
which changes nothing: a column's sign cancels in q.k, in the L2 norm and in the T**2 kernel
mix) so the basis is deterministic. The L2 norm inside the layer is then taken over U^T q, as it
is taken over the surviving channels when channels are dropped.

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

from lapr.pruning.channels import ChannelContext, register


def _check_keep(ctx: ChannelContext, keep: int) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= ctx.d_k:
        raise ValueError(f"keep must be an int in [1, d_k={ctx.d_k}]; got {keep!r}")


def top_eigenvectors(matrix: torch.Tensor, keep: int) -> torch.Tensor:
    """[H, d, d] symmetric -> [H, d, keep] float32 eigenvectors, descending eigenvalues, signs
    fixed (largest-magnitude entry positive)."""
    _, vectors = torch.linalg.eigh(matrix.double())              # ascending eigenvalues
    top = vectors.flip(-1)[..., :keep]
    peak = top.abs().argmax(dim=-2, keepdim=True)
    top = top * torch.sign(top.gather(-2, peak))
    return top.float()


@register("pca", requires=("k_norm_cov",), rotation=True,
          order=60, color="#8c564b", marker="P", label="PCA (LAP)")
def pca_basis(ctx: ChannelContext, keep: int) -> torch.Tensor:
    """`pca` (LAP): [H, d_k, keep] top eigenvectors of the centred covariance of L2-normalised keys."""
    ctx.require("pca", "k_norm_cov")
    _check_keep(ctx, keep)
    return top_eigenvectors(ctx.k_norm_cov, keep)


@register("pca_qk", requires=("q_act", "k_act"), rotation=True,
          order=70, color="#e377c2", marker="X", label="PCA (q/k)")
def pca_qk_basis(ctx: ChannelContext, keep: int) -> torch.Tensor:
    """`pca_qk`: [H, d_k, keep] top eigenvectors of the uncentred second moment of [q_act; k_act]."""
    ctx.require("pca_qk", "q_act", "k_act")
    _check_keep(ctx, keep)
    stacked = torch.cat([ctx.q_act, ctx.k_act], dim=1).double()  # [H, rows, d_k]
    return top_eigenvectors(stacked.mT @ stacked / stacked.shape[1], keep)
