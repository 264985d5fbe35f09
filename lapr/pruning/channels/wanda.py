"""Wanda-style selection (Sun et al. 2024), aggregated over a whole output row.

score_c = sum_j |W_q[h, c, j]| * rms_j + sum_j |W_k[h, c, j]| * rms_j, with rms_j the RMS of
input feature j over calibration tokens. q_proj and k_proj read the same normalised hidden
states, so one input_rms serves both.
"""

from __future__ import annotations

import torch

from lapr.pruning.channels import ChannelContext, register, top_channels


@register("wanda", requires=("input_rms",),
          order=40, color="#d62728", marker="^", label="Wanda")
def select_wanda(ctx: ChannelContext, keep: int) -> torch.Tensor:
    ctx.require("wanda", "input_rms")
    scores = (ctx.q_weight.abs() + ctx.k_weight.abs()) @ ctx.input_rms
    return top_channels(scores, keep)
