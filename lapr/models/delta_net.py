"""DeltaNet (fla.layers.DeltaNet): key dim = hidden_size * expand_k, split evenly over heads."""
from __future__ import annotations

import copy

from fla.layers.delta_net import DeltaNet
from fla.models.delta_net import DeltaNetConfig  # the family package registers it with transformers

from lapr.models.base import Family


class DeltaNetFamily(Family):
    model_type = "delta_net"
    layer_cls = DeltaNet

    gate_names = ("b_proj", "g_proj")

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
