"""DeltaNet (fla.layers.DeltaNet): key dim = hidden_size * expand_k, split evenly over heads."""
from __future__ import annotations

import copy
import math

import torch
from fla.layers.delta_net import DeltaNet
from fla.models.delta_net import DeltaNetConfig  # the family package registers it with transformers

from lapr.models.base import ExpandFamily

# attention parameters by head (DeltaNet and Gated DeltaNet): name -> (unit, axis), see Family.head_params
DELTA_HEAD_PARAMS = {
    "q_proj": ("k", 0), "k_proj": ("k", 0), "q_conv1d": ("k", 0), "k_conv1d": ("k", 0),
    "v_proj": ("v", 0), "v_conv1d": ("v", 0), "g_proj": ("v", 0), "o_proj": ("v", 1),
    "b_proj": ("h", 0), "a_proj": ("h", 0), "A_log": ("h", 0), "dt_bias": ("h", 0),
}


class DeltaNetFamily(ExpandFamily):
    expand_k_default = 1.0  # DeltaNetConfig's
    model_type = "delta_net"
    display_name = "DeltaNet"
    color = "#1b9e77"
    aliases = ("deltanet", "delta_net")
    layer_cls = DeltaNet

    gate_names = ("b_proj", "g_proj")
    fla_state_pass = (("fla.ops.delta_rule.chunk", "chunk_gated_delta_rule_fwd_h"),)
    head_params = DELTA_HEAD_PARAMS
    shared_params = ("o_norm",)

    def resized_config(self, config, head_k_dim):
        # expand_v stays: values (and the state's d_v) are untouched by q/k pruning
        new = copy.deepcopy(config)
        new.expand_k = head_k_dim * config.num_heads / config.hidden_size
        key_dim = round(new.hidden_size * new.expand_k)
        if not math.isclose(new.hidden_size * new.expand_k, key_dim) or key_dim // new.num_heads != head_k_dim:
            raise RuntimeError(f"resized DeltaNet config gives key dim {new.hidden_size * new.expand_k}, "
                               f"expected {head_k_dim * new.num_heads}")
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

    def cpu_ops(self):
        from lapr.backends.delta_rule import delta_rule
        return {("fla.layers.delta_net", "chunk_delta_rule"): delta_rule,
                ("fla.layers.delta_net", "fused_recurrent_delta_rule"): delta_rule}

    def state_op(self):
        from lapr.backends.delta_rule import delta_rule
        return delta_rule

    def op_inputs(self, B, T, H, K, V, g, device, dtype, randn):
        # post-sigmoid beta in (0, 1), as the layer passes it
        return {"beta": torch.rand(B, T, H, generator=g, device=device).clamp_min(1e-3).to(dtype)}

    def op_kernel(self, phase, impl):
        if impl == "torch":
            from lapr.backends.delta_rule import delta_rule as base
        else:
            from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
            base = chunk_delta_rule if phase == "prefill" else fused_recurrent_delta_rule

        def fn(q, k, v, beta, initial_state=None):
            return base(q=q, k=k, v=v, beta=beta, initial_state=initial_state,
                        output_final_state=True, use_qk_l2norm_in_kernel=True)
        return fn
