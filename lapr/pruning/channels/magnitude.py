"""Weight-magnitude selection: score_c = ||q_weight[h, c, :]||_p + ||k_weight[h, c, :]||_p.

q and k rows of one channel are removed together, so their norms are summed. p = 1 (`l1`) or
p = 2 (`l2`).
"""

from __future__ import annotations

import torch

from lapr.pruning.channels import ChannelContext, register, top_channels


def row_norm_scores(ctx: ChannelContext, p: int) -> torch.Tensor:
    """[H, d_k] summed q and k row p-norms."""
    return (torch.linalg.vector_norm(ctx.q_weight, ord=p, dim=-1)
            + torch.linalg.vector_norm(ctx.k_weight, ord=p, dim=-1))


@register("l1", requires=(),
          order=20, color="#1f77b4", marker="s", label="L1")
def select_l1(ctx: ChannelContext, keep: int) -> torch.Tensor:
    return top_channels(row_norm_scores(ctx, 1), keep)


@register("l2", requires=(),
          order=30, color="#17becf", marker="d", label="L2")
def select_l2(ctx: ChannelContext, keep: int) -> torch.Tensor:
    return top_channels(row_norm_scores(ctx, 2), keep)
