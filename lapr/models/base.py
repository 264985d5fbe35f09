"""What pruning and profiling need to know about one linear-attention layer, family-independent."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class AttentionView:
    """Handles on one attention layer. q/k rows are grouped per head: rows h*d_k .. (h+1)*d_k."""

    index: int
    module: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    q_conv: nn.Module | None
    k_conv: nn.Module | None
    v_conv: nn.Module | None
    num_heads: int          # q/k heads
    num_v_heads: int        # value heads (> num_heads under grouped value attention)
    head_k_dim: int
    head_v_dim: int
    gates: dict             # family-specific gate parameters/modules (beta, decay, output gate)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """Recurrent state per sequence: one d_k x d_v matrix per value head."""
        return (self.num_v_heads, self.head_k_dim, self.head_v_dim)

    def state_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        h, k, v = self.state_shape
        return h * k * v * torch.empty((), dtype=dtype).element_size()


class Family:
    """One model family: how to find its attention layers, read their states, and resize d_k."""

    model_type: str = ""
    layer_cls: type | None = None

    def attention(self, model: nn.Module) -> list[AttentionView]:
        return [self.view(i, m) for i, m in enumerate(m for m in model.modules() if isinstance(m, self.layer_cls))]

    gate_names: tuple[str, ...] = ()  # the layer's gate / step-size modules and parameters

    def view(self, index: int, layer: nn.Module) -> AttentionView:
        """The view of an fla layer with the usual attribute names (q_proj, q_conv1d, ...)."""
        conv = layer.use_short_conv
        return AttentionView(
            index=index, module=layer, q_proj=layer.q_proj, k_proj=layer.k_proj, v_proj=layer.v_proj,
            o_proj=layer.o_proj, q_conv=layer.q_conv1d if conv else None,
            k_conv=layer.k_conv1d if conv else None, v_conv=layer.v_conv1d if conv else None,
            num_heads=layer.num_heads, num_v_heads=getattr(layer, "num_v_heads", layer.num_heads),
            head_k_dim=layer.head_k_dim, head_v_dim=layer.head_v_dim,
            gates={name: getattr(layer, name, None) for name in self.gate_names},
        )

    def state_from_cache(self, layer_state: dict) -> torch.Tensor:
        """Recurrent state [B, HV, d_k, d_v] from the layer's entry in fla's cache."""
        return layer_state["recurrent_state"]

    def resized_config(self, config, head_k_dim: int):
        """A copy of `config` whose attention layers have key dim `head_k_dim` and unchanged values."""
        raise NotImplementedError

    def config_from_spec(self, spec: dict):
        raise NotImplementedError
