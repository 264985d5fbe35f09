"""First-order Taylor selection, LLM-Pruner style (Ma et al. 2023, element-wise importance).

score_c = sum_j |W_q ⊙ dL/dW_q|[h, c, j] + sum_j |W_k ⊙ dL/dW_k|[h, c, j]: the first-order
estimate of the loss change from zeroing each weight, summed over the channel's q and k rows.
Gradients are accumulated over calibration batches by the caller.
"""

from __future__ import annotations

import torch

from lapr.pruning.channels import ChannelContext, register, top_channels


@register("taylor", requires=("q_grad", "k_grad"),
          order=50, color="#9467bd", marker="v", label="Taylor")
def select_taylor(ctx: ChannelContext, keep: int) -> torch.Tensor:
    ctx.require("taylor", "q_grad", "k_grad")
    scores = ((ctx.q_weight * ctx.q_grad).abs().sum(-1)
              + (ctx.k_weight * ctx.k_grad).abs().sum(-1))
    return top_channels(scores, keep)
