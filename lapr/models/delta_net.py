"""DeltaNet (fla.layers.DeltaNet): key dim = hidden_size * expand_k, split evenly over heads."""
from __future__ import annotations

import copy

from fla.layers.delta_net import DeltaNet
from fla.models import DeltaNetConfig

from lapr.models.base import AttentionView, Family


class DeltaNetFamily(Family):
    model_type = "delta_net"
    layer_cls = DeltaNet

    def view(self, index, layer):
        conv = layer.use_short_conv
        return AttentionView(
            index=index, module=layer, q_proj=layer.q_proj, k_proj=layer.k_proj, v_proj=layer.v_proj,
            o_proj=layer.o_proj, q_conv=layer.q_conv1d if conv else None,
            k_conv=layer.k_conv1d if conv else None, v_conv=layer.v_conv1d if conv else None,
            num_heads=layer.num_heads, num_v_heads=layer.num_heads,
            head_k_dim=layer.head_k_dim, head_v_dim=layer.head_v_dim,
            gates={"b_proj": getattr(layer, "b_proj", None), "g_proj": getattr(layer, "g_proj", None)},
        )

    def resized_config(self, config, head_k_dim):
        # expand_v stays: values (and the state's d_v) are untouched by q/k pruning
        new = copy.deepcopy(config)
        new.expand_k = head_k_dim * config.num_heads / config.hidden_size
        return new

    def config_from_spec(self, spec):
        hidden, heads = spec["hidden_size"], spec["num_heads"]
        return DeltaNetConfig(
            hidden_size=hidden, num_hidden_layers=spec["num_layers"], num_heads=heads,
            expand_k=spec["head_k_dim"] * heads / hidden, expand_v=spec["head_v_dim"] * heads / hidden,
            vocab_size=spec["vocab_size"], use_gate=spec.get("use_gate", False),
            hidden_ratio=spec.get("mlp_ratio", 4), max_position_embeddings=spec.get("max_length", 2048),
            fuse_cross_entropy=False, tie_word_embeddings=spec.get("tie_embeddings", True),
        )
