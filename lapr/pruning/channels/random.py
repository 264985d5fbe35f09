"""Random channel selection: the baseline every score must beat.

Head h uses its own torch.Generator seeded with ctx.seed + h, so the choice for one head does
not depend on how many heads precede it.
"""

from __future__ import annotations

import torch

from lapr.pruning.channels import ChannelContext, register


@register("random", requires=(),
          order=10, color="#7f7f7f", marker="o", label="Random")
def select_random(ctx: ChannelContext, keep: int) -> torch.Tensor:
    rows = []
    for head in range(ctx.heads):
        gen = torch.Generator().manual_seed(ctx.seed + head)
        rows.append(torch.randperm(ctx.d_k, generator=gen)[:keep].sort().values)
    return torch.stack(rows)
